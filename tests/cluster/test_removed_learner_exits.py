"""A learner removed right after it was added (its snapshot or first configuration just
arrived, no leader contact noticed yet) still shuts itself down: it was added in this process's
lifetime, so the configuration without it is its removal, not a stale one to wait out."""
from __future__ import annotations

import subprocess
import sys
import time

from cluster_harness import wait_for
from keyval.client import Client
from kvctl_harness import ok


def _lists_itself(endpoint: str, node: str) -> bool:
    try:
        with Client([endpoint], timeout=1.0) as client:
            answer = client.admin("membership")
    except Exception:
        return False
    return node in answer.get("voters", []) + answer.get("learners", [])


def test_a_learner_removed_right_after_it_was_added_exits(new_cluster, tmp_path):
    c = new_cluster(3)
    with Client([c.endpoint(n) for n in (1, 2, 3)], timeout=10.0) as client:
        for n in range(100):
            client.put(f"before/{n}", f"v{n}")

    data = tmp_path / "node5-data"
    data.mkdir()
    log = tmp_path / "node5.log"
    endpoint = f"127.0.0.1:{c.base_port + 1005}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "keyval.cli", "serve", "--id", "node5", "--peer-addr", f"127.0.0.1:{c.base_port + 5}",
         "--client-addr", endpoint, "--data-dir", str(data), "--log-file", str(log),
         "--secret-file", str(c.cwd / ".keyval" / "cluster.secret")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_for("node5 to listen", lambda: _answers(endpoint), timeout=20)
        ok(c.kvctl("cluster", "add", "node5", f"127.0.0.1:{c.base_port + 5}", "--no-auto-promote"))
        # As soon as node5 holds a configuration listing itself, remove it.
        wait_for("node5 to learn it was added", lambda: _lists_itself(endpoint, "node5"), timeout=20, pause=0.05)
        removed = ok(c.kvctl("cluster", "remove", "node5"))
        assert removed.stdout.startswith("removed node5"), removed.stdout
        started = time.monotonic()
        code = proc.wait(timeout=15)
        text = log.read_text()
        assert code == 0, text[-3000:]
        assert "removed from the cluster" in text and "waiting to be added again" not in text, text[-3000:]
        assert time.monotonic() - started < 15
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _answers(endpoint: str) -> bool:
    try:
        with Client([endpoint], timeout=1.0) as client:
            client.status(endpoint)
        return True
    except Exception:
        return False


class _Node:
    """Just what RemovalWatch reads: an empty node started in this process (nothing replayed)."""
    id = "node5"
    initial_commit = 0

    def __init__(self) -> None:
        self.membership_listeners = []


def test_applying_a_configuration_listing_itself_counts_as_having_been_a_member():
    """The rule, without the timing: node5 never saw a leader while listed (the watch never
    polled in between), yet it installed a snapshot listing it, then a configuration without it.
    That is its removal, so the watch looks (and would shut it down on proof)."""
    from keyval.cluster.tasks import RemovalWatch
    from keyval.raft import Membership

    node = _Node()
    watch = RemovalWatch(node, request_shutdown=lambda: None, busy=lambda: False)
    watch.attach()
    (listener,) = node.membership_listeners
    listener(40, Membership(voters=frozenset({"node1", "node2", "node3"}), learners=frozenset({"node5"})))
    assert not watch._nudged.is_set()
    listener(41, Membership(voters=frozenset({"node1", "node2", "node3"})))
    assert watch._nudged.is_set() and watch._had_contact

    # A node that never was listed in this lifetime (waiting to be added) is not nudged.
    fresh = _Node()
    other = RemovalWatch(fresh, request_shutdown=lambda: None, busy=lambda: False)
    other.attach()
    fresh.membership_listeners[0](41, Membership(voters=frozenset({"node1", "node2", "node3"})))
    assert not other._nudged.is_set() and not other._had_contact
