"""What the leader counts about each follower's replication, for `kvctl cluster health`:
appends it rejected, and ticks it has been behind without moving (``PeerStatus``)."""
from keyval.raft import HardState, MemoryStorage
from keyval.raft import messages as m

from .harness import Cluster


def peer(c: Cluster, leader: str, node: str):
    return next(p for p in c.status(leader).peers if p.id == node)


def one_round(c: Cluster) -> None:
    """One tick, and one round trip on the network: what is in flight arrives, and the
    answers to it. (``stabilize()`` would never return while a follower rejects every append:
    each rejection makes the next append at once.)"""
    c.tick(settle=False)
    c.deliver()
    c.deliver()


def lose_log_tail(c: Cluster, node: str, keep: int) -> None:
    """``node`` crashes and comes back with only its first ``keep`` entries (and commit): a
    disk that acknowledged writes it never made durable."""
    c.crash(node)
    old = c.nodes[node].storage
    fresh = MemoryStorage()
    fresh.append(old.entries(1, keep + 1))
    hs = old.hard_state
    fresh.set_hard_state(HardState(hs.term, hs.vote, min(hs.commit, keep)))
    c.nodes[node].storage = fresh
    c.restart(node)


def test_a_follower_whose_log_is_shorter_than_the_leader_believes_rejects_and_stalls():
    c = Cluster(3)
    c.elect("n1")
    c.replicate("n1", *[f"k{i}" for i in range(10)])
    last = c.status("n1").last_index
    assert peer(c, "n1", "n3").match == last
    lose_log_tail(c, "n3", keep=5)
    assert c.log("n3")[-1][0] == 5 and peer(c, "n1", "n3").match == last  # the leader believes more

    for _ in range(5):  # nothing to send: heartbeats only, which n3 answers
        one_round(c)
    before = peer(c, "n1", "n3")
    assert (before.rejections, before.ticks_since_rejection, before.stalled_ticks) == (0, None, 0)

    c.propose("n1", "after")
    for _ in range(30):
        one_round(c)
    n3, n2 = peer(c, "n1", "n3"), peer(c, "n1", "n2")
    assert c.commit("n1") == last + 1  # n1 and n2 commit without n3
    assert n3.match == last  # never moves: n3 rejects every append at the index the leader insists on
    rejected = c.sent_messages(m.AppendResponse, frm="n3", to="n1", where=lambda r: r.reject)
    assert n3.rejections == len(rejected) >= 30
    assert n3.ticks_since_rejection == 0
    assert n3.stalled_ticks >= 29
    # n2, which got the entry at once, neither rejected nor stalled.
    assert (n2.match, n2.rejections, n2.ticks_since_rejection, n2.stalled_ticks) == (last + 1, 0, None, 0)


def test_a_slow_follower_that_keeps_moving_does_not_stall():
    c = Cluster(3)
    c.elect("n1")
    c.hold(m.AppendEntries, to="n3")
    longest = 0
    for i in range(40):
        c.propose("n1", f"k{i}")
        c.tick()
        if i % 5 == 4:  # n3's appends arrive every five ticks, always behind the leader
            c.release()
            c.deliver(m.AppendEntries, to="n3")
            c.stabilize()
            c.hold(m.AppendEntries, to="n3")
        status = peer(c, "n1", "n3")
        assert status.match < c.status("n1").last_index or i % 5 == 4
        longest = max(longest, status.stalled_ticks)
    assert 3 <= longest <= 5
    assert peer(c, "n1", "n3").rejections == 0


def test_a_follower_with_nothing_to_receive_is_not_stalled():
    c = Cluster(3)
    c.elect("n1")
    c.replicate("n1", "a", "b")
    c.tick(n=50)
    for node in ("n2", "n3"):
        status = peer(c, "n1", node)
        assert status.match == c.status("n1").last_index and status.stalled_ticks == 0, status


def test_snapshot_chunks_acknowledged_count_as_progress():
    c = Cluster(3, snapshot_chunk_size=16)
    c.elect("n1")
    c.isolate("n3")
    c.replicate("n1", *[f"value-{i:04d}" for i in range(30)])
    c.compact("n1")
    c.heal()
    stalled = []
    for _ in range(60):
        one_round(c)
        stalled.append(peer(c, "n1", "n3").stalled_ticks)
        if peer(c, "n1", "n3").match == c.status("n1").last_index:
            break
    assert c.node("n3").snapshots_restored == 1
    assert max(stalled) <= 2, stalled  # a chunk acknowledged per round is progress
