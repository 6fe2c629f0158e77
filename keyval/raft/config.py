"""Tunables of one Raft core. Time is counted in ticks: the runtime decides how long one is."""
from __future__ import annotations

from dataclasses import dataclass

from .types import NodeId


@dataclass(frozen=True, slots=True)
class RaftConfig:
    id: NodeId
    #: A follower campaigns after a random timeout in [election_tick, 2 * election_tick).
    election_tick: int = 10
    #: A leader sends heartbeats every heartbeat_tick ticks. Must be < election_tick.
    heartbeat_tick: int = 1
    #: Batching of AppendEntries, by entry count and by bytes.
    max_entries_per_msg: int = 512
    max_bytes_per_msg: int = 1 << 20
    #: Pipelining: AppendEntries in flight per follower in the replicate state.
    max_inflight: int = 64
    #: Committed entries handed out per Ready, by bytes.
    max_apply_bytes: int = 4 << 20
    snapshot_chunk_size: int = 1 << 20
    #: The largest snapshot a follower reassembles from a leader's chunks. It is held in
    #: memory whole (and restored into the in-memory state machine), so this bounds what one
    #: leader, buggy or hostile, can make it allocate; a bigger one is refused and counted.
    max_snapshot_bytes: int = 8 << 30
    #: Ask the runtime for a snapshot once this many applied entries follow the last one.
    snapshot_threshold: int = 10_000
    pre_vote: bool = True
    check_quorum: bool = True
    #: Index the runtime's state machine has already applied (0 if it is rebuilt from the
    #: snapshot on every start).
    applied: int = 0

    def validate(self) -> None:
        if not self.id:
            raise ValueError("node id must not be empty")
        if self.heartbeat_tick <= 0 or self.election_tick <= self.heartbeat_tick:
            raise ValueError("need 0 < heartbeat_tick < election_tick")
        if self.max_inflight <= 0 or self.max_entries_per_msg <= 0:
            raise ValueError("max_inflight and max_entries_per_msg must be positive")
        if self.snapshot_chunk_size <= 0:
            raise ValueError("snapshot_chunk_size must be positive")
        if self.max_snapshot_bytes <= 0:
            raise ValueError("max_snapshot_bytes must be positive")
