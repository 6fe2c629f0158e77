"""A member the leader reaches but cannot replicate to is named, with how long, by `kvctl
cluster health` (exit 1), the leader's /health and its metrics; healed, all say healthy again.
A member that is merely slow is not. Real processes; the faulty transport (one control file
shared by every node) drops or delays the leader's AppendEntries to one follower while
heartbeats still pass."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from .procs import BackgroundWriter, LocalCluster
from .test_node_metrics import scrape

STUCK_AFTER = 2.0


@pytest.fixture
def faulty_cluster(tmp_path):
    control = tmp_path / "faults.json"
    config = tmp_path / "faulty.yaml"
    config.write_text(f"transport: faulty\ntransport_options:\n  control_file: {control}\n  poll_interval: 0.05\n"
                      f"stuck_after: {STUCK_AFTER}\n")
    c = LocalCluster(tmp_path, extra=("--config", str(config)))
    c.control = control
    c.start()
    yield c
    c.stop_all()


def set_faults(cluster, rules: dict) -> None:
    """Write the control file, and wait until every running node has loaded it."""
    loaded = {n: cluster.status(n)["transport"]["rules_loaded"] for n in cluster.initial if cluster.nodes[n].running}
    tmp = cluster.control.with_suffix(".tmp")
    tmp.write_text(json.dumps(rules))
    tmp.replace(cluster.control)  # atomically: a node never reads half a document
    wait_until(lambda: all(cluster.status(n)["transport"]["rules_loaded"] > loaded[n] for n in loaded), 5,
               "the nodes loading the new faults", cluster)


def kvctl(cluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kvctl.cli", "--endpoints", ",".join(cluster.endpoints()), *args],
                          capture_output=True, text=True, timeout=30)


def health(cluster, *args: str) -> subprocess.CompletedProcess:
    return kvctl(cluster, "cluster", "health", *args)


def http_health(node) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://{node.metrics_addr}/health", timeout=5) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as reply:
        return reply.code, json.loads(reply.read())


def wait_until(check, timeout: float, what: str, cluster):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} within {timeout}s\n{cluster.logs()}")


def test_a_follower_that_gets_no_appends_is_stuck_until_healed(faulty_cluster):
    c = faulty_cluster
    leader = c.wait_for_leader()
    target, other = [n for n in c.initial if n != leader]
    with c.client() as client:
        for i in range(10):
            client.put(f"before-{i}", "v")
    assert health(c).returncode == 0

    set_faults(c, {"rules": [{"drop": 1.0, "to": target, "types": ["AppendEntries"]}]})
    with c.client() as client:
        for i in range(20):
            client.put(f"during-{i}", "v")  # committed by the leader and the other follower

    stuck = wait_until(lambda: (r := health(c)).returncode == 1 and r, 15, f"{target} reported stuck", c)
    line = next(line for line in stuck.stdout.splitlines() if target in line)
    found = re.search(rf"Member {target} is stuck: (\d+) entries behind, no replication progress for (\d+)s", line)
    assert found and int(found[1]) >= 20 and int(found[2]) >= STUCK_AFTER, stuck.stdout
    assert "Unhealthy" in stuck.stdout and stuck.stderr == ""
    doc = json.loads(health(c, "--json").stdout)
    assert doc["healthy"] is False and doc["stuck"] == [target] and doc["quorum_available"] is True
    assert any(issue.startswith(f"Member {target} is stuck:") for issue in doc["issues"]), doc
    # It answers heartbeats: reachable, and healthy in its own eyes.
    assert doc["healthy_members"] == 3
    assert http_health(c.nodes[target])[0] == 200
    shown = kvctl(c, "cluster", "member", target).stdout
    assert re.search(r"No Progress For: +\d+\.\d+s \(while behind\)", shown), shown
    # A longer threshold given to kvctl leaves it alone.
    assert health(c, "--stuck-after", "600").returncode == 0

    # The leader itself is fine (a load balancer keeps it); its /health names the member.
    code, own = http_health(c.nodes[leader])
    assert code == 200 and own["healthy"] is True and own["stuck"] == [target], own
    [warning] = own["warnings"]
    assert warning.startswith(f"Member {target} is stuck: ") and "no replication progress for" in warning
    metrics = scrape(c.nodes[leader])
    assert metrics[f'keyval_peer_stalled_seconds{{peer="{target}"}}'] >= STUCK_AFTER
    assert metrics[f'keyval_peer_stalled_seconds{{peer="{other}"}}'] == 0
    assert metrics[f'keyval_peer_lag_entries{{peer="{target}"}}'] >= int(found[1])
    assert f'keyval_peer_append_rejections_total{{peer="{target}"}}' in metrics
    term = c.status(leader)["term"]
    wait_until(lambda: f"node {leader} term {term}: Member {target} is stuck" in c.nodes[leader].log(), 5,
               "the leader's log line", c)

    set_faults(c, {})  # heal
    wait_until(lambda: health(c).returncode == 0, 15, f"{target} healthy again", c)
    assert http_health(c.nodes[leader])[0] == 200
    assert scrape(c.nodes[leader])[f'keyval_peer_stalled_seconds{{peer="{target}"}}'] == 0
    wait_until(lambda: f"member {target} is no longer stuck: replicating again" in c.nodes[leader].log(), 5,
               "the leader's recovery line", c)
    log = c.nodes[leader].log()
    assert log.count(f"Member {target} is stuck") == 1, log[-3000:]  # one line, not one per check


def test_a_slow_follower_that_keeps_up_is_not_stuck(faulty_cluster):
    c = faulty_cluster
    leader = c.wait_for_leader()
    target = next(n for n in c.initial if n != leader)
    set_faults(c, {"rules": [{"delay_ms": 400, "to": target, "types": ["AppendEntries"]}]})
    with BackgroundWriter(c.client, value_bytes=1) as writer:
        time.sleep(STUCK_AFTER + 2)
        during = health(c, "--json")
        metrics = scrape(c.nodes[leader])
    assert len(writer.acked) > 50
    doc = json.loads(during.stdout)
    assert during.returncode == 0 and doc["stuck"] == [], doc
    assert metrics[f'keyval_peer_stalled_seconds{{peer="{target}"}}'] < STUCK_AFTER
    assert http_health(c.nodes[leader])[0] == 200
