"""Helpers for membership tests on real clusters: kvctl runs, waits, and a background writer
whose acknowledged writes must all be there at the end."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from keyval.client import Client
from keyval.errors import KeyvalError
from kvctl_harness import Cluster, ok


def peer(c: Cluster, n: int) -> str:
    """nodeN's peer address, written the guide's way (localhost:7004)."""
    return f"localhost:{c.base_port + n}"


def run_json(c: Cluster, *args: str):
    return json.loads(ok(c.kvctl(*args, "--json")).stdout)


def refused(c: Cluster, *args: str) -> str:
    """Run a kvctl command that must be refused (exit 1); its one-line message."""
    result = c.kvctl(*args)
    assert result.returncode == 1, f"expected a refusal, got exit {result.returncode}\n{result.stdout}{result.stderr}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def members(c: Cluster) -> dict[str, dict]:
    return {m["id"]: m for m in run_json(c, "cluster", "members")}


def wait_for(what: str, condition, timeout: float = 30.0, pause: float = 0.3):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(pause)


def wait_voter(c: Cluster, node: str, timeout: float = 30.0) -> None:
    wait_for(f"{node} to become a voter", lambda: members(c).get(node, {}).get("type") == "Voter", timeout)


def node_log(c: Cluster, node: str) -> str:
    path = Path(c.cwd) / ".keyval" / node / "keyval.log"
    return path.read_text() if path.exists() else ""


def running(c: Cluster, node: str) -> bool:
    return any(r["id"] == node and r["running"] for r in c.status())


def wait_removed_and_exited(c: Cluster, node: str, timeout: float = 20.0) -> None:
    """A removed node learns of its removal and stops itself cleanly."""
    wait_for(f"{node} to shut itself down", lambda: not running(c, node), timeout)
    log = node_log(c, node)
    assert f"node {node} term" in log and "removed from the cluster" in log, log[-2000:]
    assert f"node {node} stopped" in log and "CRITICAL" not in log and "Traceback" not in log, log[-2000:]


def ensure_leader(c: Cluster, node: str) -> None:
    if run_json(c, "cluster", "leader")["id"] != node:
        ok(c.kvctl("cluster", "transfer", node))
    assert run_json(c, "cluster", "leader")["id"] == node


class Writer:
    """Writes unique keys, one after the other, until stopped; remembers what was
    acknowledged. ``check()`` reads everything back: no acknowledged write may be lost."""

    def __init__(self, endpoints: list[str], prefix: str = "w/") -> None:
        self.endpoints = endpoints
        self.prefix = prefix
        self.acked: dict[str, str] = {}
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="writer", daemon=True)

    def __enter__(self) -> "Writer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self) -> None:
        with Client(self.endpoints, timeout=10.0) as client:
            n = 0
            while not self._stop.is_set():
                n += 1
                key, value = f"{self.prefix}{n:07d}", f"v{n}"
                try:
                    client.put(key, value)
                except KeyvalError:
                    self.failed += 1  # outcome unknown: it may or may not have applied
                    continue
                self.acked[key] = value
                time.sleep(0.005)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def check(self, endpoints: list[str] | None = None) -> int:
        self.stop()
        assert len(self.acked) > 20, f"the writer hardly wrote ({len(self.acked)} acknowledged, {self.failed} failed)"
        with Client(endpoints or self.endpoints, timeout=15.0) as client:
            found = {item.key.decode(): item.value.decode() for item in client.scan(self.prefix)}
        lost = [k for k, v in self.acked.items() if found.get(k) != v]
        assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {lost[:5]}"
        return len(self.acked)
