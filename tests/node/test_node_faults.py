"""Faults injected into real processes through the `faulty` transport's control file: the lever
a nemesis test pulls. One control file is shared by every node; partitions are checked on both
sides, so writing it cuts exactly the named pairs."""
from __future__ import annotations

import json
import time

import pytest

from keyval.client import Client

from .procs import LocalCluster


@pytest.fixture
def faulty_cluster(tmp_path):
    control = tmp_path / "faults.json"
    config = tmp_path / "faulty.yaml"
    config.write_text(f"transport: faulty\ntransport_options:\n  control_file: {control}\n  poll_interval: 0.05\n")
    c = LocalCluster(tmp_path, extra=("--config", str(config)))
    c.control = control
    c.start()
    yield c
    c.stop_all()


def set_faults(cluster, rules: dict) -> None:
    tmp = cluster.control.with_suffix(".tmp")
    tmp.write_text(json.dumps(rules))
    tmp.replace(cluster.control)  # atomically: a node never reads half a document


def wait_until(check, timeout: float, what: str, cluster):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout}s\n{cluster.logs()}")


def test_partitioning_the_leader_away_elects_another_and_healing_loses_nothing(faulty_cluster):
    c = faulty_cluster
    old = c.wait_for_leader()
    others = [n for n in c.initial if n != old]
    acked = {}
    with Client(c.endpoints(), timeout=10) as client:
        for i in range(20):
            acked[f"before-{i}"] = client.put(f"before-{i}", str(i))

    set_faults(c, {"partitions": [[old, others[0]], [old, others[1]]]})
    new = c.wait_for_leader(among=others, timeout=20)
    assert new != old
    # Check-quorum: the cut-off leader hears from no quorum and steps down.
    wait_until(lambda: (c.status(old) or {}).get("role") != "leader", 10, f"{old} never stepped down", c)
    with Client(c.endpoints(others), timeout=10) as client:
        for i in range(20):
            acked[f"during-{i}"] = client.put(f"during-{i}", str(i))
    assert (c.status(old) or {}).get("commit_index", 0) < c.status(new)["commit_index"]

    set_faults(c, {})  # heal
    target = c.status(new)["commit_index"]
    wait_until(lambda: (c.status(old) or {}).get("applied_index", 0) >= target, 20, f"{old} never caught up", c)
    with Client([c.nodes[old].client_addr], timeout=10) as client:
        for key, revision in acked.items():
            item = client.get_item(key, serializable=True)  # from the old leader's own state
            assert item is not None and item.revision == revision, key
    stats = c.status(old)["transport"]
    assert stats["fault_partitioned"] > 0 and stats["rules_loaded"] >= 2, stats
