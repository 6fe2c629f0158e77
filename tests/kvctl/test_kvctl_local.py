"""kvctl local: a real dev cluster of background processes, its failures and its lifecycle."""
from __future__ import annotations

import json
from pathlib import Path

from keyval.client import Client
from kvctl_harness import BACKENDS, Cluster, free_base_port, kvctl, ok, pid_alive, take_down

FIELDS = {"id", "pid", "peer_address", "client_address", "running"}


def test_status_json_lists_every_node(shared_cluster):
    c = shared_cluster
    rows = c.status()
    assert [r["id"] for r in rows] == ["node1", "node2", "node3"]
    for n, row in enumerate(rows, start=1):
        assert FIELDS <= set(row)
        assert row["peer_address"] == f"127.0.0.1:{c.base_port + n}"
        assert row["client_address"] == c.endpoint(n)
        assert row["running"] is True and pid_alive(row["pid"])
    assert sorted(r["role"] for r in rows) == ["follower", "follower", "leader"]
    text = ok(c.kvctl("local", "status")).stdout
    assert text.splitlines()[0].split() == ["ID", "PID", "PEER", "CLIENT", "STATE", "ROLE"]


def test_up_refuses_while_the_cluster_runs(shared_cluster):
    result = shared_cluster.kvctl("local", "up", "--base-port", str(shared_cluster.base_port))
    assert result.returncode == 1 and "already running" in result.stderr


def test_writes_survive_stopping_the_leader(new_cluster):
    c = new_cluster()
    ok(c.kvctl("put", "before", "1"))
    leader = c.leader()
    assert ok(c.kvctl("local", "stop", leader)).stdout.startswith(f"stopped {leader} (pid ")
    assert ok(c.kvctl("local", "stop", leader)).stdout == f"{leader} is not running\n"  # idempotent
    # The two survivors elect a new leader; kvctl (all three endpoints) finds it.
    ok(c.kvctl("put", "after", "2", "--timeout", "10"))
    assert ok(c.kvctl("get", "before")).stdout == "1\n"
    assert c.leader() != leader
    # The old leader comes back and catches up.
    ok(c.kvctl("local", "start", leader))
    n = int(leader.removeprefix("node"))
    with Client([c.endpoint(n)], timeout=5) as client:
        assert client.status(c.endpoint(n))["id"] == leader
    assert ok(c.kvctl("get", "after", "--endpoints", c.endpoint(n))).stdout == "2\n"


def test_start_node4_uninitialised(new_cluster):
    c = new_cluster()
    out = ok(c.kvctl("local", "start", "node4")).stdout
    peer = f"127.0.0.1:{c.base_port + 4}"
    assert f"kvctl cluster add node4 {peer}" in out
    with Client([c.endpoint(4)], timeout=5) as client:
        status = client.status(c.endpoint(4))
    assert status["id"] == "node4" and status["voters"] == [] and status["learners"] == []
    row = next(r for r in c.status() if r["id"] == "node4")
    assert row["running"] and row["member"] is False and row["peer_address"] == peer
    assert ok(c.kvctl("local", "start", "node4")).stdout.startswith("node4 is already running")
    # The three members don't count node4, so the cluster is as it was.
    assert sum(r["role"] == "leader" for r in c.status()) == 1


def test_down_stops_everything_and_up_restarts_it(new_cluster):
    c = new_cluster()
    ok(c.kvctl("put", "kept", "yes"))
    pids = c.pids()
    assert len(pids) == 3 and all(pid_alive(p) for p in pids)
    ok(c.kvctl("local", "down"))
    assert not any(pid_alive(p) for p in pids)
    assert not any(r["running"] for r in c.status())
    assert "no node was running" in ok(c.kvctl("local", "down")).stdout  # idempotent
    # Different options on a stopped cluster are refused; none restarts it.
    refused = c.kvctl("local", "up", "--nodes", "5")
    assert refused.returncode == 1 and "--purge" in refused.stderr
    assert "restarted" in ok(c.kvctl("local", "up")).stdout
    if "memory" not in BACKENDS:  # durable storage: the data came back
        assert ok(c.kvctl("get", "kept")).stdout == "yes\n"
    ok(c.kvctl("local", "down", "--purge"))
    assert not (c.cwd / ".keyval").exists()


def test_a_node_that_dies_at_start_is_reported_with_its_log(tmp_path):
    result = kvctl("local", "up", "--nodes", "1", "--base-port", str(free_base_port()), "--storage", "nosuch",
                   cwd=tmp_path)
    assert result.returncode == 1
    assert "node1 exited while starting" in result.stderr and "nosuch" in result.stderr
    assert ".keyval/node1/keyval.log" in result.stderr
    rows = json.loads(ok(kvctl("local", "status", "--json", cwd=tmp_path)).stdout)
    assert [r["running"] for r in rows] == [False]


def test_local_commands_without_a_cluster(tmp_path):
    assert json.loads(ok(kvctl("local", "status", "--json", cwd=tmp_path)).stdout) == []
    assert "no local cluster" in ok(kvctl("local", "down", cwd=tmp_path)).stdout
    result = kvctl("local", "start", "node1", cwd=tmp_path)
    assert result.returncode == 1 and "kvctl local up" in result.stderr


def test_insecure_peers_is_chosen_at_up_and_kept_on_restart(tmp_path):
    # What `python -m keyval.bench --insecure-peers` asks for, to compare with authenticated peers.
    c = Cluster(tmp_path, free_base_port(), 1)
    try:
        c.up("--insecure-peers")
        for restart in (False, True):
            if restart:
                ok(c.kvctl("local", "down"))
                ok(c.kvctl("local", "up"))
            ok(c.kvctl("put", "k", str(restart)))
            pid = c.status()[0]["pid"]
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            assert b"--insecure-peers" in argv and b"--secret-file" not in argv
    finally:
        take_down(c)
