"""A stranger on the network against real `keyval serve` processes: each attack the security
review reproduced (issue 11), sent over real sockets to a default cluster — one that
authenticates its peers with a cluster secret — and shown refused or harmless: data
unchanged, leader unchanged, no node exits, acknowledged writes real."""
from __future__ import annotations

import threading
import time

import pytest

from keyval.errors import KeyvalError
from keyval.kv import encode_put

from . import forge
from .procs import LocalCluster
from .test_node_metrics import scrape

DROPPED_AUTH = 'keyval_transport_messages_total{event="dropped_auth"}'


def dropped_auth(cluster: LocalCluster) -> dict[str, float]:
    return {n: scrape(cluster.nodes[n]).get(DROPPED_AUTH, 0.0) for n in cluster.initial}


def settled(cluster: LocalCluster, key: str, value: str) -> tuple[str, dict]:
    """Write ``key`` last, so it sits at the leader's last index; the leader and its status."""
    leader = cluster.wait_for_leader()
    with cluster.client() as c:
        for i in range(5):
            c.put(f"before/{i}", "x")
        c.put(key, value)
    return leader, cluster.status(leader)


def overwrite(status: dict, key: str, to: str) -> bytes:
    """The forged AppendEntries of the review: a term above the leader's, from a non-member,
    replacing the committed entry at the last index with another value for ``key``."""
    term, last = status["term"], status["last_index"]
    entry = (term + 1, last, forge.ENTRY_NORMAL, encode_put(key.encode(), b"forged"))
    return forge.append_entries(status["cluster_id"], term + 1, "intruder", to, last - 1, term, [entry], last)


def assert_intact(cluster: LocalCluster, leader: str, term: int, key: str, value: str) -> None:
    for node_id in cluster.initial:
        assert cluster.nodes[node_id].running, cluster.logs()
        with cluster.client([node_id]) as c:
            assert c.get(key, serializable=True) == value.encode(), node_id
    assert cluster.wait_for_leader() == leader
    assert cluster.status(leader)["term"] == term
    with cluster.client() as c:
        c.put("after", "ok")
        assert c.get("after") == b"ok"


@pytest.mark.parametrize("tag", ["none", "random"])
def test_forged_append_entries_over_tcp_is_dropped_and_counted(cluster, tag):
    leader, status = settled(cluster, "k", "real")
    before = dropped_auth(cluster)
    for node_id in cluster.initial:
        payload = overwrite(status, "k", node_id)
        forge.send_tcp(cluster.nodes[node_id].peer_addr, [payload if tag == "none" else forge.sealed(payload, None)])
    time.sleep(0.5)
    after = dropped_auth(cluster)
    assert all(after[n] > before[n] for n in cluster.initial), (before, after)
    assert_intact(cluster, leader, status["term"], "k", "real")


def test_forged_append_entries_over_udp_is_dropped_and_counted(tmp_path):
    cluster = LocalCluster(tmp_path, extra=("--transport", "udp"))
    cluster.start()
    try:
        leader, status = settled(cluster, "k", "real")
        before = dropped_auth(cluster)
        for node_id in cluster.initial:
            payload = overwrite(status, "k", node_id)
            forge.send_udp(cluster.nodes[node_id].peer_addr, payload)
            forge.send_udp(cluster.nodes[node_id].peer_addr, payload, secret=b"", seq=2)  # a random tag
        time.sleep(0.5)
        after = dropped_auth(cluster)
        assert all(after[n] >= before[n] + 2 for n in cluster.initial), (before, after)
        assert_intact(cluster, leader, status["term"], "k", "real")
    finally:
        cluster.stop_all()


def test_a_vote_with_the_largest_term_crashes_nothing(cluster):
    leader, status = settled(cluster, "k", "real")
    for node_id in cluster.initial:
        for term in (2**64 - 1, 2**63):
            vote = forge.request_vote(status["cluster_id"], term, "intruder", node_id, 2**40, 2**40)
            forge.send_tcp(cluster.nodes[node_id].peer_addr, [vote, forge.sealed(vote, None)], linger=0.1)
    time.sleep(0.5)
    assert_intact(cluster, leader, status["term"], "k", "real")
    # and a restart finds nothing on disk it cannot read
    victim = next(n for n in cluster.initial if n != leader)
    cluster.nodes[victim].stop()
    cluster.start(victim)
    time.sleep(1.0)
    assert cluster.nodes[victim].running, cluster.logs()


def test_transfer_votes_from_a_stranger_do_not_depose_the_leader(cluster):
    leader, status = settled(cluster, "k", "real")
    stop = threading.Event()

    def depose() -> None:
        term = status["term"]
        while not stop.is_set():
            term += 1
            for node_id in cluster.initial:
                vote = forge.request_vote(status["cluster_id"], term, "intruder", node_id, 2**40, 2**40, transfer=True)
                forge.send_tcp(cluster.nodes[node_id].peer_addr, [vote], linger=0.0)
            stop.wait(0.5)

    attacker = threading.Thread(target=depose, daemon=True)
    attacker.start()
    failed = 0
    try:
        with cluster.client(timeout=2.0) as c:
            for i in range(13):
                try:
                    c.put(f"during/{i}", "v")
                except KeyvalError:
                    failed += 1
                time.sleep(0.25)
    finally:
        stop.set()
        attacker.join(10)
    assert failed == 0
    assert_intact(cluster, leader, status["term"], "k", "real")


def test_insecure_peers_must_be_asked_for_and_is_logged(tmp_path):
    cluster = LocalCluster(tmp_path, size=1, extra=("--insecure-peers",))
    cluster.start()
    try:
        cluster.wait_for_leader()
        assert "peer traffic is NOT authenticated (--insecure-peers)" in cluster.nodes["n1"].log()
    finally:
        cluster.stop_all()


def test_a_forged_udp_sequence_number_does_not_silence_the_leader(tmp_path):
    """The review's replay-window poisoning: a datagram in the leader's name with sequence
    number 2**62 made a follower drop every real datagram from the leader."""
    cluster = LocalCluster(tmp_path, extra=("--transport", "udp"))
    cluster.start()
    try:
        leader, status = settled(cluster, "k", "real")
        followers = [n for n in cluster.initial if n != leader]
        heartbeat = forge.message(status["cluster_id"], 5, status["term"], leader, followers[0], status["commit_index"], b"")
        for node_id in followers:
            for epoch in (1, 2**63):
                forge.send_udp(cluster.nodes[node_id].peer_addr, heartbeat, sender=leader, seq=2**62, epoch=epoch,
                               secret=b"")
        with cluster.client() as c:
            for i in range(20):
                c.put(f"after/{i}", "v")
        # Every follower still hears the leader: it applies the writes made after the forgery.
        target = cluster.status(leader)["commit_index"]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(cluster.status(n)["applied_index"] < target for n in followers):
            time.sleep(0.2)
        assert all(cluster.status(n)["applied_index"] >= target for n in followers)
        assert_intact(cluster, leader, status["term"], "k", "real")
    finally:
        cluster.stop_all()
