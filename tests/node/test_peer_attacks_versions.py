"""A stranger's version advert (peer protocol 2) against a default cluster of real processes:
unauthenticated, it must not change what a node believes a peer runs, nor the protocol the
node writes to it (a forged "protocol 1" would otherwise downgrade a link at will)."""
from __future__ import annotations

import time

import msgspec

from . import forge
from .test_peer_attacks import assert_intact, dropped_auth, settled

HEARTBEAT = 5


def forged_heartbeat(cluster_id: str, term: int, frm: str, to: str) -> bytes:
    advert = [1, "0.0.1"]  # claims the peer speaks only protocol 1, release 0.0.1
    return b"KV\x02" + msgspec.msgpack.encode([cluster_id, advert, [HEARTBEAT, term, frm, to, 0, b""]])


def test_a_forged_advert_changes_no_peer_version(cluster):
    leader, status = settled(cluster, "k", "real")
    followers = [n for n in cluster.initial if n != leader]
    believed = {n: cluster.status(n)["peer_versions"][leader] for n in followers}
    assert all(v["protocol"] == 2 for v in believed.values()), believed
    before = dropped_auth(cluster)
    for node_id in followers:
        payload = forged_heartbeat(status["cluster_id"], status["term"], leader, node_id)
        address = cluster.nodes[node_id].peer_addr
        forge.send_tcp(address, [payload, forge.sealed(payload, None)])
        forge.send_tcp_session(address, [payload], cluster_id=status["cluster_id"], sender=leader)
    time.sleep(0.5)
    after = dropped_auth(cluster)
    assert all(after[n] > before[n] for n in followers), (before, after)
    assert {n: cluster.status(n)["peer_versions"][leader] for n in followers} == believed
    assert_intact(cluster, leader, status["term"], "k", "real")
