"""What a leader knows about each follower's log (etcd-io/raft's Progress)."""
from __future__ import annotations

from collections import deque
from enum import Enum


class ProgressState(Enum):
    #: Unknown where the follower's log matches: one append in flight at a time.
    PROBE = "probe"
    #: Matching found: appends are pipelined, up to ``max_inflight`` in flight.
    REPLICATE = "replicate"
    #: The follower is behind the first log index: a snapshot is being sent, chunk by chunk.
    SNAPSHOT = "snapshot"


class Progress:
    __slots__ = (
        "match",
        "next",
        "state",
        "probe_sent",
        "inflights",
        "max_inflight",
        "recent_active",
        "learner",
        "pending_snapshot",
        "snapshot_offset",
        "snapshot_ticks",
        "ticks_since_contact",
        "bytes_sent",
        "lost_to",
        "rejections",
        "ticks_since_rejection",
        "stalled_ticks",
        "stall_mark",
    )

    def __init__(self, next_index: int, max_inflight: int, learner: bool) -> None:
        # Invariant: match < next.
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        #: last index of each AppendEntries in flight, oldest first
        self.inflights: deque[int] = deque()
        self.max_inflight = max_inflight
        #: heard from since the last check-quorum round
        self.recent_active = False
        self.learner = learner
        self.pending_snapshot = 0
        #: snapshot bytes the follower acknowledged
        self.snapshot_offset = 0
        self.snapshot_ticks = 0
        #: None until the first response; then leader ticks since the last one
        self.ticks_since_contact: int | None = None
        self.bytes_sent = 0
        #: non-zero while the follower says it is recovering lost entries (``lost``): its
        #: match is then only what it reported since, and it is not counted toward commit
        self.lost_to = 0
        #: AppendEntries the follower rejected since this leader took over, and leader ticks
        #: since the last one (None: none yet). Counted, never logged: a follower that lost
        #: its log can reject every append, as fast as they come.
        self.rejections = 0
        self.ticks_since_rejection: int | None = None
        #: leader ticks in a row that the follower was behind and its replication did not move
        self.stalled_ticks = 0
        #: what counts as movement, as of the last tick: (match, snapshot bytes acknowledged)
        self.stall_mark = (0, 0)

    def _reset_state(self, state: ProgressState) -> None:
        self.probe_sent = False
        self.pending_snapshot = 0
        self.snapshot_offset = 0
        self.snapshot_ticks = 0
        self.inflights.clear()
        self.state = state

    def become_probe(self) -> None:
        if self.state is ProgressState.SNAPSHOT:
            # The snapshot may have arrived even if we never heard: resume after it.
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def maybe_update(self, index: int) -> bool:
        """The follower acknowledged a match up to ``index``; False if that was stale news."""
        updated = False
        if self.match < index:
            self.match = index
            updated = True
            self.probe_sent = False
        self.next = max(self.next, index + 1)
        return updated

    def maybe_decrease_to(self, rejected: int, next_probe: int) -> bool:
        """The follower rejected an append at ``rejected``; False if the rejection is stale."""
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, next_probe + 1), self.match + 1, 1)
        self.probe_sent = False
        return True

    def rejected_append(self) -> None:
        self.rejections += 1
        self.ticks_since_rejection = 0

    def tick_replication(self, last_index: int) -> None:
        """One leader tick: a follower behind ``last_index`` whose match and acknowledged
        snapshot bytes did not move since the last tick has stalled one more tick. One that
        is not behind has nothing to move on, so its count restarts."""
        mark = (self.match, self.snapshot_offset)
        if self.match >= last_index or mark != self.stall_mark:
            self.stalled_ticks = 0
        else:
            self.stalled_ticks += 1
        self.stall_mark = mark
        if self.ticks_since_rejection is not None:
            self.ticks_since_rejection += 1

    def is_paused(self) -> bool:
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return len(self.inflights) >= self.max_inflight
        return True

    def sent_entries(self, last_index: int) -> None:
        if self.state is ProgressState.REPLICATE:
            self.next = last_index + 1
            self.inflights.append(last_index)
        elif self.state is ProgressState.PROBE:
            self.probe_sent = True

    def free_inflights_to(self, index: int) -> None:
        while self.inflights and self.inflights[0] <= index:
            self.inflights.popleft()

    def free_first_inflight(self) -> None:
        if self.inflights:
            self.inflights.popleft()
