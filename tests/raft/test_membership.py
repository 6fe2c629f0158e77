"""Membership: learners, promotion, removals (including the leader's own)."""
import pytest

from keyval.raft import ChangeKind, ConfigChange, ConfigChangeRefused, NotLeader, ProposalDropped
from keyval.raft import messages as m

from .harness import FOLLOWER, LEADER, Cluster

ADD_LEARNER, PROMOTE, REMOVE = ChangeKind.ADD_LEARNER, ChangeKind.PROMOTE, ChangeKind.REMOVE


def _cluster_with_caught_up_learner():
    """n1 leads n1..n3 with 50 commands; n4, a fresh process, is added as a learner."""
    c = Cluster(3)
    c.elect("n1")
    c.replicate("n1", *[f"v{i}" for i in range(50)])
    c.add_node("n4")
    c.propose_change("n1", ConfigChange(ADD_LEARNER, "n4", address="10.0.0.4:7000"))
    c.stabilize()
    return c


def test_learner_catches_up_never_campaigns_and_is_not_counted_in_quorum():
    c = _cluster_with_caught_up_learner()
    # The learner received the whole log, from the bootstrap entry on, and applied it.
    assert c.log("n4") == c.log("n1")
    assert len(c.applied("n4")) == 50 and c.applied("n4") == c.applied("n1")
    for n in c.ids():
        ms = c.membership(n)
        assert ms.voters == {"n1", "n2", "n3"} and ms.learners == {"n4"}, n
        assert ms.address_of("n4") == "10.0.0.4:7000"

    # Cut off and left alone for twenty election timeouts, it never campaigns.
    c.isolate("n4")
    c.tick("n4", n=200)
    assert not c.sent_messages(m.RequestVote, frm="n4")
    assert c.role("n4") is FOLLOWER and c.term("n4") == 2
    c.heal()
    c.tick(n=3)

    # An election among the voters does not even ask it.
    before = len(c.sent)
    c.transfer("n1", "n2")
    c.stabilize()
    assert c.leader() == "n2" and c.term("n2") == 3
    assert {v.to for v in c.sent[before:] if isinstance(v, m.RequestVote)} == {"n1", "n3"}
    assert c.status("n4").leader == "n2"

    # With two of three voters down, the learner's acknowledgement does not make a quorum.
    c.crash("n1")
    c.crash("n3")
    commit = c.commit("n2")
    _, index = c.propose("n2", "w")
    c.stabilize()
    assert (index, 3) in c.log("n4")  # the learner has it...
    assert c.commit("n2") == commit  # ...but it is not committed
    assert "w" not in c.applied("n2") and "w" not in c.applied("n4")

    # A voter back makes the quorum.
    c.restart("n3")
    c.tick(n=3)
    assert c.commit("n2") >= index
    assert c.applied("n2")[-1] == c.applied("n4")[-1] == c.applied("n3")[-1] == "w"


def test_promoted_learner_votes_and_counts_in_quorum():
    c = _cluster_with_caught_up_learner()
    c.propose_change("n1", ConfigChange(PROMOTE, "n4"))
    # One change at a time: a second one is refused until the first is committed.
    with pytest.raises(ConfigChangeRefused, match="in progress"):
        c.propose_change("n1", ConfigChange(ADD_LEARNER, "n5"))
    c.stabilize()
    for n in c.ids():
        assert c.membership(n).voters == {"n1", "n2", "n3", "n4"} and not c.membership(n).learners, n
    c.add_node("n5")
    c.propose_change("n1", ConfigChange(ADD_LEARNER, "n5"))  # now accepted
    c.stabilize()
    assert c.membership("n1").learners == {"n5"}

    # Four voters: a quorum is three. With n2 down, nothing commits without n4.
    c.crash("n2")
    c.hold(m.AppendResponse, frm="n4")
    _, index = c.propose("n1", "needs-n4")
    c.stabilize()
    assert c.commit("n1") < index
    c.release()
    c.stabilize()
    assert c.commit("n1") >= index
    assert c.applied("n4")[-1] == "needs-n4"

    # It now takes part in elections, and can win one.
    c.transfer("n1", "n4")
    c.stabilize()
    assert c.leader() == "n4" and c.term("n4") == 3
    assert c.sent_messages(m.RequestVote, frm="n4", where=lambda v: v.transfer)


def test_leader_removes_itself_steps_down_and_never_campaigns():
    c = Cluster(3)
    c.elect("n1")
    c.replicate("n1", "a")

    # The leader proposes its own removal. The new configuration is in force as soon as it
    # is appended: n1 refuses new commands but keeps replicating until the removal commits.
    c.propose_change("n1", ConfigChange(REMOVE, "n1"))
    removal = len(c.sent)
    with pytest.raises(ProposalDropped):
        c.propose("n1", "x")
    c.stabilize()
    # Committed: it steps down (same term), and everyone has the new configuration.
    assert c.role("n1") is FOLLOWER and c.term("n1") == 2
    for n in c.ids():
        assert c.membership(n).voters == {"n2", "n3"}, n
    assert c.commit("n2") == c.commit("n1")  # its last broadcast carried the commit index
    with pytest.raises(NotLeader):
        c.propose("n1", "x")

    # The remaining voters elect a leader among themselves, and go on without n1.
    c.tick_until(lambda: c.leader() in ("n2", "n3"))
    new = c.leader()
    c.replicate(new, "b")
    other = "n3" if new == "n2" else "n2"
    assert c.applied(new) == c.applied(other) == ["a", "b"]
    assert c.applied("n1") == ["a"]

    # However long it waits, n1 never campaigns (and nobody talks to it any more).
    c.tick(n=200)
    assert not [v for v in c.sent[removal:] if v.frm == "n1" and isinstance(v, m.RequestVote)]
    assert not [msg for msg in c.sent[removal:] if msg.to == "n1" and msg.term > 2]
    c.campaign("n1")
    assert c.role("n1") is FOLLOWER and not c.pending(frm="n1")
    assert c.leader() == new


def test_removing_the_last_voter_is_refused():
    c = Cluster(1, learners=["n2"])
    c.elect("n1")
    with pytest.raises(ConfigChangeRefused, match="last voting member"):
        c.propose_change("n1", ConfigChange(REMOVE, "n1"))
    # Removing the learner is fine, though.
    c.propose_change("n1", ConfigChange(REMOVE, "n2"))
    c.stabilize()
    assert c.membership("n1").voters == {"n1"} and not c.membership("n1").learners


def test_removing_a_learner():
    c = Cluster(3, learners=["n4"])
    c.elect("n1")
    c.replicate("n1", "a")
    assert c.applied("n4") == ["a"]

    c.propose_change("n1", ConfigChange(REMOVE, "n4"))
    c.stabilize()
    # Every node, n4 included, holds the configuration without n4: the leader kept sending
    # to n4 until its removal committed, so n4 learns it was removed.
    for n in ("n1", "n2", "n3", "n4"):
        assert c.membership(n).members == {"n1", "n2", "n3"}, n
    assert [p.id for p in c.status("n1").peers] == ["n1", "n2", "n3"]

    # Once the removal is committed the leader no longer sends it anything.
    removal = len(c.sent)
    c.replicate("n1", "b")
    c.tick(n=20)
    assert not [msg for msg in c.sent[removal:] if msg.to == "n4"]
    assert c.applied("n4") == ["a"]
    assert c.applied("n2") == ["a", "b"]
    assert c.role("n1") is LEADER and c.term("n1") == 2


def test_uncommitted_configuration_is_rolled_back_when_truncated():
    c = Cluster(5)
    c.elect("n1")
    c.replicate("n1", "a")
    # n1 proposes removing n5; only n2 receives the entry before n1 crashes.
    _, index = c.propose_change("n1", ConfigChange(REMOVE, "n5"))
    c.process("n1")
    c.drop(m.AppendEntries, frm="n1", to=["n3", "n4", "n5"])
    c.deliver(m.AppendEntries, to="n2")
    c.crash("n1")
    c.drop()
    # A configuration is in force as soon as it is appended: n2 already counts four voters.
    assert c.membership("n2").voters == {"n1", "n2", "n3", "n4"}
    assert c.commit("n2") < index

    # n2 is cut off; n3..n5, who never saw the change, elect a leader under the old
    # configuration, whose no-op takes index 4.
    c.isolate("n2")
    c.tick_until(lambda: c.leader() in ("n3", "n4", "n5"), ids=["n3", "n4", "n5"])
    new = c.leader()
    c.replicate(new, "b")

    # Back in touch, n2's entry 4 is overwritten, and with it the removal: n5 is a voter again.
    c.heal()
    c.tick(n=3)
    assert c.log("n2") == c.log(new)
    assert (index, 2) not in c.log("n2")
    assert c.membership("n2").voters == {"n1", "n2", "n3", "n4", "n5"}
    assert c.applied("n2") == c.applied("n5") == ["a", "b"]


def test_removed_follower_that_never_hears_of_it_cannot_disrupt():
    c = Cluster(3)
    c.elect("n1")
    c.replicate("n1", "a")
    # n3 is cut off while its removal commits (n1 and n2 are a quorum of the new
    # configuration), so it never learns; once committed, the leader stops talking to it.
    c.isolate("n3")
    c.propose_change("n1", ConfigChange(REMOVE, "n3"))
    c.stabilize()
    c.heal()
    assert c.membership("n1").voters == {"n1", "n2"}
    assert c.membership("n3").voters == {"n1", "n2", "n3"}

    # n3 times out again and again; its pre-votes meet a live leader and are ignored.
    c.tick(n=100)
    assert c.sent_messages(m.RequestVote, frm="n3", where=lambda v: v.pre_vote)
    assert not c.sent_messages(m.VoteResponse, to="n3")
    assert c.leader() == "n1" and c.term("n1") == 2 and c.term("n2") == 2
    c.replicate("n1", "b")
    assert c.applied("n2") == ["a", "b"]


def test_config_changes_wait_for_the_new_leaders_first_commit_and_for_transfers():
    c = Cluster(3, learners=["n4"])
    # A fresh leader whose no-op has not committed yet refuses membership changes.
    c.hold(m.AppendEntries, frm="n1")
    c.elect("n1")
    with pytest.raises(ConfigChangeRefused, match="not committed"):
        c.propose_change("n1", ConfigChange(PROMOTE, "n4"))
    c.release()
    c.stabilize()
    # Nor does it change membership while handing over leadership.
    c.isolate("n2")
    c.transfer("n1", "n2")
    with pytest.raises(ConfigChangeRefused, match="transfer"):
        c.propose_change("n1", ConfigChange(PROMOTE, "n4"))
    c.tick(n=10)  # the transfer is abandoned
    c.propose_change("n1", ConfigChange(PROMOTE, "n4"))
    c.stabilize()
    assert c.membership("n1").voters == {"n1", "n2", "n3", "n4"}


def test_leader_crashing_right_after_appending_its_own_removal():
    c = Cluster(2)
    c.elect("n1")
    c.replicate("n1", "a")
    # n1 appends its removal (persisted), but crashes before n2 ever sees it.
    _, index = c.propose_change("n1", ConfigChange(REMOVE, "n1"))
    c.process("n1")
    c.drop()
    c.crash("n1")
    c.restart("n1")
    # n2 cannot win (n1's log is ahead), so n1 — still a voter of the committed
    # configuration — must campaign, get the removal committed, then step aside.
    c.tick_until(lambda: c.leader() == "n2")
    assert c.commit("n2") >= index
    for n in c.ids():
        assert c.membership(n).voters == {"n2"}, n
    c.replicate("n2", "b")
    assert c.applied("n2") == ["a", "b"]
    c.tick(n=50)
    assert c.leader() == "n2" and c.role("n1") is FOLLOWER


@pytest.mark.parametrize("change, why", [
    (ConfigChange(ADD_LEARNER, "n1"), "already a voting member"),
    (ConfigChange(ADD_LEARNER, "n4"), "already a learner"),
    (ConfigChange(PROMOTE, "n2"), "already a voting member"),
    (ConfigChange(PROMOTE, "n9"), "add it as a learner first"),
    (ConfigChange(REMOVE, "n9"), "not a member"),
    (ConfigChange(ADD_LEARNER, ""), "must not be empty"),
])
def test_nonsensical_config_changes_are_refused_with_a_reason(change, why):
    c = Cluster(3, learners=["n4"])
    c.elect("n1")
    with pytest.raises(ConfigChangeRefused, match=why):
        c.propose_change("n1", change)
    with pytest.raises(NotLeader):
        c.propose_change("n2", ConfigChange(REMOVE, "n3"))
    # Nothing was appended, and a sensible change still goes through.
    assert c.log("n1") == [(1, 1), (2, 2)]
    c.propose_change("n1", ConfigChange(PROMOTE, "n4"))
    c.stabilize()
    assert c.membership("n2").voters == {"n1", "n2", "n3", "n4"}
