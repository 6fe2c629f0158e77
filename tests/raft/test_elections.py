"""Elections: pre-vote, check-quorum, and votes that survive a crash."""
import pytest

from keyval.raft import NotLeader, ReadState
from keyval.raft import messages as m

from .harness import CANDIDATE, FOLLOWER, LEADER, PRE_CANDIDATE, Cluster


def test_election_prevote_then_vote_then_noop_commits():
    c = Cluster(3)
    # Everyone starts from the bootstrap entry at term 1, with no leader.
    assert [c.term(n) for n in c.ids()] == [1, 1, 1]
    assert all(c.role(n) is FOLLOWER for n in c.ids())

    # n1 campaigns: first a pre-vote, asking about term 2 without changing anyone's term.
    c.campaign("n1")
    assert c.role("n1") is PRE_CANDIDATE and c.term("n1") == 1
    prevotes = c.pending(m.RequestVote, frm="n1")
    assert {v.to for v in prevotes} == {"n2", "n3"}
    assert all(v.pre_vote and v.term == 2 and (v.last_index, v.last_term) == (1, 1) for v in prevotes)

    # The pre-vote is granted; only now does n1 move to term 2 and ask for real votes.
    c.deliver(m.RequestVote)
    assert c.term("n2") == c.term("n3") == 1  # granting a pre-vote changes nothing
    c.deliver(m.VoteResponse)
    assert c.role("n1") is CANDIDATE and c.term("n1") == 2 and c.status("n1").vote == "n1"
    votes = c.pending(m.RequestVote, frm="n1")
    assert {v.to for v in votes} == {"n2", "n3"} and not any(v.pre_vote for v in votes)

    # Votes come back, n1 wins and appends an empty no-op at index 2 of its term.
    c.stabilize()
    assert c.leader() == "n1"
    assert [c.role(n) for n in ("n2", "n3")] == [FOLLOWER, FOLLOWER]
    assert [c.term(n) for n in c.ids()] == [2, 2, 2]
    assert c.node("n2").storage.hard_state.vote == "n1"
    # Everyone holds and has committed the no-op.
    for n in c.ids():
        assert c.log(n) == [(1, 1), (2, 2)], n
        assert c.commit(n) == 2, n
        assert c.status(n).leader == "n1"
    # Commands flow.
    c.replicate("n1", "x=1", "y=2")
    assert all(c.applied(n) == ["x=1", "y=2"] for n in c.ids())


def test_prevote_keeps_a_partitioned_follower_from_disrupting_the_leader():
    c = Cluster(3)
    c.elect("n1")
    c.replicate("n1", "a")

    # n3 is cut off and times out again and again...
    c.isolate("n3")
    c.tick("n3", n=100)
    prevotes = c.sent_messages(m.RequestVote, frm="n3")
    assert len(prevotes) >= 2 * 4  # several campaigns, two pre-vote requests each
    assert all(v.pre_vote for v in prevotes)
    # ...but since no pre-vote succeeds, its term never rises.
    assert c.term("n3") == 2
    assert c.role("n3") is PRE_CANDIDATE

    # Meanwhile the majority goes on.
    c.replicate("n1", "b")
    c.tick(["n1", "n2"], n=20)
    assert c.leader() == "n1"

    # n3 comes back: the leader's heartbeat turns it into a follower, nobody's term moves.
    c.heal()
    c.tick(n=30)
    assert c.leader() == "n1"
    assert [c.term(n) for n in c.ids()] == [2, 2, 2]
    assert [c.role(n) for n in c.ids()] == [LEADER, FOLLOWER, FOLLOWER]
    assert ("n1", FOLLOWER, 2) not in c.roles  # n1 never stepped down
    assert c.applied("n3") == ["a", "b"]


def test_without_prevote_and_check_quorum_a_rejoining_follower_disrupts():
    c = Cluster(3, pre_vote=False, check_quorum=False)
    c.elect("n1")
    c.replicate("n1", "a")

    # n3 is cut off; every timeout it starts a real election and bumps its term.
    c.isolate("n3")
    c.tick("n3", n=100)
    assert c.term("n3") > 5
    assert c.role("n3") is CANDIDATE
    stray_term = c.term("n3")

    # When it rejoins, its high term deposes the leader.
    c.heal()
    c.tick(n=50)
    # n1 stepped down to n3's (even higher) term: the whole cluster moved past term 2.
    assert any(n == "n1" and r is FOLLOWER and t >= stray_term for n, r, t in c.roles)
    leader = c.leader()
    assert leader is not None and c.term(leader) >= stray_term
    assert c.applied("n3") == ["a"]  # no data was lost, only time


def test_check_quorum_isolated_leader_steps_down():
    c = Cluster(3)
    c.elect("n1")
    c.replicate("n1", "a")

    # The leader loses both followers. It still accepts a proposal (it can't know yet)...
    c.isolate("n1")
    c.propose("n1", "lost")
    # ...but within two election timeouts it notices it has no quorum and steps down,
    # without changing its term.
    rounds = c.tick_until(lambda: c.role("n1") is not LEADER, ids=["n1"])
    assert rounds <= 2 * 10
    assert c.role("n1") is FOLLOWER and c.term("n1") == 2
    with pytest.raises(NotLeader):
        c.propose("n1", "refused")

    # The majority side, no longer hearing heartbeats, elects a new leader in a new term.
    c.tick_until(lambda: c.leader() in ("n2", "n3"), ids=["n2", "n3"])
    new = c.leader()
    assert c.term(new) == 3
    c.replicate(new, "b")

    # On heal the old leader follows the new one and its unreplicated proposal is gone.
    c.heal()
    c.tick(n=5)
    assert c.role("n1") is FOLLOWER and c.status("n1").leader == new and c.term("n1") == 3
    assert all(c.applied(n) == ["a", "b"] for n in c.ids())
    assert "lost" not in [d for (_, _, d) in c.log_data("n1")]


def test_vote_lost_in_a_crash_before_it_was_persisted_was_never_given():
    c = Cluster(3, pre_vote=False)
    # n1 asks n2 for its vote in term 2; n2 decides to grant it...
    c.campaign("n1")
    c.deliver(m.RequestVote, to="n2", process=False)
    assert c.status("n2").vote == "n1"
    # ...but crashes before persisting: the vote and the response are lost together.
    c.crash("n2")
    assert c.node("n2").storage.hard_state.term == 1
    assert not c.pending(m.VoteResponse)
    c.restart("n2")
    assert (c.term("n2"), c.status("n2").vote) == (1, "")

    # Since nobody ever saw that vote, n2 may vote for n3 in term 2.
    c.drop()  # n1's election fizzles
    c.campaign("n3")
    c.deliver(m.RequestVote, frm="n3", to="n2")
    (resp,) = c.pending(m.VoteResponse, frm="n2")
    assert resp.granted and resp.term == 2


def test_persisted_vote_survives_a_crash_and_is_never_given_twice():
    c = Cluster(3, pre_vote=False)
    c.campaign("n1")
    c.deliver(m.RequestVote, to="n2")  # n2 persists term 2 + vote n1, then sends its grant
    hs = c.node("n2").storage.hard_state
    assert (hs.term, hs.vote) == (2, "n1")  # written together, in one hard state
    (grant,) = c.pending(m.VoteResponse, frm="n2")
    assert grant.granted

    # n2 crashes after its grant went out. It comes back with term and vote restored.
    c.crash("n2")
    c.restart("n2")
    assert (c.term("n2"), c.status("n2").vote) == (2, "n1")

    # n3 now campaigns in the same term 2 (its own term is still 1): n2 must refuse.
    c.drop(m.RequestVote, to="n3")
    c.campaign("n3")
    assert c.term("n3") == 2
    c.deliver(m.RequestVote, frm="n3", to="n2")
    (refusal,) = c.pending(m.VoteResponse, frm="n2", to="n3")
    assert not refusal.granted
    # It would grant n1 again (the same vote), though.
    c.step("n2", m.RequestVote(2, "n1", "n2", last_index=1, last_term=1))
    assert c.pending(m.VoteResponse, frm="n2", to="n1")[-1].granted

    # n1 wins term 2 with its votes; n3 cannot, and no term ever has two leaders.
    c.stabilize()
    assert c.leader() == "n1" and c.term("n1") == 2
    assert c.role("n3") is not LEADER


def test_single_node_cluster_commits_alone_and_survives_restarts():
    c = Cluster(1)
    # It wins its own pre-vote and vote at once, and commits without anyone else.
    c.elect("n1")
    assert c.term("n1") == 2
    c.replicate("n1", "a", "b")
    assert c.applied("n1") == ["a", "b"] and c.commit("n1") == 4
    c.read_index("n1", b"r")
    c.process("n1")
    assert c.read_states("n1") == [ReadState(b"r", 4)]  # no one to ask
    # After a crash it comes back as a follower, times out, and leads again.
    c.crash("n1")
    c.restart("n1")
    c.stabilize()  # the committed log is applied again to a fresh state machine
    assert c.role("n1") is FOLLOWER and c.applied("n1") == ["a", "b"]
    rounds = c.tick_until(lambda: c.role("n1") is LEADER)
    assert 10 <= rounds < 20 and c.term("n1") == 3
    c.replicate("n1", "c")
    assert c.applied("n1") == ["a", "b", "c"]
