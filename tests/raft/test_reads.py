"""ReadIndex: linearizable reads without writing to the log."""
from keyval.raft import ReadState
from keyval.raft import messages as m

from .harness import LEADER, Cluster


def test_read_index_waits_for_a_heartbeat_round():
    c = Cluster(3)
    c.elect("n1")
    c.replicate("n1", "a")
    commit = c.commit("n1")

    c.read_index("n1", b"r1")
    c.process("n1")
    # Not yet: the leader first confirms it is still the leader, with a heartbeat round
    # tagged for reads (the context on the wire identifies the round).
    assert c.read_states("n1") == []
    beats = c.pending(m.Heartbeat, frm="n1")
    assert {b.to for b in beats} == {"n2", "n3"} and all(b.context for b in beats)
    c.deliver(m.Heartbeat)
    assert c.read_states("n1") == []
    # One follower's acknowledgement plus its own make a quorum: the read may be served
    # once the commit index it saw is applied.
    c.deliver(m.HeartbeatResponse, frm="n2")
    assert c.read_states("n1") == [ReadState(b"r1", commit)]
    assert c.node("n1").applied_index >= commit
    # The late acknowledgement changes nothing.
    c.stabilize()
    assert c.read_states("n1") == [ReadState(b"r1", commit)]


def test_stale_leader_never_serves_a_read_and_drops_it_when_it_steps_down():
    c = Cluster(3)
    c.elect("n1")
    c.replicate("n1", "a")

    # n1 is cut off; a read arrives. Its heartbeats get no answer, so no ReadState.
    c.isolate("n1")
    c.read_index("n1", b"stale")
    c.stabilize()
    assert c.read_states("n1") == []

    # The others elect a new leader and write: a read served by n1 now would be stale.
    c.tick_until(lambda: c.leader() in ("n2", "n3"), ids=["n2", "n3"])
    c.replicate(c.leader(), "b")
    assert c.role("n1") is LEADER  # it has not noticed yet

    # Time passes at n1: it keeps trying, gets no quorum, steps down and drops the read.
    c.tick("n1", n=25)
    assert c.role("n1") is not LEADER
    assert c.read_states("n1") == []
    assert c.dropped_reads("n1") == [b"stale"]
    assert c.sent_messages(m.Heartbeat, frm="n1", where=lambda b: b.context)  # it did keep asking


def test_new_leader_defers_reads_until_its_noop_commits():
    c = Cluster(3)
    c.elect("n1")
    c.replicate("n1", "a")

    # n1 gets "x" committed with n2's help (n3 never sees it)...
    _, x = c.propose("n1", "x")
    c.process("n1")
    c.drop(to="n3")
    c.deliver(m.AppendEntries, to="n2")
    c.deliver(m.AppendResponse, frm="n2", process=False)
    assert c.commit("n1") == x
    # ...and crashes before telling anyone: n2 holds "x" but does not know it is committed.
    c.crash("n1")
    assert c.commit("n2") == x - 1

    # n2 (the only one that can win: n3 lacks "x") is elected; its appends are held up, so
    # its no-op cannot commit yet.
    c.hold(m.AppendEntries, frm="n2")
    c.tick_until(lambda: c.role("n2") is LEADER, ids=["n2", "n3"])
    assert c.term("n2") == 3 and c.commit("n2") == x - 1

    # A read now must not be answered at commit index x-1: that would miss "x".
    c.read_index("n2", b"early")
    c.tick(["n2", "n3"], n=3)  # heartbeats flow, but the read waits
    assert c.read_states("n2") == []
    assert not c.sent_messages(m.Heartbeat, frm="n2", where=lambda b: b.context)  # no read round yet

    # Once the no-op (index x+1) commits, the read goes through the heartbeat round and is
    # answered at an index that includes "x".
    c.release()
    c.stabilize()
    assert c.commit("n2") == x + 1
    assert c.read_states("n2") == [ReadState(b"early", x + 1)]
    assert c.sent_messages(m.Heartbeat, frm="n2", where=lambda b: b.context)
    assert c.applied("n2") == ["a", "x"]


def test_one_heartbeat_round_confirms_every_earlier_read():
    c = Cluster(3)
    c.elect("n1")
    c.read_index("n1", b"r1")
    c.replicate("n1", "a")  # r1 was asked before "a" was written...
    c.read_index("n1", b"r2")  # ...r2 after
    c.drop(m.Heartbeat, where=lambda b: b.context)  # r1's own round is lost
    c.stabilize()
    # r2's round confirms both; each keeps the commit index it was asked at.
    assert c.read_states("n1") == [ReadState(b"r1", 2), ReadState(b"r2", 3)]


def test_learner_acknowledgements_do_not_confirm_a_read():
    c = Cluster(3, learners=["n4"])
    c.elect("n1")
    c.crash("n2")
    c.crash("n3")
    c.read_index("n1", b"r")
    c.tick("n1", n=3)
    assert c.sent_messages(m.HeartbeatResponse, frm="n4", where=lambda r: r.context)  # it did answer
    assert c.read_states("n1") == []
    c.restart("n2")
    c.tick(n=2)
    assert [rs.context for rs in c.read_states("n1")] == [b"r"]


def test_a_late_ack_does_not_confirm_a_later_read_reusing_its_context():
    c = Cluster(3)
    c.elect("n1")
    c.replicate("n1", "a")
    # A first read with context b"r": n2's ack confirms it; n3's ack is slow.
    c.hold(m.HeartbeatResponse, frm="n3", where=lambda r: r.context)
    c.read_index("n1", b"r")
    c.stabilize()
    assert c.read_states("n1") == [ReadState(b"r", 3)]

    # n1 is cut off; n2 and n3 move on to a new leader and write "W".
    c.isolate("n1")
    c.tick_until(lambda: c.leader() in ("n2", "n3"), ids=["n2", "n3"])
    c.replicate(c.leader(), "W")

    # n1, unaware, takes a second read that reuses the context; then n3's slow ack from the
    # first round (sent before this read existed) finally arrives.
    c.read_index("n1", b"r")
    c.process("n1")
    c.heal()
    c.release()
    c.deliver(m.HeartbeatResponse, frm="n3", to="n1")
    # Answering now, at index 3, would miss "W": the old round proves nothing about now.
    assert c.read_states("n1") == [ReadState(b"r", 3)]
