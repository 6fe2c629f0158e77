"""A follower reassembles a leader's snapshot chunks in bounded memory (RaftConfig.max_snapshot_bytes).

No message states a snapshot's total size, so the bytes received are what count: a leader
that keeps sending in-order chunks past the bound has its transfer dropped and counted, and
a chunk at an offset the follower has not reached is refused without allocating anything.
"""
import random

from keyval.raft import MemoryStorage, Membership, RaftCore, SnapshotMeta
from keyval.raft import messages as m
from keyval.raft.config import RaftConfig
from keyval.raft.core import bootstrap_state

MEMBERS = Membership(voters=frozenset({"n1", "n2"}))
META = SnapshotMeta(index=50, term=2, membership=MEMBERS)
BOUND = 1000


def follower() -> RaftCore:
    storage = MemoryStorage()
    hard_state, entries = bootstrap_state(MEMBERS)
    storage.append(entries)
    storage.set_hard_state(hard_state)
    return RaftCore(RaftConfig("n2", max_snapshot_bytes=BOUND), storage, random.Random(7))


def chunk(core: RaftCore, offset: int, size: int, done: bool = False) -> m.SnapshotResponse:
    core.step(m.InstallSnapshot(2, "n1", "n2", META, offset, b"s" * size, done))
    rd = core.ready()
    core.advance(rd)
    (answer,) = [msg for msg in rd.messages if isinstance(msg, m.SnapshotResponse)]
    return answer


def test_a_transfer_past_the_bound_is_dropped_and_counted():
    core = follower()
    assert chunk(core, 0, 400).offset == 400
    assert chunk(core, 400, 400).offset == 800
    answer = chunk(core, 800, 400)  # 1200 bytes: more than this node takes
    assert (answer.reject, answer.offset) == (True, 0)
    assert core._incoming_snapshot is None
    assert core.status().oversized_snapshots == 1
    # The leader carries on from where the follower points: its next chunk starts afresh.
    assert chunk(core, 1200, 100).reject


def test_a_snapshot_up_to_the_bound_is_restored():
    core = follower()
    assert chunk(core, 0, 600).offset == 600
    core.step(m.InstallSnapshot(2, "n1", "n2", META, 600, b"s" * 400, True))
    rd = core.ready()
    assert rd.snapshot is not None and rd.snapshot.meta == META and len(rd.snapshot.data) == BOUND
    assert core.status().oversized_snapshots == 0


def test_a_chunk_at_an_absurd_offset_is_refused_without_allocating():
    core = follower()
    answer = chunk(core, 2**61, 10)
    assert (answer.reject, answer.offset) == (True, 0)
    assert core._incoming_snapshot is None
