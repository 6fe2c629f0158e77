"""Membership settings from the node's config file (min_voters, auto_promote,
catchup_threshold) and per call, on `keyval serve` processes started here — so a removed
node's exit code can be checked too."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.node.procs import shared_secret

from keyval.client import Client
from keyval.errors import KeyvalError

from cluster_harness import wait_for
from kvctl_harness import free_base_port, kvctl, ok


class Node:
    def __init__(self, base: Path, port: int, n: int) -> None:
        self.id = f"node{n}"
        self.peer = f"127.0.0.1:{port + n}"
        self.client = f"127.0.0.1:{port + 1000 + n}"
        self.dir = base / self.id
        self.proc: subprocess.Popen | None = None

    def start(self, settings: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        config = {"id": self.id, "peer_addr": self.peer, "client_addr": self.client,
                  "data_dir": str(self.dir / "data"), "log_file": str(self.dir / "keyval.log"),
                  "secret_file": str(shared_secret(self.dir.parent)), **settings}
        (self.dir / "keyval.yaml").write_text(yaml.safe_dump(config))
        self.proc = subprocess.Popen([sys.executable, "-m", "keyval.cli", "serve", "--config", str(self.dir / "keyval.yaml")],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def log(self) -> str:
        path = self.dir / "keyval.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def answers(endpoint: str) -> bool:
    try:
        with Client([endpoint], timeout=0.5) as client:
            return client.status(endpoint)["id"] is not None
    except KeyvalError:
        return False


def test_min_voters_auto_promote_and_thresholds_from_config_and_per_call(tmp_path):
    port = free_base_port()
    nodes = [Node(tmp_path, port, n) for n in range(1, 5)]
    bootstrap = {n.id: n.peer for n in nodes[:3]}
    settings = {"min_voters": 3, "auto_promote": False, "catchup_threshold": 50}
    endpoints = ",".join(n.client for n in nodes)

    def run(*args: str, **kw) -> subprocess.CompletedProcess:
        return kvctl(*args, "--endpoints", endpoints, cwd=tmp_path, **kw)

    def member(node: str) -> dict:
        return json.loads(ok(run("cluster", "member", node, "--json")).stdout)

    try:
        for node in nodes[:3]:
            node.start({**settings, "bootstrap": bootstrap})
        nodes[3].start(settings)
        wait_for("node4 to answer", lambda: answers(nodes[3].client))
        wait_for("a leader", lambda: run("cluster", "leader").returncode == 0, timeout=20)
        info = json.loads(ok(run("cluster", "info", "--json")).stdout)
        assert (info["min_voters"], info["auto_promote"], info["catchup_threshold"]) == (3, False, 50)

        # auto_promote: false in the config: node4 catches up and stays a learner.
        ok(run("cluster", "add", "node4", nodes[3].peer))
        wait_for("node4 to catch up", lambda: member("node4")["caught_up"])
        time.sleep(1.0)
        learner = member("node4")
        assert (learner["type"], learner["auto_promote"], learner["effective_catchup_threshold"]) == ("Learner", False, 50)
        assert "catchup_threshold" not in learner  # the leader's, not set for node4
        ok(run("cluster", "promote", "node4", "--catchup-threshold", "1000"))
        assert member("node4")["type"] == "Voter"

        # Four voters, min_voters 3: one may go (and exits 0 by itself), a second may not.
        assert ok(run("cluster", "remove", "node4")).stdout.startswith("removed node4")
        assert nodes[3].proc.wait(20) == 0
        assert "node node4 term" in nodes[3].log() and "removed from the cluster" in nodes[3].log()
        leader = json.loads(ok(run("cluster", "leader", "--json")).stdout)["id"]
        other = next(n.id for n in nodes[:3] if n.id != leader)
        result = run("cluster", "remove", other)
        assert result.returncode == 1
        assert result.stderr.strip() == (f"kvctl cluster remove: the cluster refused: cannot remove {other}: the "
                                         f"cluster would have 2 voter(s), below the configured minimum of 3 (min_voters)")

        # Per call: an add that turns auto-promotion on for this learner, with its own threshold.
        nodes[3].stop()
        (nodes[3].dir / "data").rename(nodes[3].dir / "old-data")
        nodes[3].start(settings)
        wait_for("node4 to answer", lambda: answers(nodes[3].client))
        ok(run("cluster", "add", "node4", nodes[3].peer, "--auto-promote", "--catchup-threshold", "5"))
        wait_for("node4 to be promoted automatically", lambda: member("node4")["type"] == "Voter", timeout=20)
        assert member("node4")["catchup_threshold"] == 5
    finally:
        for node in nodes:
            node.stop()
