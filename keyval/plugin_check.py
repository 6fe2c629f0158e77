"""``keyval plugin-check NAME``: a storage plugin author's smoke test on a real cluster.

The conformance suite checks a storage alone; this runs three real ``keyval serve``
processes on it, started and stopped by ``kvctl local`` (run as a command: keyval does not
import kvctl), and talks to them with the client library. Each step prints one line,
PASS or FAIL; the first failure stops the run, keeps the cluster's files and says where
its logs are. On success the cluster and its files are removed.
"""
from __future__ import annotations

import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from keyval.client import Client
from keyval.errors import KeyvalError
from keyval.testing.ports import port_free

NODES = ("node1", "node2", "node3")
#: keys written before the restart of one node, and while it is down
KEYS_BEFORE, KEYS_WHILE_DOWN = 100, 50
#: how long a step may wait for the cluster (elections, catching up)
STEP_TIMEOUT = 60.0
#: a node catching up whose applied index has not moved for this long is stuck
STALL_TIMEOUT = 15.0


class StepFailed(Exception):
    """What went wrong in a step, in one line."""


class PluginCheck:
    def __init__(self, storage: str, workdir: Path, base_port: int, echo: Callable[[str], None]) -> None:
        self.storage = storage
        self.dir = workdir
        self.base_port = base_port
        self.echo = echo
        self.written: dict[str, str] = {}
        self.cluster_started = False
        self.clients = [f"127.0.0.1:{base_port + 1000 + n}" for n in range(1, len(NODES) + 1)]

    def run(self) -> bool:
        steps = [
            ("plugin", self.find_plugin),
            ("start", self.start),
            ("write", self.write),
            ("restart node", self.restart_one),
            ("snapshot", self.snapshot),
            ("compact", self.compact),
            ("restart all", self.restart_all),
            ("read back", self.read_back),
        ]
        self.echo(f"keyval plugin-check {self.storage}: a {len(NODES)}-node local cluster in {self.dir}")
        started = time.monotonic()
        for n, (name, step) in enumerate(steps):
            began = time.monotonic()
            try:
                said = step()
            except Exception as exc:  # every failure is a FAIL line, whatever the plugin raised
                reason = str(exc) if isinstance(exc, (StepFailed, KeyvalError)) else f"{type(exc).__name__}: {exc}"
                self.echo(f"FAIL  {name:<13} {reason}")
                for skipped, _ in steps[n + 1 :]:
                    self.echo(f"SKIP  {skipped}")
                where = ""
                if self.cluster_started:
                    self._stop_cluster(purge=False)
                    where = f"; the nodes' logs are in {self.dir}/node*/keyval.log"
                self.echo(f"plugin-check {self.storage}: failed at '{name}'{where}")
                return False
            self.echo(f"PASS  {name:<13} {said} ({time.monotonic() - began:.1f}s)")
        self._stop_cluster(purge=True)
        self.echo(f"plugin-check {self.storage}: all {len(steps)} steps passed in {time.monotonic() - started:.1f}s")
        return True

    # -- the steps ------------------------------------------------------------------------
    def find_plugin(self) -> str:
        from keyval.plugin_api.loading import build_plugin_manager, choose_storage

        plugins = build_plugin_manager()
        choose_storage(plugins, self.storage)  # UnknownBackend names what is there
        info = plugins.backends["storage"][self.storage]
        return f"storage '{self.storage}' from {info.source.package} {info.source.version}"

    def start(self) -> str:
        self.cluster_started = True
        self._kvctl("local", "up", "--nodes", str(len(NODES)), "--base-port", str(self.base_port),
                    "--storage", self.storage)
        return f"{len(NODES)} nodes up, leader {self._leader()}"

    def write(self) -> str:
        self._put(range(KEYS_BEFORE))
        return f"{KEYS_BEFORE} keys written through the leader"

    def restart_one(self) -> str:
        follower = next(n for n in NODES if n != self._leader())
        self._kvctl("local", "stop", follower)
        self._put(range(KEYS_BEFORE, KEYS_BEFORE + KEYS_WHILE_DOWN))
        self._kvctl("local", "start", follower)
        index = self._caught_up(follower)
        return f"{follower} stopped, {KEYS_WHILE_DOWN} keys written meanwhile, restarted, caught up to index {index}"

    def snapshot(self) -> str:
        answers = self._on_every_node("snapshot_create")
        return "every node took one (at index " + ", ".join(str(a["index"]) for a in answers) + ")"

    def compact(self) -> str:
        answers = self._on_every_node("compact")
        for a in answers:
            if a["first_index_after"] <= a["snapshot_index"]:
                raise StepFailed(f"{a['node']}'s log still starts at {a['first_index_after']}, at or before its "
                                 f"snapshot at {a['snapshot_index']}")
        return "every log now starts after its snapshot (first index " + ", ".join(
            str(a["first_index_after"]) for a in answers) + ")"

    def restart_all(self) -> str:
        self._kvctl("local", "down")
        self._kvctl("local", "up")
        return f"stopped and started again from the plugin's data, leader {self._leader()}"

    def read_back(self) -> str:
        for n, address in enumerate(self.clients):
            self._caught_up(NODES[n])
            with Client([address], timeout=5.0) as client:
                for key, value in self.written.items():
                    got = client.get(key, serializable=True)  # this node's own copy
                    if got != value.encode():
                        raise StepFailed(f"{NODES[n]} reads {key!r} as {got!r}, not {value!r}")
        return f"{len(self.written)} keys read back from each node's own copy"

    # -- helpers --------------------------------------------------------------------------
    def _kvctl(self, *args: str) -> None:
        argv = [sys.executable, "-m", "kvctl.cli", *args, "--dir", str(self.dir)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=STEP_TIMEOUT * 2)
        if done.returncode != 0:
            said = (done.stderr.strip() or done.stdout.strip()).splitlines()
            raise StepFailed(f"`kvctl {' '.join(args)}` exited {done.returncode}: {said[-1] if said else ''}")

    def _put(self, numbers) -> None:
        if not numbers:
            return
        with Client(self.clients, timeout=10.0) as client:
            for i in numbers:
                key, value = f"plugin-check/{i:05d}", f"value {i} on {self.storage}"
                client.put(key, value)
                self.written[key] = value

    def _leader(self) -> str:
        with Client(self.clients, timeout=10.0) as client:
            deadline = time.monotonic() + STEP_TIMEOUT
            while time.monotonic() < deadline:
                leader = client.status().get("leader")
                if leader:
                    return leader
                time.sleep(0.2)
        raise StepFailed(f"no leader within {STEP_TIMEOUT:.0f}s")

    def _caught_up(self, node: str) -> int:
        """Wait until ``node`` has applied what the leader has committed; its applied index.
        The leader is asked of the other nodes: ``node`` may have come back as a stranger."""
        address = self.clients[NODES.index(node)]
        deadline = time.monotonic() + STEP_TIMEOUT
        commit, applied = None, None
        moved = time.monotonic()
        with Client([a for a in self.clients if a != address], timeout=5.0) as client:
            while time.monotonic() < deadline:
                if time.monotonic() - moved > STALL_TIMEOUT:
                    raise StepFailed(f"{node} is stuck at applied index {applied} (the leader's commit index "
                                     f"{commit}): no progress for {STALL_TIMEOUT:.0f}s")
                try:
                    anyone = client.status()  # a node just started may not know the leader yet
                    leader_address = anyone["client_addresses"].get(anyone["leader"] or "")
                    if leader_address:
                        leader, mine = client.status(leader_address), client.status(address)
                        if mine["applied_index"] != applied:
                            moved = time.monotonic()
                        commit, applied = leader["commit_index"], mine["applied_index"]
                        if mine["cluster_id"] and mine["cluster_id"] != leader["cluster_id"]:
                            raise StepFailed(
                                f"{node} came back as another cluster (cluster id {mine['cluster_id']}, the "
                                f"leader's {leader['cluster_id']}): its storage kept nothing across the restart")
                        if applied >= commit:
                            return applied
                except KeyvalError:
                    pass  # a node still starting: asked again below
                time.sleep(0.2)
        raise StepFailed(f"{node} has not caught up within {STEP_TIMEOUT:.0f}s (applied index {applied}, "
                         f"the leader's commit index {commit})")

    def _on_every_node(self, op: str) -> list[dict]:
        answers = []
        for node, address in zip(NODES, self.clients):
            with Client([address], timeout=30.0) as client:
                try:
                    answers.append(client.admin(op))
                except KeyvalError as exc:
                    raise StepFailed(f"{op} on {node}: {exc}") from None
        return answers

    def _stop_cluster(self, purge: bool) -> None:
        args = ["local", "down", *(["--purge"] if purge else [])]
        try:
            self._kvctl(*args)
        except (StepFailed, subprocess.TimeoutExpired) as exc:
            self.echo(f"(stopping the cluster: {exc})")


def free_base_port(rng: random.Random) -> int:
    """A base port whose peer and client ports for every node are free (the way the test
    harnesses pick theirs: a random range, checked)."""
    for _ in range(200):
        base = rng.randrange(20000, 40000, 10)
        ports = [base + n for n in range(1, len(NODES) + 1)] + [base + 1000 + n for n in range(1, len(NODES) + 1)]
        if all(port_free(p) for p in ports):
            return base
    raise StepFailed("no free range of ports found between 20000 and 41000; pass --base-port")


def run_plugin_check(storage: str, base_port: int | None, workdir: str | None, echo: Callable[[str], None]) -> int:
    """Exit status: 0 every step passed, 1 one failed."""
    own_dir = workdir is None
    path = Path(tempfile.mkdtemp(prefix=f"keyval-plugin-check-{storage}-")) if own_dir else Path(workdir)
    try:
        port = base_port if base_port is not None else free_base_port(random.Random())
    except StepFailed as exc:
        echo(f"FAIL  start         {exc}")
        return 1
    check = PluginCheck(storage, path, port, echo)
    ok = check.run()
    if own_dir and (ok or not check.cluster_started):
        shutil.rmtree(path, ignore_errors=True)
    return 0 if ok else 1
