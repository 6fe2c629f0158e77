"""Who may talk to a node: members of a configuration it knows, and the leader that catches
a lagging or new node up. Transfer votes only from the target the leader named.

The cluster: n1 leads term 2 of n1..n3 (unless a test says otherwise).
"""
from dataclasses import replace

from keyval.raft import ChangeKind, ConfigChange, Entry, Membership, SnapshotMeta
from keyval.raft import messages as m

from .harness import FOLLOWER, LEADER, PRE_CANDIDATE, Cluster

ADD_LEARNER, PROMOTE, REMOVE = ChangeKind.ADD_LEARNER, ChangeKind.PROMOTE, ChangeKind.REMOVE


def leader_of_three(**config) -> Cluster:
    c = Cluster(3, **config)
    c.elect("n1")
    c.replicate("n1", "a")
    return c


def state(c: Cluster) -> dict:
    """What each node holds and believes, leaving out the counters of what it dropped."""
    return {
        n: (replace(c.status(n), dropped_non_member=0, last_non_member="", refused_transfer_votes=0),
            c.log_data(n), c.node(n).storage.hard_state, c.applied(n))
        for n in c.live()
    }


def test_a_non_members_append_one_term_up_changes_nothing_and_is_counted():
    c = leader_of_three()
    before = state(c)
    for target in ("n1", "n2", "n3"):
        log = c.log(target)
        forged = m.AppendEntries(3, "intruder", target, prev_index=log[-1][0], prev_term=log[-1][1],
                                 entries=(Entry(3, log[-1][0] + 1, data=b"evil"),), commit=99)
        c.step(target, forged)
        c.step(target, m.Heartbeat(3, "intruder", target, commit=99))
        c.step(target, m.InstallSnapshot(3, "intruder", target, forged_meta(c), 0, b"{}", True))
    # No term bump, no log change, no reply: only counted.
    assert state(c) == before
    assert not c.pending()
    for n in ("n1", "n2", "n3"):
        assert c.status(n).dropped_non_member == 3 and c.status(n).last_non_member == "intruder"
    c.replicate("n1", "b")
    assert all(c.applied(n) == ["a", "b"] for n in c.ids()) and c.term("n1") == 2


def forged_meta(c: Cluster) -> SnapshotMeta:
    """A snapshot far ahead of everyone, of a configuration that names only the intruder."""
    return SnapshotMeta(50, 3, Membership(frozenset({"intruder"})))


def test_a_non_members_transfer_vote_is_not_granted():
    c = leader_of_three()
    before = state(c)
    for target in ("n1", "n2", "n3"):
        c.step(target, m.RequestVote(3, "intruder", target, last_index=99, last_term=9, transfer=True))
        c.step(target, m.RequestVote(3, "intruder", target, last_index=99, last_term=9, pre_vote=True))
    assert state(c) == before and not c.pending()
    assert all(c.status(n).dropped_non_member == 2 for n in c.ids())
    # Nor do a stranger's votes, answers or TimeoutNow move anyone.
    c.step("n1", m.VoteResponse(5, "intruder", "n1", granted=True))
    c.step("n1", m.AppendResponse(2, "intruder", "n1", index=3))
    c.step("n2", m.TimeoutNow(2, "intruder", "n2"))
    assert state(c) == before and not c.pending()


def test_a_members_transfer_vote_is_refused_in_the_lease_unless_the_leader_named_it():
    c = leader_of_three()
    before = state(c)
    # n3 claims a transfer nobody asked for: inside the lease it is an ordinary vote, ignored.
    c.step("n2", m.RequestVote(3, "n3", "n2", last_index=3, last_term=2, transfer=True))
    c.step("n1", m.RequestVote(3, "n3", "n1", last_index=3, last_term=2, transfer=True))
    assert state(c) == before and not c.pending()
    assert c.status("n2").refused_transfer_votes == 1 and c.status("n1").refused_transfer_votes == 1

    # The leader names n3; the heartbeat naming it reaches n2 before n3's vote does, so only
    # n3's vote skips the lease, n2's does not (it was not named).
    c.hold(m.TimeoutNow)
    c.transfer("n1", "n3")
    c.stabilize()
    assert c.status("n2").lead_transferee == "n3"
    c.step("n1", m.RequestVote(3, "n2", "n1", last_index=3, last_term=2, transfer=True))
    assert c.term("n1") == 2 and c.status("n1").refused_transfer_votes == 2
    c.release()
    c.stabilize()
    assert c.leader() == "n3" and c.term("n3") == 3
    assert c.status("n2").leader == "n3" and c.status("n2").lead_transferee == ""
    c.replicate("n3", "b")
    assert all(c.applied(n) == ["a", "b"] for n in c.ids())


def test_timeout_now_from_a_member_that_does_not_lead_is_ignored():
    c = leader_of_three()
    before = state(c)
    c.step("n3", m.TimeoutNow(2, "n2", "n3"))
    assert state(c) == before and not c.pending()
    assert c.role("n3") is FOLLOWER


def test_a_real_transfer_names_the_target_to_followers_before_timeout_now():
    c = leader_of_three()
    start = len(c.sent)
    c.transfer("n1", "n2")
    c.stabilize()
    sent = c.sent[start:]
    named = [i for i, msg in enumerate(sent)
             if isinstance(msg, (m.Heartbeat, m.AppendEntries)) and msg.to == "n3" and msg.transferee == "n2"]
    timeout_now = [i for i, msg in enumerate(sent) if isinstance(msg, m.TimeoutNow)]
    assert named and timeout_now and named[0] < timeout_now[0]
    assert c.leader() == "n2" and c.term("n2") == 3
    assert all(c.status(n).refused_transfer_votes == 0 for n in c.ids())


def test_removed_nodes_votes_and_replayed_messages_are_ignored():
    c = leader_of_three()
    # Everything n3 ever said while a member, kept for a replay.
    c.propose_change("n1", ConfigChange(REMOVE, "n3"))
    c.stabilize()
    assert c.membership("n1").members == {"n1", "n2"} == c.membership("n3").members
    old = [msg for msg in c.sent if msg.frm == "n3" and msg.to in ("n1", "n2")]
    c.replicate("n1", "b")
    before = state(c)

    # n3 (which knows it was removed, so never campaigns itself) is made to ask for votes,
    # transfer ones too, and its old messages are replayed: nothing moves.
    for to in ("n1", "n2"):
        c.step(to, m.RequestVote(9, "n3", to, last_index=99, last_term=9))
        c.step(to, m.RequestVote(9, "n3", to, last_index=99, last_term=9, transfer=True))
    for msg in old:
        c.step(msg.to, msg)
    assert state(c) == before and not c.pending()
    assert c.status("n2").dropped_non_member >= 2
    assert c.leader() == "n1" and c.term("n1") == 2


def n4_leads_but_n3_never_heard_of_it(**config) -> Cluster:
    """n3 is cut off while n4 joins, is promoted, and takes over the lead."""
    c = leader_of_three(**config)
    c.isolate("n3")
    c.add_node("n4")
    c.propose_change("n1", ConfigChange(ADD_LEARNER, "n4"))
    c.stabilize()
    c.propose_change("n1", ConfigChange(PROMOTE, "n4"))
    c.stabilize()
    c.transfer("n1", "n4")
    c.stabilize()
    assert c.leader() == "n4" and c.term("n4") == 3
    return c


def test_a_lagging_follower_catches_up_with_a_leader_from_a_newer_configuration():
    c = n4_leads_but_n3_never_heard_of_it()
    c.replicate("n4", "b")
    assert "n4" not in c.membership("n3").members

    # Back in touch, n3 still counts on n1's lease: n4, a stranger to it, is not heard yet...
    c.heal()
    c.tick(["n1", "n2", "n4"])
    assert c.status("n3").dropped_non_member > 0 and c.term("n3") == 2
    # ...but within an election timeout without its old leader it follows n4 and catches up.
    c.tick_until(lambda: c.status("n3").leader == "n4", limit=20)
    c.tick(n=2)
    assert c.log("n3") == c.log("n4") and c.applied("n3") == ["a", "b"]
    assert c.membership("n3").voters == {"n1", "n2", "n3", "n4"}
    assert c.leader() == "n4" and c.term("n4") == 3  # nobody was deposed meanwhile
    dropped = c.status("n3").dropped_non_member
    c.replicate("n4", "c")
    c.tick(n=20)
    assert c.status("n3").dropped_non_member == dropped and c.applied("n3") == ["a", "b", "c"]


def test_a_lagging_follower_that_restarts_follows_the_new_leader_at_once():
    c = n4_leads_but_n3_never_heard_of_it()
    c.crash("n3")
    c.restart("n3")
    c.heal()
    c.tick(["n4"])  # one heartbeat round
    assert c.status("n3").leader == "n4" and c.status("n3").dropped_non_member == 0
    assert c.membership("n3").voters == {"n1", "n2", "n3", "n4"}


def test_a_lagging_follower_that_campaigned_past_the_new_leaders_term_rejoins():
    # Without pre-vote, n3 cut off campaigns again and again: its term runs ahead.
    c = n4_leads_but_n3_never_heard_of_it(pre_vote=False)
    c.tick("n3", n=60)
    assert c.term("n3") > c.term("n4")
    c.heal()
    # n4's heartbeats are stale to n3, which says so (as it would to a member): the cluster
    # moves past n3's term, elects a leader, and n3 catches up from it.
    c.tick_until(lambda: c.leader() is not None and "n4" in c.membership("n3").members
                 and c.log("n3") == c.log(c.leader()), limit=100)
    leader = c.leader()
    c.replicate(leader, "b")
    assert c.applied("n3") == ["a", "b"]


def test_an_added_learner_and_an_uninitialised_node_still_join():
    c = leader_of_three()
    c.add_node("n4")
    assert not c.membership("n4").members  # uninitialised: it knows no one
    c.propose_change("n1", ConfigChange(ADD_LEARNER, "n4"))
    c.stabilize()
    assert c.applied("n4") == ["a"] and c.status("n4").leader == "n1"
    assert c.status("n4").dropped_non_member == 0
    # Its answers reach the leader, which counts it once promoted.
    c.propose_change("n1", ConfigChange(PROMOTE, "n4"))
    c.stabilize()
    c.crash("n2")
    c.crash("n3")
    c.tick(n=3)
    _, index = c.propose("n1", "b")
    c.stabilize()
    assert c.commit("n1") < index  # two of four: no quorum
    c.restart("n2")
    c.tick(n=3)
    assert c.commit("n1") >= index and c.applied("n4") == ["a", "b"]
    assert all(c.status(n).dropped_non_member == 0 for n in c.live())


def test_an_uninitialised_node_follows_its_first_leader_only():
    c = leader_of_three()
    c.add_node("n4")
    c.propose_change("n1", ConfigChange(ADD_LEARNER, "n4"))
    c.hold(m.AppendEntries, to="n4")
    c.stabilize()
    # The leader's heartbeat reaches it first: it follows n1, and a stranger claiming a
    # higher term meanwhile is not heard.
    c.tick(["n1"], settle=False)
    c.deliver(m.Heartbeat, to="n4")
    assert c.status("n4").leader == "n1"
    c.step("n4", m.AppendEntries(5, "intruder", "n4", 0, 0, (Entry(5, 1, data=b"evil"),), 1))
    assert c.status("n4").dropped_non_member == 1 and c.term("n4") == 2 and c.log("n4") == []
    c.release()
    c.stabilize()
    assert c.applied("n4") == ["a"] and c.role("n4") is FOLLOWER
    assert c.role("n1") is LEADER and PRE_CANDIDATE not in {c.role(n) for n in c.ids()}
