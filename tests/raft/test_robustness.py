"""Robustness: garbage from the network is ignored, raises nothing and changes nothing.

The cluster: n1 leads term 2; every log is [1@t1 cfg, 2@t2 no-op, 3@t2 "a", 4@t2 "b"],
committed everywhere. Each case hands one bad message to one node.
"""
from dataclasses import replace

import pytest

from keyval.raft import Entry, EntryType, Membership, SnapshotMeta
from keyval.raft import messages as m

from .harness import LEADER, Cluster

CFG = EntryType.CONFIG
META = SnapshotMeta(index=10, term=2, membership=Membership(voters=frozenset({"n1", "n2", "n3"})))


def cfg_entry(data: bytes) -> Entry:
    return Entry(term=2, index=5, type=CFG, data=data)


GARBAGE = [
    # -- addressed wrongly ---------------------------------------------------------------
    pytest.param("n2", m.AppendEntries(2, "n1", "n9", 4, 2, (Entry(2, 5, data=b"p"),), 5), id="wrong-recipient"),
    pytest.param("n2", m.Heartbeat(2, "n2", "n2", commit=4), id="from-itself"),
    # -- negative numbers ----------------------------------------------------------------
    pytest.param("n2", m.Heartbeat(-1, "n1", "n2", commit=4), id="negative-term"),
    pytest.param("n2", m.AppendEntries(2, "n1", "n2", -1, 0, (), 4), id="negative-prev-index"),
    pytest.param("n2", m.AppendEntries(2, "n1", "n2", 4, -2, (), 4), id="negative-prev-term"),
    pytest.param("n2", m.AppendEntries(2, "n1", "n2", 4, 2, (), -3), id="negative-commit"),
    pytest.param("n2", m.Heartbeat(2, "n1", "n2", commit=-1), id="heartbeat-negative-commit"),
    pytest.param("n2", m.RequestVote(3, "n3", "n2", last_index=-1, last_term=9, pre_vote=True), id="vote-negative-last-index"),
    pytest.param("n2", m.InstallSnapshot(2, "n1", "n2", META, offset=-1, data=b"x", done=False), id="snapshot-negative-offset"),
    pytest.param("n1", m.AppendResponse(2, "n2", "n1", index=-3), id="ack-negative-index"),
    pytest.param("n1", m.SnapshotResponse(2, "n2", "n1", snapshot_index=10, offset=-5), id="snapshot-ack-negative-offset"),
    # -- entries that are not a log ------------------------------------------------------
    pytest.param("n2", m.AppendEntries(2, "n1", "n2", 4, 2, (Entry(2, 5, data=b"p"), Entry(2, 7, data=b"q")), 4),
                 id="non-contiguous-entries"),
    pytest.param("n2", m.AppendEntries(2, "n1", "n2", 4, 2, (Entry(2, 6, data=b"p"),), 4), id="entries-not-after-prev"),
    pytest.param("n2", m.AppendEntries(2, "n1", "n2", 4, 2, (Entry(9, 5, data=b"p"),), 4), id="entry-term-above-message-term"),
    pytest.param("n2", m.AppendEntries(2, "n1", "n2", 4, 2, (Entry(1, 5, data=b"p"),), 4), id="entry-term-below-prev-term"),
    # -- configuration entries that do not decode ----------------------------------------
    pytest.param("n2", m.AppendEntries(2, "n1", "n2", 4, 2, (cfg_entry(b"not json"),), 4), id="config-not-json"),
    pytest.param("n2", m.AppendEntries(2, "n1", "n2", 4, 2, (cfg_entry(b"\xff\xfe"),), 4), id="config-not-utf8"),
    pytest.param("n2", m.AppendEntries(2, "n1", "n2", 4, 2, (cfg_entry(b"null"),), 4), id="config-null"),
    pytest.param("n2", m.AppendEntries(2, "n1", "n2", 4, 2, (cfg_entry(b"{}"),), 4), id="config-missing-keys"),
    pytest.param("n2", m.AppendEntries(2, "n1", "n2", 4, 2, (cfg_entry(b'{"voters":5,"learners":[]}'),), 4),
                 id="config-voters-not-a-list"),
    pytest.param("n2", m.AppendEntries(2, "n1", "n2", 4, 2, (cfg_entry(b'{"voters":["n1"],"learners":["n1"]}'),), 4),
                 id="config-voter-and-learner"),
    pytest.param("n2", m.AppendEntries(2, "n1", "n2", 4, 2,
                                       (cfg_entry(b'{"voters":["n1","n2","n3"],"learners":[],"addresses":[]}'),), 4),
                 id="config-addresses-not-a-map"),
    pytest.param("n2", m.AppendEntries(2, "n1", "n2", 4, 2, (cfg_entry(b'{"voters":"n1n2n3","learners":[]}'),), 4),
                 id="config-voters-a-string"),
    pytest.param("n2", m.AppendEntries(2, "n1", "n2", 4, 2, (cfg_entry(b'{"voters":[1,2,3],"learners":[]}'),), 4),
                 id="config-ids-not-strings"),
    pytest.param("n2", m.AppendEntries(2, "n1", "n2", 4, 2, (cfg_entry(b'{"voters":[],"learners":[]}'),), 4),
                 id="config-without-voters"),
    pytest.param("n2", m.AppendEntries(2, "n1", "n2", 4, 2,
                                       (cfg_entry(b'{"voters":["n1","n2","n3"],"learners":[],"cluster_id":[1]}'),), 4),
                 id="config-cluster-id-not-a-string"),
    # -- stale terms: at most a reply telling the sender about the newer term ------------
    pytest.param("n2", m.AppendEntries(1, "n3", "n2", 2, 1, (Entry(1, 3, data=b"evil"),), 3), id="stale-append"),
    pytest.param("n2", m.Heartbeat(1, "n3", "n2", commit=9), id="stale-heartbeat"),
    pytest.param("n2", m.RequestVote(1, "n3", "n2", last_index=9, last_term=1), id="stale-vote-request"),
    pytest.param("n2", m.RequestVote(1, "n3", "n2", last_index=9, last_term=1, pre_vote=True), id="stale-prevote-request"),
    pytest.param("n2", m.RequestVote(2, "n3", "n2", last_index=9, last_term=1, pre_vote=True), id="prevote-for-current-term"),
    pytest.param("n2", m.InstallSnapshot(1, "n3", "n2", SnapshotMeta(10, 1), 0, b"{}", True), id="stale-snapshot"),
    pytest.param("n2", m.TimeoutNow(1, "n3", "n2"), id="stale-timeout-now"),
    pytest.param("n1", m.AppendResponse(1, "n2", "n1", index=4, reject=True, hint_index=0), id="stale-reject"),
    pytest.param("n1", m.VoteResponse(1, "n2", "n1", granted=True), id="stale-vote"),
    # -- well formed, but meaningless here -----------------------------------------------
    pytest.param("n2", m.InstallSnapshot(2, "n1", "n2", SnapshotMeta(0, 0), 0, b"", True), id="snapshot-at-index-0"),
    pytest.param("n2", m.InstallSnapshot(2, "n1", "n2", SnapshotMeta(10, 5), 0, b"", True), id="snapshot-term-above-message-term"),
    pytest.param("n2", m.InstallSnapshot(3, "n1", "n2", SnapshotMeta(10, 3), 0, b"{}", True), id="snapshot-without-voters"),
    pytest.param("n2", m.VoteResponse(2, "n3", "n2", granted=True), id="vote-to-a-follower"),
    pytest.param("n2", m.AppendResponse(2, "n3", "n2", index=4), id="ack-to-a-follower"),
    pytest.param("n1", m.AppendResponse(2, "n9", "n1", index=4), id="ack-from-a-stranger"),
    pytest.param("n1", m.HeartbeatResponse(2, "n9", "n1", context=b"r"), id="heartbeat-ack-from-a-stranger"),
    pytest.param("n1", m.VoteResponse(2, "n2", "n1", granted=True), id="vote-to-a-leader"),
    pytest.param("n1", m.RequestVote(9, "n9", "n1", last_index=99, last_term=9), id="stranger-asks-leader-for-vote"),
    pytest.param("n1", m.AppendEntries(7, "n9", "n1", -1, 0, (), 0), id="malformed-at-higher-term"),
]


def fingerprint(c: Cluster) -> dict:
    """Everything about each node, except the counters of what it dropped."""
    return {
        n: (replace(c.status(n), dropped_non_member=0, last_non_member="", refused_transfer_votes=0), c.log_data(n), c.node(n).storage.hard_state, c.applied(n), c.read_states(n))
        for n in c.live()
    }


@pytest.mark.parametrize("target, garbage", GARBAGE)
def test_garbage_is_ignored(target, garbage):
    c = Cluster(3)
    c.elect("n1")
    c.replicate("n1", "a", "b")
    before = fingerprint(c)

    # The bad message arrives (and the node handles whatever Ready follows): no exception...
    c.step(target, garbage)
    replies = c.pending()
    # ...no change to any node...
    assert fingerprint(c) == before
    # ...and at most a refusal, telling the sender about the current term.
    for reply in replies:
        assert reply.to == garbage.frm and reply.term == c.term(target), reply
        assert isinstance(reply, (m.AppendResponse, m.VoteResponse)), reply
        assert getattr(reply, "reject", False) or not getattr(reply, "granted", True), reply

    # The cluster carries on as if nothing happened.
    c.drop()
    c.replicate("n1", "c")
    assert all(c.applied(n) == ["a", "b", "c"] for n in c.ids())
    assert c.role("n1") is LEADER and c.term("n1") == 2


def test_an_ack_beyond_the_leaders_log_is_ignored():
    # A confused peer claims to hold entries the leader never sent: commit must not move
    # (it would commit unreplicated entries, or crash the leader beyond its last index).
    c = Cluster(3)
    c.elect("n1")
    core = c.core("n1")
    before = (core.log.committed, core.log.last_index())
    core.step(m.AppendResponse(core.term, "n2", "n1", index=before[1] + 50))
    core.step(m.SnapshotResponse(core.term, "n3", "n1", snapshot_index=before[1] + 50, offset=0, done=True))
    assert (core.log.committed, core.log.last_index()) == before
    assert all(p.match <= before[1] for p in core.status().peers)
