"""Running kvctl against real `keyval serve` processes on loopback.

Every cluster gets its own directory and its own block of ports, and is always taken down
(with a check that no node process survives), so a failing test leaves nothing behind.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from keyval.testing.ports import port_free

# Below Linux's ephemeral range (32768+), so outgoing connections don't take our ports.
PORT_RANGE = (20000, 30900)
BLOCK = 6  # ports nodeN uses for N = 1..BLOCK (peer P+N, client P+1000+N)
# The defaults of `keyval serve` (segment storage, tcp transport); override to try others,
# e.g. KVCTL_TEST_BACKENDS="--storage memory --transport udp".
BACKENDS = os.environ.get("KVCTL_TEST_BACKENDS", "").split()


def free_base_port() -> int:
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(*PORT_RANGE)
        if all(port_free(base + n) and port_free(base + 1000 + n) for n in range(1, BLOCK + 1)):
            return base
    raise RuntimeError("no free block of ports found")


def kvctl(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 40) -> subprocess.CompletedProcess:
    """Run the real kvctl (a new process each time, as a user would)."""
    environment = {k: v for k, v in os.environ.items() if k != "KVCTL_ENDPOINTS"}
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "kvctl.cli", *args], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=timeout)


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a running `keyval serve` (not some process that reused the pid)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, IndexError):
        return False
    # A zombie has exited; whoever adopted it just hasn't reaped it yet.
    return state != "Z" and b"keyval.cli\0serve" in cmdline


@dataclass
class Cluster:
    cwd: Path  # the cluster lives in cwd/.keyval, so kvctl run here finds it
    base_port: int
    nodes: int

    def kvctl(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return kvctl(*args, cwd=self.cwd, **kw)

    def endpoint(self, n: int) -> str:
        return f"127.0.0.1:{self.base_port + 1000 + n}"

    def status(self) -> list[dict]:
        return json.loads(ok(self.kvctl("local", "status", "--json")).stdout)

    def pids(self) -> list[int]:
        return [int(p.read_text()) for p in (self.cwd / ".keyval").glob("node*/keyval.pid")]

    def leader(self) -> str:
        leaders = [r["id"] for r in self.status() if r["role"] == "leader"]
        assert len(leaders) == 1, leaders
        return leaders[0]

    def up(self, *options: str) -> "Cluster":
        ok(self.kvctl("local", "up", "--nodes", str(self.nodes), "--base-port", str(self.base_port), *BACKENDS,
                      *options))
        return self


def take_down(cluster: Cluster) -> None:
    pids = set(cluster.pids())
    result = cluster.kvctl("local", "down")
    survivors = [pid for pid in pids if pid_alive(pid)]
    for pid in survivors:  # don't leak processes into the rest of the suite
        os.kill(pid, signal.SIGKILL)
    assert result.returncode == 0, result.stderr
    assert not survivors, f"`kvctl local down` left {survivors} running"
