"""Issue 11's 60-byte attack against real `keyval serve` processes: a well-formed RequestVote
whose term no node can store (2**64-1, 2**63), sent over TCP to every peer port.

Before the codec bounded terms, every node exited with ``OverflowError`` (and again on every
restart). Now it is a decode error: counted as ``dropped_decode``, with no effect at all.
"""
from __future__ import annotations

import time

import msgspec
import pytest

from keyval.peer import codec

from . import forge
from .procs import LocalCluster

#: Without a cluster secret the forged bytes reach the codec; once a secret is the default,
#: the nodes need this flag for that (it is accepted, and means the same, before then).
PEER_ARGS = ("--insecure-peers",)
HUGE_TERMS = (2**64 - 1, 2**63)


def forged_vote(cluster_id: str, to: str, term: int) -> bytes:
    """A RequestVote's codec bytes (version 1: ``[cluster_id, [tag 3, term, frm, to,
    last_index, last_term, pre_vote, transfer]]``), built by hand: our encoder refuses them."""
    body = msgspec.msgpack.encode([cluster_id, [3, term, "intruder", to, 2**64 - 1, term, False, True]])
    return codec.MAGIC + bytes([1]) + body


@pytest.fixture
def cluster(tmp_path):
    c = LocalCluster(tmp_path, extra=PEER_ARGS)
    c.start()
    yield c
    c.stop_all()


def test_a_vote_with_an_unstorable_term_is_dropped_by_every_node(cluster):
    leader = cluster.wait_for_leader()
    with cluster.client() as c:
        c.put("before", "1")
    before = {n: cluster.status(n) for n in cluster.initial}
    cluster_id = before[leader]["cluster_id"]
    assert cluster_id and all(s["cluster_id"] == cluster_id for s in before.values())
    election_timeout = 2 * before[leader]["tick_interval"] * 10  # the longest a follower waits

    for node_id in cluster.initial:
        frames = [forged_vote(cluster_id, node_id, term) for term in HUGE_TERMS]
        # As a peer dials: the tcp handshake first, so that the forged votes reach the codec.
        forge.send_tcp_session(cluster.nodes[node_id].peer_addr, frames, cluster_id)

    deadline = time.monotonic() + 10
    for node_id in cluster.initial:
        while True:  # each node counted both forged frames as undecodable
            status = cluster.status(node_id)
            assert status is not None, f"{node_id} stopped answering:\n{cluster.logs()}"
            dropped = status["transport"]["dropped_decode"] - before[node_id]["transport"]["dropped_decode"]
            if dropped >= len(HUGE_TERMS):
                break
            assert time.monotonic() < deadline, f"{node_id} dropped_decode +{dropped}:\n{cluster.logs()}"
            time.sleep(0.1)
    time.sleep(election_timeout)  # long enough for any effect on elections to show
    assert all(cluster.nodes[n].running for n in cluster.initial), cluster.logs()
    after = {n: cluster.status(n) for n in cluster.initial}
    assert after[leader]["role"] == "leader"
    assert {s["leader"] for s in after.values()} == {leader}
    assert {s["term"] for s in after.values()} == {before[leader]["term"]}
    with cluster.client() as c:
        c.put("after", "2")
        assert (c.get("before"), c.get("after")) == (b"1", b"2")
    for node_id in cluster.initial:
        assert "OverflowError" not in cluster.nodes[node_id].log()
        assert "Traceback" not in cluster.nodes[node_id].log()


def test_the_nodes_restart_after_the_attack(cluster):
    """The attack once left every node unable to start again; now it leaves nothing behind."""
    cluster.wait_for_leader()
    cluster_id = cluster.status(cluster.initial[0])["cluster_id"]
    for node_id in cluster.initial:
        forge.send_tcp_session(cluster.nodes[node_id].peer_addr, [forged_vote(cluster_id, node_id, 2**64 - 1)], cluster_id)
    with cluster.client() as c:
        c.put("k", "v")
    cluster.stop_all()
    cluster.start()
    cluster.wait_for_leader()
    with cluster.client() as c:
        assert c.get("k") == b"v"
    assert all(cluster.status(n)["term"] < codec.MAX_WIRE_INT for n in cluster.initial)
