"""The leader's half of the core: replication, commit, snapshots to followers, ReadIndex.

A mixin of ``RaftCore`` (kept apart so each file reads in one sitting); it uses the core's
state: ``log``, ``progress``, ``membership``, ``term``, the outboxes.
"""
from __future__ import annotations

from . import messages as m
from .progress import Progress, ProgressState
from .quorum import majority, quorum_index
from .storage import Compacted, SnapshotUnavailable, Unavailable
from .types import NONE, Entry, NodeId, NotLeader, ProposalDropped, ReadState, Role


class _PendingRead:
    __slots__ = ("context", "index", "round", "acks")

    def __init__(self, context: bytes, index: int, round_: int) -> None:
        self.context = context
        self.index = index
        #: the heartbeat round that confirms it: only acks of this round or a later one count
        self.round = round_
        self.acks: set[NodeId] = set()



class LeaderRole:
    def _step_leader(self, msg: m.Message) -> None:
        pr = self.progress.get(msg.frm)
        if pr is None:
            return
        last = self.log.last_index()
        if (isinstance(msg, m.AppendResponse) and msg.index > last) or (
            isinstance(msg, m.SnapshotResponse) and msg.done and msg.snapshot_index > last
        ):
            return  # an ack for entries we never sent: a confused peer must not move commit
        if isinstance(msg, (m.AppendResponse, m.HeartbeatResponse, m.SnapshotResponse)):
            pr.recent_active = True
            pr.ticks_since_contact = 0
        if isinstance(msg, m.AppendResponse):
            self._handle_append_response(msg, pr)
        elif isinstance(msg, m.HeartbeatResponse):
            self._handle_heartbeat_response(msg, pr)
        elif isinstance(msg, m.SnapshotResponse):
            self._handle_snapshot_response(msg, pr)


    def _check_can_propose(self) -> None:
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader)
        if self.lead_transferee:
            raise ProposalDropped(f"leadership transfer to {self.lead_transferee} is in progress")
        if self.id not in self.membership.members:
            raise ProposalDropped("this leader is being removed from the cluster")

    def _committed_in_current_term(self) -> bool:
        return self.log.term_or_none(self.log.committed) == self.term

    def _append_as_leader(self, entries: list[Entry]) -> None:
        self.log.append(entries)
        self._on_log_appended(entries, 0)
        if self.role is not Role.LEADER:
            return
        self._maybe_commit()
        self._broadcast_append()

    def _on_own_entries_persisted(self) -> None:
        """The leader counts its own copy only once it is durable: that lets the runtime send
        appends to followers while the leader's own fsync runs (Ready.send_before_persist)."""
        own = self.progress.get(self.id)
        if own is not None:
            own.maybe_update(self.log.persisted_index())
        if self._maybe_commit():
            self._broadcast_append()

    def _maybe_commit(self) -> bool:
        voters = self.membership.voters
        # A follower recovering lost entries is not counted: it may lack ones it acknowledged.
        matches = sorted(
            (self.progress[n].match if n in self.progress and not self.progress[n].lost_to else 0)
            for n in voters if n != self.id
        )
        if self.id in voters:
            # Invariant: only durable entries count, ours included.
            matches.append(self.log.persisted_index())
            matches.sort()
        if not matches:
            return False
        quorum_match = quorum_index(matches)
        # Only an entry of the current term is committed by counting replicas (§5.4.2).
        if not self.log.maybe_commit(quorum_match, self.term):
            return False
        self._on_commit_advanced()
        return True

    def _on_commit_advanced(self) -> None:
        if self._reads_before_commit and self._committed_in_current_term():
            waiting, self._reads_before_commit = self._reads_before_commit, []
            for context in waiting:
                self._start_read(context)
        if self._configs[-1][0] <= self.log.committed:
            removed = [n for n in self.progress if n not in self.membership.members and n != self.id]
            if removed:
                # Members the committed configuration drops got entries until now, so they
                # learn of their removal; tell them it committed, then stop replicating.
                self._broadcast_append()
                for node in removed:
                    del self.progress[node]
        if self.id not in self.membership.voters and self._configs[-1][0] <= self.log.committed:
            # Our removal (or demotion) is committed: stop leading. Followers learn the commit
            # from this last broadcast, then elect a leader among the remaining voters.
            self._broadcast_append()
            self._become_follower(self.term, NONE)

    def _broadcast_append(self) -> None:
        if self.role is not Role.LEADER:
            return
        for node in self.progress:
            if node != self.id:
                self._send_append(node)

    def _send_append(self, to: NodeId, send_if_empty: bool = True) -> bool:
        pr = self.progress[to]
        if pr.is_paused():
            return False
        prev_index = pr.next - 1
        try:
            prev_term = self.log.term(prev_index)
            hi = min(self.log.last_index() + 1, pr.next + self.config.max_entries_per_msg)
            entries = self.log.slice(pr.next, hi, self.config.max_bytes_per_msg)
        except Compacted:
            return self._send_snapshot(to, pr)
        except Unavailable:
            pr.become_probe()  # next ran ahead of our log (after truncation): probe again
            return False
        if not entries and not send_if_empty:
            return False
        if entries:
            pr.sent_entries(entries[-1].index)
            pr.bytes_sent += sum(len(e.data) for e in entries)
        elif pr.state is ProgressState.PROBE:
            pr.probe_sent = True
        self._send(m.AppendEntries(
            self.term, self.id, to, prev_index, prev_term, tuple(entries), self.log.committed, self.lead_transferee,
            self.log.last_index() if pr.lost_to else 0,
        ))
        return True

    def _send_snapshot(self, to: NodeId, pr: Progress) -> bool:
        if not pr.recent_active:
            return False  # don't stream a snapshot at a peer that may be down
        meta = self.log.storage.snapshot_meta()
        pr.become_snapshot(meta.index)
        return self._send_snapshot_chunk(to, pr)

    def _send_snapshot_chunk(self, to: NodeId, pr: Progress) -> bool:
        size = self.config.snapshot_chunk_size
        try:
            data = self.log.storage.snapshot_chunk(pr.pending_snapshot, pr.snapshot_offset, size)
        except SnapshotUnavailable:
            meta = self.log.storage.snapshot_meta()
            pr.become_snapshot(meta.index)
            data = self.log.storage.snapshot_chunk(meta.index, 0, size)
        meta = self.log.storage.snapshot_meta()
        pr.snapshot_ticks = 0
        pr.bytes_sent += len(data)
        done = len(data) < size
        self._send(m.InstallSnapshot(self.term, self.id, to, meta, pr.snapshot_offset, data, done))
        return True

    def _note_lost(self, pr: Progress, lost: int, holds: int | None) -> bool:
        """The follower says it lost entries up to ``lost`` on disk and holds ``holds`` (None:
        not said). Forget any higher match — a rejection below the match is then no longer
        stale news but the truth. True if it must be probed anew."""
        first_notice = not pr.lost_to
        pr.lost_to = lost
        if holds is None:
            if first_notice:
                pr.become_probe()  # the probe's answer says what it holds
            return first_notice
        if holds < pr.match:
            pr.match = holds
            pr.become_probe()
            return True
        return False

    def _note_recovered(self, pr: Progress) -> None:
        pr.lost_to = 0  # it answered without the flag: it holds what it lost again
        if self._maybe_commit():
            self._broadcast_append()

    def _handle_append_response(self, msg: m.AppendResponse, pr: Progress) -> None:
        if msg.lost:
            # On a rejection the hint is at most the follower's last index.
            if self._note_lost(pr, msg.lost, msg.hint_index if msg.reject else msg.index) and msg.reject:
                self._send_append(msg.frm)
                return
        elif pr.lost_to:
            self._note_recovered(pr)
        if msg.reject:
            pr.rejected_append()
            next_probe = msg.hint_index
            if msg.hint_term > 0:
                next_probe = self.log.find_conflict_by_term(msg.hint_index, msg.hint_term)
            if pr.maybe_decrease_to(msg.index, next_probe):
                if pr.state is ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_append(msg.frm)
            return
        was_paused = pr.is_paused()
        updated = pr.maybe_update(msg.index)
        # A probe answered at exactly the known match (e.g. right after a snapshot) also
        # proves where the logs agree: leave PROBE, or the follower waits a heartbeat.
        if not updated and not (pr.match == msg.index and pr.state is ProgressState.PROBE):
            return
        if pr.state is ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state is ProgressState.SNAPSHOT and pr.match >= pr.pending_snapshot:
            pr.become_probe()
            pr.become_replicate()
        elif pr.state is ProgressState.REPLICATE:
            pr.free_inflights_to(msg.index)
        if self._maybe_commit():
            self._broadcast_append()
        elif was_paused:
            self._send_append(msg.frm)
        if self.role is not Role.LEADER:
            return
        while self._send_append(msg.frm, send_if_empty=False):
            pass  # fill the pipeline window
        if msg.frm == self.lead_transferee and pr.match == self.log.last_index():
            self._send(m.TimeoutNow(self.term, self.id, msg.frm))

    def _handle_heartbeat_response(self, msg: m.HeartbeatResponse, pr: Progress) -> None:
        pr.probe_sent = False
        if msg.lost:
            if self._note_lost(pr, msg.lost, None):
                self._send_append(msg.frm)  # even when idle: the answer says what it holds
                if msg.context:
                    self._ack_read(msg.context, msg.frm)
                return
        elif pr.lost_to:
            self._note_recovered(pr)
        if pr.state is ProgressState.REPLICATE and pr.is_paused():
            pr.free_first_inflight()
        if pr.state is ProgressState.SNAPSHOT:
            if pr.snapshot_ticks >= 2 * self.config.heartbeat_tick:
                self._send_snapshot_chunk(msg.frm, pr)  # the last chunk or its ack was lost
        elif pr.match < self.log.last_index():
            self._send_append(msg.frm)
        if msg.context:
            self._ack_read(msg.context, msg.frm)

    def _handle_snapshot_response(self, msg: m.SnapshotResponse, pr: Progress) -> None:
        if msg.done:
            pr.maybe_update(msg.snapshot_index)
            if pr.state is ProgressState.SNAPSHOT:
                pr.become_probe()
            self._send_append(msg.frm)
            return
        if pr.state is not ProgressState.SNAPSHOT or msg.snapshot_index != pr.pending_snapshot:
            return
        if msg.reject or msg.offset > pr.snapshot_offset:
            pr.snapshot_offset = msg.offset
            self._send_snapshot_chunk(msg.frm, pr)

    def _broadcast_heartbeat(self, context: bytes) -> None:
        for node, pr in self.progress.items():
            if node != self.id:
                commit = min(pr.match, self.log.committed)
                self._send(m.Heartbeat(self.term, self.id, node, commit, context, self.lead_transferee))

    def _round_context(self) -> bytes:
        self._read_round += 1
        return self._read_round.to_bytes(8, "big")

    def _start_read(self, context: bytes) -> None:
        voters = self.membership.voters
        if voters == {self.id}:
            self._read_states.append(ReadState(context, self.log.committed))
            return
        round_context = self._round_context()
        read = _PendingRead(context, self.log.committed, self._read_round)
        if self.id in voters:
            read.acks.add(self.id)
        self._pending_reads.append(read)
        self._broadcast_heartbeat(round_context)

    def _ack_read(self, round_context: bytes, frm: NodeId) -> None:
        voters = self.membership.voters
        if frm not in voters or len(round_context) != 8:
            return
        acked_round = int.from_bytes(round_context, "big")
        confirmed = -1
        for n, read in enumerate(self._pending_reads):
            if read.round > acked_round:
                break  # registered after that heartbeat went out: it proves nothing for them
            read.acks.add(frm)
            if len(read.acks & voters) >= majority(len(voters)):
                confirmed = n
        if confirmed >= 0:
            # Confirming a read confirms every earlier one too.
            done, self._pending_reads = self._pending_reads[: confirmed + 1], self._pending_reads[confirmed + 1 :]
            self._read_states.extend(ReadState(r.context, r.index) for r in done)

