"""A node whose storage lost entries it had made durable (its durable watermark is above its
log) re-fetches them before it acts as a full member again — the CTRL protocol's two halves:
it votes only as the log it lost would, and the leader, told by the ``lost`` flag, forgets
what it thought the node held and does not count it."""
from keyval.raft import HardState, MemoryStorage, Role
from keyval.raft import messages as m

from .harness import Cluster


class DamagedStorage(MemoryStorage):
    """A memory log that remembers, apart from itself, the last entry it ever made durable."""

    def __init__(self, watermark: tuple[int, int]) -> None:
        super().__init__()
        self.watermark = watermark

    def durable_watermark(self) -> tuple[int, int]:
        held = super().durable_watermark()
        return max(held, self.watermark) if held[0] < self.watermark[0] else held


def lose_tail(c: Cluster, node: str, keep: int) -> tuple[int, int]:
    """``node`` crashes; its disk comes back with entries up to ``keep`` only, the watermark
    intact. Returns the watermark."""
    c.crash(node)
    old = c.nodes[node].storage
    watermark = (old.last_index(), old.term(old.last_index()))
    damaged = DamagedStorage(watermark)
    damaged.append(old.entries(1, keep + 1))
    hs = old.hard_state
    damaged.set_hard_state(HardState(hs.term, hs.vote, min(hs.commit, keep)))
    c.nodes[node].storage = damaged
    c.restart(node)
    return watermark


def peer(c: Cluster, leader: str, node: str):
    return next(p for p in c.status(leader).peers if p.id == node)


def test_the_leader_forgets_the_lost_entries_and_the_node_refetches_them():
    c = Cluster(3)
    c.elect("n1")
    c.replicate("n1", *[f"k{i}" for i in range(10)])
    last = c.status("n1").last_index
    assert lose_tail(c, "n3", keep=5) == (last, c.term("n1"))
    assert c.core("n3").recovering_to == last and c.core("n3").lost_at_start == (6, last)

    c.hold(m.AppendEntries, to="n3")  # heartbeats only: n3 says it lost entries in its answer
    c.tick()
    lost = peer(c, "n1", "n3")
    assert lost.lost_to == last
    flagged = c.sent_messages(m.HeartbeatResponse, frm="n3", where=lambda r: r.lost == last)
    assert flagged

    c.release()
    c.stabilize()
    assert c.log("n3") == c.log("n1")
    assert c.core("n3").recovering_to == 0 and peer(c, "n1", "n3").lost_to == 0
    # On the way, the leader read n3's rejection as news, not as a stale answer.
    assert c.sent_messages(m.AppendResponse, frm="n3", where=lambda r: r.reject and r.lost == last)


def test_a_recovering_node_is_not_counted_toward_commitment():
    c = Cluster(3)
    c.elect("n1")
    c.replicate("n1", "a", "b", "c")
    lose_tail(c, "n3", keep=2)
    c.isolate("n2")
    c.tick()  # n1 learns that n3 is recovering
    c.hold(m.AppendResponse, frm="n3", where=lambda r: not r.lost)  # n3 never says it is done
    _, index = c.propose("n1", "d")
    c.tick(n=5)
    assert c.commit("n1") < index  # n3 holds it, but is not counted while it says it is recovering
    c.release()
    c.stabilize()
    assert c.commit("n1") == index


def test_a_recovering_node_votes_only_for_a_candidate_holding_what_it_lost():
    c = Cluster(3)
    c.elect("n1")
    c.hold(m.AppendEntries, to="n2")
    c.replicate("n1", "a", "b")  # n1 and n3 hold them; n2 does not
    c.crash("n1")
    c.queue = [msg for msg in c.queue if msg.frm != "n1"]  # what it had in flight is lost
    c.release()
    watermark = lose_tail(c, "n3", keep=2)
    # n2's log ends before n3's lost entries: n3 refuses it, whatever n2's term.
    c.tick("n2", n=40)
    assert c.role("n2") is not Role.LEADER and c.core("n3").recovering_to == watermark[0]
    refusals = c.sent_messages(m.VoteResponse, frm="n3", to="n2", where=lambda r: not r.granted)
    assert refusals
    # n3 does not campaign either: its own log lacks what it lost.
    assert not c.sent_messages(m.RequestVote, frm="n3")
    # n1, back, holds them: n3 votes for it, and then holds them again.
    c.restart("n1")
    c.tick_until(lambda: c.leader() == "n1")
    c.stabilize()
    assert c.core("n3").recovering_to == 0 and c.log("n3") == c.log("n1")


def test_a_replaced_entry_of_the_damaged_log_ends_the_recovery():
    # n3's lost entries followed one that a new leader overwrites: by Log Matching the new
    # leader holds none of them, so they were never committed and there is nothing to fetch.
    c = Cluster(5)
    c.elect("n1")
    for other in ("n2", "n4", "n5"):
        c.hold(m.AppendEntries, frm="n1", to=other)
    _, first = c.propose("n1", "x1")
    c.propose("n1", "x2")
    c.propose("n1", "x3")
    c.stabilize()  # only n3 holds them: uncommitted
    lose_tail(c, "n3", keep=first)  # x2 and x3 lost, x1 still held
    assert c.core("n3").recovering_to == first + 2
    c.crash("n1")
    c.queue = [msg for msg in c.queue if msg.frm != "n1"]
    c.release()
    # Elected by n2, n4 and n5: n3 refuses a candidate without what it lost.
    c.tick_until(lambda: c.leader() not in (None, "n1"))
    leader = c.leader()
    assert c.sent_messages(m.VoteResponse, frm="n3", to=leader, where=lambda r: not r.granted)
    c.stabilize()
    assert c.log("n3")[first - 1] == c.log(leader)[first - 1] != (first, 2)  # x1 replaced
    assert c.core("n3").recovering_to == 0 and c.log("n3") == c.log(leader)
