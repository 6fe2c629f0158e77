"""What transports learn from traffic, as pure bookkeeping: the cluster id and peer addresses."""
from __future__ import annotations

import logging

from keyval_plugins.transport.peer_identity import ClusterIdentity, PeerAddresses

log = logging.getLogger("test.peer_identity")


def test_the_first_cluster_id_of_traffic_is_adopted_once_with_one_line(caplog):
    caplog.set_level(logging.INFO, logger=log.name)
    identity = ClusterIdentity(log)
    identity.label = "tcp transport of node node4"
    identity.observe("", "nobody")  # no id to adopt
    assert identity.cluster_id is None and identity.stamp() == ""
    identity.observe("c1", "node1")
    identity.observe("c2", "stray")
    assert identity.cluster_id == "c1" and identity.stamp() == "c1"
    assert identity.accepts("c2")  # the node has not vouched for c1 yet
    assert [r.getMessage() for r in caplog.records] == [
        "tcp transport of node node4: adopted cluster id c1 from the traffic of node1 (no cluster id was set)"]


def test_the_nodes_cluster_id_wins_and_a_different_one_is_logged(caplog):
    caplog.set_level(logging.INFO, logger=log.name)
    same = ClusterIdentity(log)
    same.observe("c1", "node1")
    caplog.clear()
    same.configure("c1")
    assert not caplog.records and not same.accepts("c2") and same.accepts("c1")
    other = ClusterIdentity(log)
    other.observe("stray", "x")
    other.configure("c1")
    assert other.cluster_id == "c1" and not other.accepts("stray")
    assert "the node set cluster id c1, replacing stray adopted from its traffic" in caplog.text


def test_a_configured_identity_adopts_nothing():
    identity = ClusterIdentity(log)
    identity.configure("mine")
    identity.observe("theirs", "x")
    assert identity.cluster_id == "mine" and not identity.accepts("theirs")


def test_learned_addresses_are_bounded_and_the_most_recent_wins():
    book = PeerAddresses(log, limit=3)
    for n in range(3):
        book.learn(f"n{n}", f"127.0.0.1:{n}")
    book.learn("n0", "127.0.0.1:100")  # heard again, from elsewhere: moves to the back
    book.learn("n3", "127.0.0.1:3")  # evicts the least recently heard: n1
    assert len(book) == 3 and book.get("n1") is None
    assert book.get("n0") == "127.0.0.1:100" and book.get("n3") == "127.0.0.1:3"
