"""The Raft core: a deterministic state machine in the manner of etcd-io/raft.

Inputs: ``tick()``, ``step(message)``, and the client/operator calls (``propose``,
``propose_change``, ``transfer_leadership``, ``read_index``, ``campaign``).
Output: ``ready()`` returns one batch of work (see ``Ready`` for the contract); the caller
persists, sends, applies, then calls ``advance(ready)``.

No clock, no I/O, no global state: time is ticks, randomness is the injected ``rng``.
Role behaviour is dispatched through ``self._step_role`` (one step function per role).
A follower reassembles snapshot chunks here, in bounded memory: ``_handle_snapshot_chunk``
says why that protocol state belongs to the core.
"""
from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import messages as m
from .config import RaftConfig
from .leader import LeaderRole, _PendingRead
from .log import InvariantViolation, RaftLog
from .quorum import majority
from .validation import changed_membership, well_formed
from .progress import Progress, ProgressState
from .storage import LogStorage
from .types import (
    NONE,
    ConfigChange,
    ConfigChangeRefused,
    Entry,
    EntryType,
    HardState,
    Membership,
    NodeId,
    NotLeader,
    Ready,
    ReadState,
    Role,
    Snapshot,
    SnapshotMeta,
    TransferRefused,
)

if TYPE_CHECKING:  # the core only ever uses the Random instance it is given
    import random


def bootstrap_state(membership: Membership) -> tuple[HardState, list[Entry]]:
    """What every initial member of a new cluster persists before its first start.

    All of them hold the same configuration entry at index 1, term 1, already committed.
    """
    if not membership.voters:
        raise ValueError("a new cluster needs at least one voter")
    entry = Entry(term=1, index=1, type=EntryType.CONFIG, data=membership.encode())
    return HardState(term=1, vote=NONE, commit=1), [entry]


def _configs_needed(storage: LogStorage, committed: int) -> list[Entry]:
    """The configuration entries the history must start with: the newest at or below
    ``committed`` and every one above it, read one by one — never the whole log.

    Older ones can never be in force again: a configuration is in force once appended, and
    only a truncation brings back an older one, which never reaches below the commit index.
    (A stale persisted commit index only makes this keep a few more.)"""
    indexes = storage.config_indexes()
    start = max(bisect_right(indexes, committed) - 1, 0)
    return [storage.entries(index, index + 1)[0] for index in indexes[start:]]


@dataclass(frozen=True, slots=True)
class PeerStatus:
    id: NodeId
    match: int
    next: int
    state: str
    learner: bool
    recent_active: bool
    ticks_since_contact: int | None
    bytes_sent: int
    inflight: int
    #: Non-zero while the peer reports it is recovering entries it lost (not counted toward
    #: commitment meanwhile): the index it must hold again.
    lost_to: int = 0
    #: AppendEntries it rejected under this leader; leader ticks since the last (None: none)
    rejections: int = 0
    ticks_since_rejection: int | None = None
    #: leader ticks it has been behind with no replication progress (0: moving or not behind)
    stalled_ticks: int = 0


@dataclass(frozen=True, slots=True)
class Status:
    id: NodeId
    role: Role
    term: int
    vote: NodeId
    leader: NodeId
    commit: int
    applied: int
    first_index: int
    last_index: int
    membership: Membership
    #: On a leader, the target of its leadership transfer; on a follower, the target its
    #: leader named (the only node whose ``transfer`` vote it honours).
    lead_transferee: NodeId
    #: The leader's view of every member (empty on other roles).
    peers: tuple[PeerStatus, ...] = ()
    #: Messages dropped because the sender is in no configuration this node knows.
    dropped_non_member: int = 0
    #: The sender of the last of them (for the runtime's log line).
    last_non_member: NodeId = NONE
    #: Votes asking to skip the leader lease (``transfer``) from a node the leader did not name.
    refused_transfer_votes: int = 0
    #: Snapshot transfers dropped for passing ``RaftConfig.max_snapshot_bytes``.
    oversized_snapshots: int = 0
    #: Non-zero while this node recovers entries it lost on disk (``RaftCore.recovering_to``).
    recovering_to: int = 0


class RaftCore(LeaderRole):
    def __init__(self, config: RaftConfig, storage: LogStorage, rng: random.Random) -> None:
        config.validate()
        self.config = config
        self.id = config.id
        self.rng = rng
        self.log = RaftLog(storage, applied=config.applied)
        hard_state, snap_meta = storage.initial_state()
        self.term = hard_state.term
        self.vote = hard_state.vote
        # Configuration history: (index, membership) of the config entries in the log, the
        # snapshot's at its base. The last one is in force (it takes effect when appended).
        self._configs: list[tuple[int, Membership]] = [(snap_meta.index, snap_meta.membership)]
        self._track_configs(_configs_needed(storage, self.log.committed))
        # Who may talk to this node: see _refresh_senders and _accepts_non_member.
        self._senders: frozenset[NodeId] = frozenset()
        self._senders_recheck = 0
        self._refresh_senders()
        self.dropped_non_member = 0
        self.last_non_member: NodeId = NONE
        self.refused_transfer_votes = 0
        self.oversized_snapshots = 0
        # Entries this node once held durably and lost to damaged storage (a bad block, a cut
        # tail, a truncated file: LogStorage.durable_watermark). It may have acknowledged
        # them, so until it holds them again — or everything its leader holds — it does not
        # campaign, it votes only for a candidate at least as up to date as the log it lost
        # (so its vote means what it meant before the damage), and every answer to the
        # leader says it is recovering (``lost``), which makes the leader forget what it
        # thought this node held and stop counting it toward commitment. Both halves keep
        # Raft's safety argument whole (the CTRL protocol of Alagappan et al., FAST '18).
        held = self.log.last_index()
        watermark, watermark_term = storage.durable_watermark()
        #: (first, last) lost at startup, for the runtime's log line; None when nothing was
        self.lost_at_start: tuple[int, int] | None = (held + 1, watermark) if watermark > held else None
        #: non-zero while recovering: the watermark this node must hold again
        self.recovering_to = 0
        #: the term of the entry at the watermark: with it, the last (index, term) it lost
        self._lost_last_term = watermark_term
        #: the last index of the damaged log still held as it was (see _lost_history_replaced)
        self._intact_through = held
        if self.lost_at_start and self.membership.voters - {self.id}:
            # A sole voter has no one to fetch from: what it lost is gone, and it carries on.
            self.recovering_to = watermark

        self.role = Role.FOLLOWER
        self.leader: NodeId = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = config.election_tick
        self.lead_transferee: NodeId = NONE
        self.progress: dict[NodeId, Progress] = {}
        self.votes: dict[NodeId, bool] = {}
        self.pending_config_index = 0
        self._incoming_snapshot: tuple[SnapshotMeta, bytearray] | None = None
        self._pending_reads: list[_PendingRead] = []
        # The Ready handed out and not yet advanced. A second ready() before advance() would
        # hand out the same unstable entries and committed entries again (persisted and
        # applied twice): a driver bug, refused as etcd's RawNode panics on it.
        self._unadvanced: Ready | None = None
        # Heartbeat rounds carry this node's own sequence number, never the caller's context:
        # an ack proves leadership only for reads registered before its round was sent.
        self._read_round = 0
        self._reads_before_commit: list[bytes] = []

        # outboxes, emptied by ready()
        self._msgs: list[m.Message] = []
        self._read_states: list[ReadState] = []
        self._dropped_reads: list[bytes] = []
        self._prev_hard_state = hard_state
        self._prev_soft_state: tuple[Role, NodeId, int] | None = None
        self._last_snapshot_request = 0

        self._become_follower(self.term, NONE)

    # ======================================================================================
    # Membership
    # ======================================================================================
    @property
    def membership(self) -> Membership:
        return self._configs[-1][1]

    def _promotable(self) -> bool:
        """May this node campaign? A voter of the latest configuration may; so may a voter
        of the committed one while a newer configuration is pending — otherwise a leader
        that appended its own removal and crashed could be the only node able to win, and
        never try (its votes are still counted in the latest configuration)."""
        if self.log.pending_snapshot is not None or self.recovering_to:
            return False
        if self.id in self.membership.voters:
            return True
        last_config_index = self._configs[-1][0]
        return last_config_index > self.log.committed and self.id in self._committed_membership().voters

    def config_committed(self) -> bool:
        """No configuration change is pending: the newest one held is committed."""
        return self._configs[-1][0] <= self.log.committed

    def _committed_membership(self) -> Membership:
        for index, membership in reversed(self._configs):
            if index <= self.log.committed:
                return membership
        return self._configs[0][1]

    def _track_configs(self, entries) -> None:
        for entry in entries:
            if entry.type is EntryType.CONFIG:
                self._configs.append((entry.index, Membership.decode(entry.data)))

    def _refresh_senders(self) -> None:
        """The members of every configuration from the committed one to the newest.

        The newest alone would not do: a member that the newest (not yet committed)
        configuration drops still takes part until that commits — the leader replicates to it
        so it learns of its removal, and if the change is truncated it is a voter again.
        Recomputed when the configurations change or the commit index passes a pending one,
        so ``step`` pays one set lookup per message."""
        configs, committed = self._configs, self.log.committed
        start = 0
        for n in range(len(configs) - 1, -1, -1):
            if configs[n][0] <= committed:
                start = n
                break
        senders: frozenset[NodeId] = frozenset()
        for _, membership in configs[start:]:
            senders |= membership.members
        self._senders = senders
        self._senders_recheck = configs[start + 1][0] if start + 1 < len(configs) else 0

    def _known_senders(self) -> frozenset[NodeId]:
        if self._senders_recheck and self._senders_recheck <= self.log.committed:
            self._refresh_senders()
        return self._senders

    def _on_log_appended(self, entries, truncated_from: int) -> None:
        """Keep the configuration history in step with the log; apply the newest config."""
        before = self.membership
        known = len(self._configs)
        if truncated_from:
            while len(self._configs) > 1 and self._configs[-1][0] >= truncated_from:
                self._configs.pop()
        self._track_configs(entries)
        if truncated_from or len(self._configs) != known:
            self._refresh_senders()
        if self.membership != before:
            self._apply_membership()

    def _apply_membership(self) -> None:
        config = self.membership
        if self.role is not Role.LEADER:
            if not self._promotable() and self.role in (Role.CANDIDATE, Role.PRE_CANDIDATE):
                self._become_follower(self.term, NONE)
            return
        last = self.log.last_index()
        for node in sorted(config.members):
            pr = self.progress.get(node)
            if pr is None:
                pr = Progress(last + 1, self.config.max_inflight, node in config.learners)
                self.progress[node] = pr
            pr.learner = node in config.learners
        # A member the new configuration drops keeps receiving entries until that
        # configuration commits (see _on_commit_advanced): it must learn it was removed.
        keep = config.members | self._committed_membership().members
        for node in list(self.progress):
            if node not in keep and node != self.id:
                del self.progress[node]
        if self.lead_transferee and self.lead_transferee not in config.voters:
            self.lead_transferee = NONE

    # ======================================================================================
    # Public API: inputs
    # ======================================================================================
    def tick(self) -> None:
        if self.role is Role.LEADER:
            self._tick_leader()
        else:
            self._tick_election()

    def campaign(self) -> None:
        """Start an election now (as a follower whose timer fired would)."""
        if self.role is not Role.LEADER and self._promotable():
            self._campaign(pre_vote=self.config.pre_vote, transfer=False)

    def propose(self, data: bytes) -> tuple[int, int]:
        """Append a command; returns its (term, index). It is committed when it shows up in
        ``committed_entries`` with that term at that index; another entry there means lost."""
        self._check_can_propose()
        index = self.log.last_index() + 1
        self._append_as_leader([Entry(self.term, index, EntryType.NORMAL, data)])
        return self.term, index

    def propose_batch(self, datas: list[bytes]) -> tuple[int, int]:
        """Append several commands at once; returns (term, first index)."""
        self._check_can_propose()
        first = self.log.last_index() + 1
        entries = [Entry(self.term, first + n, EntryType.NORMAL, d) for n, d in enumerate(datas)]
        self._append_as_leader(entries)
        return self.term, first

    def propose_change(self, change: ConfigChange) -> tuple[int, int]:
        """Propose a single-server membership change; returns its (term, index)."""
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader)
        if self.lead_transferee:
            raise ConfigChangeRefused(f"leadership transfer to {self.lead_transferee} is in progress")
        if not self._committed_in_current_term():
            raise ConfigChangeRefused("the new leader has not committed an entry of its term yet; retry shortly")
        if self.pending_config_index > self.log.committed:
            raise ConfigChangeRefused(
                f"a configuration change is already in progress (index {self.pending_config_index} not yet committed)"
            )
        new = changed_membership(self.membership, change)
        index = self.log.last_index() + 1
        self.pending_config_index = index
        self._append_as_leader([Entry(self.term, index, EntryType.CONFIG, new.encode())])
        return self.term, index

    def transfer_leadership(self, target: NodeId) -> None:
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader)
        if target == self.id:
            return
        config = self.membership
        if target in config.learners:
            raise TransferRefused(f"{target} is a learner; only a voter can become leader")
        if target not in config.voters:
            raise TransferRefused(f"{target} is not a voting member of the cluster")
        if getattr(self.progress.get(target), "lost_to", 0):
            raise TransferRefused(f"{target} is re-fetching entries it lost on disk; it cannot lead until it holds them")
        if self.lead_transferee == target:
            return
        self.lead_transferee = target
        # The transfer must complete within one election timeout, counted from now.
        self.election_elapsed = 0
        # Followers honour the target's lease-skipping vote only once we named it to them:
        # name it now, ahead of the TimeoutNow (every append and heartbeat repeats it).
        self._broadcast_heartbeat(b"")
        pr = self.progress[target]
        if pr.match == self.log.last_index():
            self._send(m.TimeoutNow(self.term, self.id, target))
        else:
            self._send_append(target)

    def read_index(self, context: bytes) -> None:
        """Ask for a linearizable read. A ``ReadState(context, index)`` comes out of a later
        Ready once leadership is confirmed by a quorum; serve the read when ``index`` is
        applied. If leadership is lost first, ``context`` shows up in ``dropped_reads``."""
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader)
        if not self._committed_in_current_term():
            # The commit index of a new leader may lag behind; wait for its first commit.
            self._reads_before_commit.append(context)
            return
        self._start_read(context)

    def step(self, msg: m.Message) -> None:
        """Feed a message from a peer. Malformed or stale messages, and messages from nodes
        in no configuration this node knows, are ignored."""
        if msg.to != self.id or msg.frm == self.id or not well_formed(msg):
            return
        if msg.frm not in self._known_senders() and not self._accepts_non_member(msg):
            self.dropped_non_member += 1
            self.last_non_member = msg.frm
            return
        if msg.term > self.term:
            if isinstance(msg, m.RequestVote) and self.config.check_quorum and self.in_lease():
                # We heard from a live leader recently: don't let it be disrupted. Only the
                # node that leader named as its transfer target may skip the lease (TimeoutNow
                # told it to campaign); a transfer vote from anyone else is an ordinary vote.
                if not (msg.transfer and msg.frm == self.lead_transferee):
                    if msg.transfer:
                        self.refused_transfer_votes += 1
                    return
            if isinstance(msg, m.RequestVote) and msg.pre_vote:
                pass  # a pre-vote never changes anyone's term
            elif isinstance(msg, m.VoteResponse) and msg.pre_vote and msg.granted:
                pass  # the term we asked about; we move to it only if the pre-vote wins
            elif isinstance(msg, m.LEADER_MESSAGES):
                self._become_follower(msg.term, msg.frm)
            else:
                self._become_follower(msg.term, NONE)
        elif msg.term < self.term:
            if isinstance(msg, (m.AppendEntries, m.Heartbeat)):
                # Tell a stale leader about the newer term so it steps down.
                self._send(m.AppendResponse(self.term, self.id, msg.frm, index=0, reject=True))
            elif isinstance(msg, m.RequestVote) and msg.pre_vote:
                self._send(m.VoteResponse(self.term, self.id, msg.frm, granted=False, pre_vote=True))
            return

        if isinstance(msg, m.RequestVote):
            self._handle_vote_request(msg)
        else:
            self._step_role(msg)

    # ======================================================================================
    # Public API: outputs
    # ======================================================================================
    def has_ready(self) -> bool:
        return bool(
            self._msgs
            or self.log.unstable
            or self.log.pending_snapshot is not None
            or self.log.has_next_committed_entries()
            or self._read_states
            or self._dropped_reads
            or self._hard_state() != self._prev_hard_state
            or self._soft_state() != self._prev_soft_state
            or self._snapshot_due()
        )

    def ready(self) -> Ready:
        """The next batch of work (see ``Ready``). Call ``advance`` with it before asking again."""
        if self._unadvanced is not None:
            raise InvariantViolation("ready() called again before advance() of the Ready it handed out")
        hs = self._hard_state()
        soft = self._soft_state()
        rd = Ready(
            hard_state=hs if hs != self._prev_hard_state else None,
            entries=tuple(self.log.unstable),
            snapshot=self.log.pending_snapshot,
            messages=tuple(self._msgs),
            committed_entries=tuple(self.log.next_committed_entries(self.config.max_apply_bytes)),
            read_states=tuple(self._read_states),
            dropped_reads=tuple(self._dropped_reads),
            soft_state=soft if soft != self._prev_soft_state else None,
            snapshot_request=self._snapshot_request(),
            # A leader whose term did not change since the last Ready created every message
            # here as that leader: none promises anything about its own unpersisted state.
            send_before_persist=self.role is Role.LEADER and hs.term == self._prev_hard_state.term,
        )
        self._msgs = []
        self._read_states = []
        self._dropped_reads = []
        self._prev_hard_state = hs
        self._prev_soft_state = soft
        self._unadvanced = rd
        return rd

    def advance(self, rd: Ready) -> None:
        """The Ready was persisted, sent and applied."""
        if rd is not self._unadvanced:
            raise InvariantViolation("advance() of a Ready that is not the one ready() handed out last")
        self._unadvanced = None
        if rd.snapshot is not None:
            self.log.stable_snapshot_to(rd.snapshot.meta.index)
            if rd.snapshot.meta.index > self.log.applied:
                self.log.applied = rd.snapshot.meta.index
        if rd.entries:
            last = rd.entries[-1]
            self.log.stable_to(last.index, last.term)
            if self.role is Role.LEADER:
                self._on_own_entries_persisted()
        if rd.committed_entries:
            self.log.applied_to(rd.committed_entries[-1].index)

    def status(self) -> Status:
        peers: tuple[PeerStatus, ...] = ()
        if self.role is Role.LEADER:
            peers = tuple(
                PeerStatus(
                    id=node,
                    match=pr.match,
                    next=pr.next,
                    state=pr.state.value,
                    learner=pr.learner,
                    recent_active=pr.recent_active,
                    ticks_since_contact=0 if node == self.id else pr.ticks_since_contact,
                    bytes_sent=pr.bytes_sent,
                    inflight=len(pr.inflights),
                    lost_to=pr.lost_to,
                    rejections=pr.rejections,
                    ticks_since_rejection=pr.ticks_since_rejection,
                    stalled_ticks=pr.stalled_ticks,
                )
                for node, pr in sorted(self.progress.items())
            )
        return Status(
            id=self.id,
            role=self.role,
            term=self.term,
            vote=self.vote,
            leader=self.leader,
            commit=self.log.committed,
            applied=self.log.applied,
            first_index=self.log.first_index(),
            last_index=self.log.last_index(),
            membership=self.membership,
            lead_transferee=self.lead_transferee,
            peers=peers,
            dropped_non_member=self.dropped_non_member,
            last_non_member=self.last_non_member,
            refused_transfer_votes=self.refused_transfer_votes,
            oversized_snapshots=self.oversized_snapshots,
            recovering_to=self.recovering_to,
        )

    def _hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def in_lease(self) -> bool:
        """Heard from a leader within the last election timeout. A leader holds the lease
        only with check_quorum: without it, a leader cut off from everyone never learns it
        was replaced, and must still hear the one that replaced it."""
        if self.role is Role.LEADER:
            return self.config.check_quorum
        return self.leader != NONE and self.election_elapsed < self.config.election_tick

    def _accepts_non_member(self, msg: m.Message) -> bool:
        """May a node outside every configuration we know (see _refresh_senders) be heard?

        Only as a leader, and only when Raft needs it:

        * An uninitialised node (no configuration yet) learns everything from its first
          leader: it knows no members, so that leader is a non-member to it.
        * A follower whose configuration lags — it missed the entries that added the
          current leader (a learner added and promoted, or a leader elected in a newer
          configuration) — can catch up only from that leader: nobody else sends entries.
          (A node being added is the other side of this: the leader that adds it already
          names it in its newest configuration, so the node's answers are heard.)

        Both are heard only when no leader holds this node's lease — it has not heard from
        one within an election timeout — or from the leader it already follows. So a
        non-member cannot take over from a live leader, whatever term it claims: a forged
        AppendEntries one term above the leader's is dropped. Out of the lease, a leader
        message of a lower term than ours gets the usual answer (our term, a rejection):
        a node that campaigned while cut off is ahead of the leader it has not heard of,
        and only that answer makes the cluster move past its term so it can rejoin. A lagging follower waits at
        most one election timeout for the new leader (its own campaign meanwhile cannot win:
        the members following that leader are in its lease and do not answer).

        Why an honest removed node never gets here as a leader: it must first win a term.
        Members that know of its removal drop its vote requests (below). Until the removal
        commits it is still a member of the committed configuration, and plain Raft rules
        apply; once it commits, a quorum of the new configuration holds the removal entry,
        so a candidate whose log lacks it is not up to date for them, and one whose log
        holds it knows it was removed and does not campaign. Its old leader messages,
        replayed, carry a term that the members have left behind (dropped as stale), or
        else the term it really led, whose leader it was: Raft takes a delayed message from
        a term's one leader in its stride.

        Everything else a non-member sends is dropped: vote requests and votes (a removed
        node's, or a stranger's; a node cannot tell a removed node from one added in a
        configuration it has not seen, so it hears neither, at the price that a voter whose
        configuration lags cannot vote for a candidate it does not know until a leader
        catches it up), answers a leader did not ask for, and TimeoutNow.
        """
        if not isinstance(msg, m.LEADER_MESSAGES):
            return False
        return msg.frm == self.leader or not self.in_lease()

    def _soft_state(self) -> tuple[Role, NodeId, int]:
        return (self.role, self.leader, self.term)

    def _snapshot_due(self) -> bool:
        applied = self.log.applied
        base = self.log.storage.snapshot_meta().index
        return applied - base >= self.config.snapshot_threshold and applied != self._last_snapshot_request

    def _snapshot_request(self) -> int:
        if self._snapshot_due():
            self._last_snapshot_request = self.log.applied
            return self.log.applied
        return 0

    def _send(self, msg: m.Message) -> None:
        self._msgs.append(msg)

    # ======================================================================================
    # Role transitions
    # ======================================================================================
    def _reset(self, term: int) -> None:
        if term != self.term:
            # Invariant: vote is cleared only when the term changes.
            self.term = term
            self.vote = NONE
        self.leader = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = self.config.election_tick + self.rng.randrange(
            self.config.election_tick
        )
        self.lead_transferee = NONE
        self.votes = {}
        self.progress = {}
        self._drop_pending_reads()

    def _drop_pending_reads(self) -> None:
        self._dropped_reads.extend(self._reads_before_commit)
        self._dropped_reads.extend(r.context for r in self._pending_reads)
        self._reads_before_commit = []
        self._pending_reads = []

    def _become_follower(self, term: int, leader: NodeId) -> None:
        self._reset(term)
        self.leader = leader
        self.role = Role.FOLLOWER
        self._step_role = self._step_follower

    def _become_pre_candidate(self) -> None:
        # Neither term nor vote changes: a pre-candidate disturbs no one.
        self.role = Role.PRE_CANDIDATE
        self._step_role = self._step_candidate
        self.votes = {}
        self.leader = NONE

    def _become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE
        self._step_role = self._step_candidate

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.leader = self.id
        self.role = Role.LEADER
        self._step_role = self._step_leader
        last = self.log.last_index()
        # Sorted: message order must not depend on set iteration (PYTHONHASHSEED).
        for node in sorted(self.membership.members | {self.id}):
            self.progress[node] = Progress(last + 1, self.config.max_inflight, node in self.membership.learners)
        own = self.progress[self.id]
        own.match = self.log.persisted_index()
        own.become_replicate()
        # Conservatively treat any config entry we hold beyond commit as still in flight.
        self.pending_config_index = self._configs[-1][0]
        # The no-op commits everything before it and lets reads and config changes proceed.
        self._append_as_leader([Entry(self.term, last + 1, EntryType.NORMAL, b"")])

    def _campaign(self, *, pre_vote: bool, transfer: bool) -> None:
        if pre_vote:
            self._become_pre_candidate()
            term = self.term + 1
        else:
            self._become_candidate()
            term = self.term
        voters = self.membership.voters
        self.votes[self.id] = True
        if self._poll() == "won":
            if pre_vote:
                self._campaign(pre_vote=False, transfer=transfer)
            else:
                self._become_leader()
            return
        last_index, last_term = self.log.last_index(), self.log.last_term()
        for node in sorted(voters - {self.id}):
            self._send(m.RequestVote(term, self.id, node, last_index, last_term, pre_vote, transfer))

    def _poll(self) -> str:
        voters = self.membership.voters
        granted = sum(1 for n, g in self.votes.items() if g and n in voters)
        rejected = sum(1 for n, g in self.votes.items() if not g and n in voters)
        quorum = majority(len(voters))
        if granted >= quorum:
            return "won"
        if rejected > len(voters) - quorum:
            return "lost"
        return "pending"

    # ======================================================================================
    # Ticks
    # ======================================================================================
    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self._promotable() and self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            self._campaign(pre_vote=self.config.pre_vote, transfer=False)

    def _tick_leader(self) -> None:
        self.election_elapsed += 1
        self.heartbeat_elapsed += 1
        last_index = self.log.last_index()
        for node, pr in self.progress.items():
            if pr.ticks_since_contact is not None and node != self.id:
                pr.ticks_since_contact += 1
            if node != self.id:
                pr.tick_replication(last_index)
            if pr.state is ProgressState.SNAPSHOT:
                pr.snapshot_ticks += 1
        if self.election_elapsed >= self.config.election_tick:
            self.election_elapsed = 0
            if self.config.check_quorum and not self._quorum_active():
                self._become_follower(self.term, NONE)
                return
            if self.lead_transferee:
                self.lead_transferee = NONE  # the target did not win in time: resume proposals
        if self.heartbeat_elapsed >= self.config.heartbeat_tick:
            self.heartbeat_elapsed = 0
            self._broadcast_heartbeat(self._round_context() if self._pending_reads else b"")

    def _quorum_active(self) -> bool:
        voters = self.membership.voters
        active = sum(1 for n in voters if n == self.id or (n in self.progress and self.progress[n].recent_active))
        for node, pr in self.progress.items():
            if node != self.id:
                pr.recent_active = False
        return active >= majority(len(voters))

    # ======================================================================================
    # Votes
    # ======================================================================================
    def _handle_vote_request(self, msg: m.RequestVote) -> None:
        can_vote = (
            self.vote == msg.frm
            or (self.vote == NONE and self.leader == NONE)
            or (msg.pre_vote and msg.term > self.term)
        )
        if can_vote and self.log.is_up_to_date(msg.last_index, msg.last_term) and self._covers_lost(msg):
            self._send(m.VoteResponse(msg.term, self.id, msg.frm, granted=True, pre_vote=msg.pre_vote))
            if not msg.pre_vote:
                self.election_elapsed = 0
                self.vote = msg.frm
        else:
            self._send(m.VoteResponse(self.term, self.id, msg.frm, granted=False, pre_vote=msg.pre_vote))

    def _covers_lost(self, msg: m.RequestVote) -> bool:
        """While recovering, the candidate must also be at least as up to date as the log
        this node lost, whose last entry is (``recovering_to``, ``_lost_last_term``): the
        vote then promises what it promised before the damage — that the candidate holds
        every entry committed with this node's acknowledgement (Leader Completeness needs
        no more of a voter than its last index and term)."""
        if not self.recovering_to:
            return True
        if msg.last_term != self._lost_last_term:
            return msg.last_term > self._lost_last_term
        return msg.last_index >= self.recovering_to

    # ======================================================================================
    # Step functions, one per role
    # ======================================================================================
    def _step_follower(self, msg: m.Message) -> None:
        if isinstance(msg, m.LEADER_MESSAGES):
            self.election_elapsed = 0
            self.leader = msg.frm
            if isinstance(msg, m.AppendEntries):
                self.lead_transferee = msg.transferee
                self._handle_append(msg)
            elif isinstance(msg, m.Heartbeat):
                self.lead_transferee = msg.transferee
                self.log.commit_to(min(msg.commit, self.log.last_index()))
                self._send(m.HeartbeatResponse(self.term, self.id, msg.frm, msg.context, self.recovering_to))
            else:
                self._handle_snapshot_chunk(msg)
        elif isinstance(msg, m.TimeoutNow):
            # Only our leader may hand over its leadership; anyone else's is not its to give.
            if msg.frm == self.leader and self._promotable():
                self._campaign(pre_vote=False, transfer=True)

    def _step_candidate(self, msg: m.Message) -> None:
        if isinstance(msg, m.LEADER_MESSAGES):
            # A leader of our term exists (pre-candidates: of a term >= ours).
            self._become_follower(msg.term, msg.frm)
            self._step_follower(msg)
        elif isinstance(msg, m.VoteResponse):
            if msg.pre_vote != (self.role is Role.PRE_CANDIDATE):
                return
            self.votes.setdefault(msg.frm, msg.granted)
            result = self._poll()
            if result == "won":
                if self.role is Role.PRE_CANDIDATE:
                    self._campaign(pre_vote=False, transfer=False)
                else:
                    self._become_leader()
            elif result == "lost":
                self._become_follower(self.term, NONE)

    # ======================================================================================
    # Follower: appends and snapshots
    # ======================================================================================
    def _handle_append(self, msg: m.AppendEntries) -> None:
        if msg.prev_index < self.log.committed:
            self._send(m.AppendResponse(self.term, self.id, msg.frm, index=self.log.committed, lost=self.recovering_to))
            return
        result = self.log.maybe_append(msg.prev_index, msg.prev_term, msg.commit, msg.entries)
        if result is not None:
            last_new, conflict = result
            if conflict:
                self._on_log_appended(msg.entries[conflict - msg.prev_index - 1 :], conflict)
                self._lost_history_replaced(conflict)
            self._maybe_recovered(last_new, msg.leader_last)
            self._send(m.AppendResponse(self.term, self.id, msg.frm, index=last_new, lost=self.recovering_to))
            return
        hint_index = self.log.find_conflict_by_term(min(msg.prev_index, self.log.last_index()), msg.prev_term)
        hint_term = self.log.term_or_none(hint_index) or 0
        self._send(
            m.AppendResponse(
                self.term, self.id, msg.frm, index=msg.prev_index, reject=True,
                hint_index=hint_index, hint_term=hint_term, lost=self.recovering_to,
            )
        )

    def _lost_history_replaced(self, index: int) -> None:
        """The leader replaced our entry at ``index``. If that entry was part of the damaged
        log as it was, every entry lost after it is absent from the leader's log too (Log
        Matching), hence never committed (as in _maybe_recovered): nothing left to fetch.
        An entry received since the restart proves nothing about the lost ones."""
        if index <= self._intact_through:
            self._intact_through = index - 1
            self.recovering_to = 0

    def _maybe_recovered(self, matched: int, leader_last: int) -> None:
        """Our log now matches the leader's through ``matched``: done recovering once that
        covers the watermark, or the leader's whole log (``leader_last``).

        Why the leader's whole log is enough when it ends below the watermark: a lost entry
        e at index i > leader_last is not in the leader's log. Had e come from this leader
        it would be (a leader's log only grows within its term), so e is from an older
        term, and a leader of a later term lacks it. By Leader Completeness e was then never
        committed; and it can never be, because its term's leader would need a quorum of
        acknowledgements that intersects this leader's voters — none of which voted for a
        log missing an entry it had acknowledged (this node voted as its lost log would)."""
        if not self.recovering_to:
            return
        target = min(self.recovering_to, leader_last) if leader_last else self.recovering_to
        if matched >= target:
            self.recovering_to = 0

    def _handle_snapshot_chunk(self, msg: m.InstallSnapshot) -> None:
        """Reassemble a leader's snapshot chunk by chunk; restore it when the last arrives.

        Why here, in the pure core, when etcd-io/raft hands its core a whole snapshot (etcd's
        rafthttp streams the data to disk over its own connection and steps in only the
        metadata) and hashicorp/raft streams it through a transport reader into a snapshot
        sink: KeyVal has no such side channel. Transports are plugins that carry bounded
        messages, and the chunks travel as ordinary Raft messages. Their offsets and rejects
        are then protocol state, the follower's half of the leader's ``Progress`` in the
        SNAPSHOT state (``snapshot_offset``, the resend timer): an offset out of order, a
        new leader or a newer snapshot restarts the transfer, and the answer tells the
        leader where to resume. Kept together, one deterministic state machine decides both
        halves and the simulator checks them under loss, reordering and crashes; split
        between core and runtime, every driver would have to repeat that bookkeeping.

        The cost is memory: the data is held here until the last chunk, as the restore
        would hold it anyway (the state machine is in memory). ``max_snapshot_bytes`` bounds
        it: no message states a total, so it is the bytes actually received that are
        counted, and a transfer that passes the bound is dropped (``oversized_snapshots``).
        """
        meta = msg.meta

        def reply(offset: int, *, done: bool = False, reject: bool = False) -> None:
            self._send(m.SnapshotResponse(self.term, self.id, msg.frm, meta.index, offset, done, reject))

        if meta.index <= self.log.committed:
            self._incoming_snapshot = None
            reply(0, done=True)  # we already have everything it holds
            return
        incoming = self._incoming_snapshot
        if msg.offset == 0:
            incoming = self._incoming_snapshot = (meta, bytearray())
        if incoming is None or incoming[0] != meta or msg.offset != len(incoming[1]):
            reply(len(incoming[1]) if incoming is not None and incoming[0] == meta else 0, reject=True)
            return
        if len(incoming[1]) + len(msg.data) > self.config.max_snapshot_bytes:
            self._incoming_snapshot = None
            self.oversized_snapshots += 1
            reply(0, reject=True)
            return
        incoming[1].extend(msg.data)
        if not msg.done:
            reply(len(incoming[1]))
            return
        self._incoming_snapshot = None
        self._restore(Snapshot(meta, bytes(incoming[1])))
        self._maybe_recovered(meta.index, 0)
        reply(len(msg.data) + msg.offset, done=True)

    def _restore(self, snapshot: Snapshot) -> None:
        meta = snapshot.meta
        if self.log.match_term(meta.index, meta.term):
            # Our log already holds the snapshot's last entry: just move commit forward.
            self.log.commit_to(meta.index)
            return
        if self.log.term_or_none(meta.index) is not None:
            self._lost_history_replaced(meta.index)  # held there, with another term
        self.log.restore(snapshot)
        self._configs = [(meta.index, meta.membership)]
        self._refresh_senders()
        self._apply_membership()
