"""Real `kvctl local` clusters for the maintenance commands, always taken down afterwards."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "kvctl"))  # the shared real-process harness

from kvctl_harness import Cluster, free_base_port, take_down  # noqa: E402

from keyval.client import Client  # noqa: E402


class MaintenanceCluster(Cluster):
    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """kvctl with no terminal on stdin, so a prompt can never wait for an answer."""
        env = {k: v for k, v in os.environ.items() if k != "KVCTL_ENDPOINTS"}
        return subprocess.run([sys.executable, "-m", "kvctl.cli", *args], cwd=self.cwd, env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)

    def json(self, *args: str) -> object:
        result = self.run(*args, "--json")
        assert result.returncode == 0, f"exit {result.returncode}: {result.stdout}{result.stderr}"
        return json.loads(result.stdout)

    def client(self, *nodes: int, timeout: float = 10) -> Client:
        return Client([self.endpoint(n) for n in (nodes or range(1, self.nodes + 1))], timeout=timeout)

    def node_status(self, n: int) -> dict:
        with Client([self.endpoint(n)], timeout=3) as c:
            return c.status(self.endpoint(n))

    def contents(self, n: int) -> dict[bytes, bytes]:
        """What node n itself holds (a serializable scan: its own state machine)."""
        with Client([self.endpoint(n)], timeout=5) as c:
            return {i.key: i.value for i in c.scan(serializable=True)}

    def settle(self, *nodes: int) -> None:
        """Wait until the given nodes (default all) applied everything the leader committed."""
        leader = int(self.leader().removeprefix("node"))
        commit = self.node_status(leader)["commit_index"]
        nodes = nodes or tuple(range(1, self.nodes + 1))
        self.wait_until(lambda: all(self.node_status(n)["applied_index"] >= commit for n in nodes),
                        f"nodes {nodes} applied index {commit}")

    def wait_until(self, check, what: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, f"timed out waiting until {what}"
            time.sleep(0.1)


@pytest.fixture
def new_cluster(tmp_path):
    started: list[MaintenanceCluster] = []

    def start(nodes: int = 3) -> MaintenanceCluster:
        started.append(MaintenanceCluster(tmp_path, free_base_port(), nodes))
        return started[-1].up()

    yield start
    for cluster in started:
        take_down(cluster)
