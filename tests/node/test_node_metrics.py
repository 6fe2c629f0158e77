"""/metrics and /health of a real node: what an operator scrapes."""
from __future__ import annotations

import json
import re
import urllib.request

from keyval.client import Client


def scrape(node) -> dict[str, float]:
    with urllib.request.urlopen(f"http://{node.metrics_addr}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_metrics_and_health_of_a_leader_and_a_follower(cluster):
    leader_id = cluster.wait_for_leader()
    with Client([cluster.nodes[leader_id].client_addr]) as c:
        for i in range(20):
            c.put(f"k{i}", "v")
        assert c.get("k0") == b"v"
    leader = scrape(cluster.nodes[leader_id])
    assert leader['keyval_role{role="leader"}'] == 1 and leader["keyval_is_leader"] == 1
    assert leader["keyval_term"] >= 1
    assert leader["keyval_commit_index"] >= 20 and leader["keyval_applied_index"] >= 20
    assert leader['keyval_proposals_total{outcome="applied"}'] >= 20
    assert leader['keyval_linearizable_reads_total{outcome="confirmed"}'] >= 1
    assert leader["keyval_leader_changes_total"] >= 0
    # The fsync histogram: every batch counted, cumulative buckets ending at +Inf.
    batches = leader["keyval_fsync_seconds_count"]
    assert batches >= 1 and leader['keyval_fsync_seconds_bucket{le="+Inf"}'] == batches
    assert leader["keyval_persist_batch_entries_sum"] >= 20
    followers = [n for n in cluster.initial if n != leader_id]
    for peer in followers:
        assert f'keyval_peer_lag_entries{{peer="{peer}"}}' in leader
        assert leader[f'keyval_peer_bytes_replicated_total{{peer="{peer}"}}'] > 0
    assert 'keyval_transport_messages_total{event="dropped_decode"}' in leader
    assert leader['keyval_transport_messages_total{event="sent"}'] > 0

    follower = scrape(cluster.nodes[followers[0]])
    assert follower['keyval_role{role="follower"}'] == 1
    assert follower["keyval_applied_index"] >= 0 and follower["keyval_fsync_seconds_count"] >= 1
    assert not any(name.startswith("keyval_peer_lag_entries") for name in follower)

    with urllib.request.urlopen(f"http://{cluster.nodes[followers[0]].metrics_addr}/health", timeout=5) as reply:
        health = json.loads(reply.read())
    assert health["healthy"] is True and health["leader"] == leader_id and health["role"] == "follower"
    assert re.fullmatch(r"n\d", health["id"])
