"""Leadership transfer: catching the target up first, and giving up when it can't win."""
import pytest

from keyval.raft import NotLeader, ProposalDropped, TransferRefused
from keyval.raft import messages as m

from .harness import FOLLOWER, LEADER, Cluster


def test_transfer_to_a_lagging_follower():
    c = Cluster(3)
    c.elect("n1")
    c.replicate("n1", "a")
    # n3 misses three commands.
    c.isolate("n3")
    c.replicate("n1", "b", "c", "d")
    c.heal()
    last = c.status("n1").last_index
    assert c.status("n3").last_index < last

    # The transfer starts: n1 does not hand over yet; it first brings n3 up to date.
    start = len(c.sent)
    c.transfer("n1", "n3")
    c.process("n1")
    assert c.status("n1").lead_transferee == "n3"
    assert not c.pending(m.TimeoutNow)
    assert c.pending(m.AppendEntries, to="n3")
    # No new commands while the transfer is in progress.
    with pytest.raises(ProposalDropped, match="transfer"):
        c.propose("n1", "during")

    c.stabilize()
    sent = c.sent[start:]
    timeout_nows = [i for i, msg in enumerate(sent) if isinstance(msg, m.TimeoutNow)]
    caught_up = [
        i for i, msg in enumerate(sent)
        if isinstance(msg, m.AppendResponse) and msg.frm == "n3" and not msg.reject and msg.index == last
    ]
    # TimeoutNow went out only once n3 acknowledged the leader's whole log...
    assert timeout_nows and caught_up and caught_up[0] < timeout_nows[0]
    assert sent[timeout_nows[0]].to == "n3" and sent[timeout_nows[0]].term == 2
    # ...and n3 won at once: no pre-vote, a higher term, votes despite the leader lease.
    assert not [v for v in sent if isinstance(v, m.RequestVote) and v.frm == "n3" and v.pre_vote]
    assert c.leader() == "n3" and c.term("n3") == 3
    assert c.role("n1") is FOLLOWER and c.status("n1").leader == "n3"
    with pytest.raises(NotLeader) as err:
        c.propose("n1", "e")
    assert err.value.leader == "n3"
    c.replicate("n3", "e")
    assert all(c.applied(n) == ["a", "b", "c", "d", "e"] for n in c.ids())


def test_transfer_to_an_unreachable_follower_is_abandoned():
    c = Cluster(3)
    c.elect("n1")
    c.replicate("n1", "a")
    c.isolate("n3")
    c.transfer("n1", "n3")
    with pytest.raises(ProposalDropped):
        c.propose("n1", "b")

    # Almost an election timeout later, still waiting...
    c.tick(n=9)
    assert c.status("n1").lead_transferee == "n3"
    with pytest.raises(ProposalDropped):
        c.propose("n1", "b")
    # ...and at the election timeout n1 gives up and takes commands again: same leader, same term.
    c.tick()
    assert c.status("n1").lead_transferee == ""
    c.replicate("n1", "b")
    assert c.leader() == "n1" and c.term("n1") == 2
    assert c.applied("n2") == ["a", "b"]
    # n3 was up to date, so TimeoutNow went out at once; it was lost, and n3 never started
    # a transfer election.
    assert [t.to for t in c.sent_messages(m.TimeoutNow)] == ["n3"]
    assert not c.sent_messages(m.RequestVote, frm="n3", where=lambda v: v.transfer)


def test_transfer_is_refused_to_a_learner_or_a_stranger():
    c = Cluster(3, learners=["n4"])
    c.elect("n1")
    with pytest.raises(TransferRefused, match="learner"):
        c.transfer("n1", "n4")
    with pytest.raises(TransferRefused, match="not a voting member"):
        c.transfer("n1", "n9")
    with pytest.raises(NotLeader):
        c.transfer("n2", "n3")
    # Nothing changed: n1 still leads and takes commands.
    assert c.status("n1").lead_transferee == ""
    c.replicate("n1", "a")
    assert c.role("n1") is LEADER and c.applied("n4") == ["a"]
    assert not c.sent_messages(m.TimeoutNow)
