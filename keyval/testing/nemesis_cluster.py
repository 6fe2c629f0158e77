"""The nemesis's cluster: real ``keyval serve`` processes on loopback, and the levers on them.

Every node runs the ``faulty`` transport around tcp or udp with one control file shared by
all (``plugins/transport/faulty.py``): writing it partitions the cluster at every node's send
and receive side, so a partition is real message loss. Peers authenticate with a cluster
secret, as by default. Membership and maintenance go through ``kvctl`` run as a separate
process, as an operator runs it.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from keyval.client import AsyncClient
from keyval.errors import KeyvalError
from keyval.peer.secret import create_secret
from keyval.testing.ports import port_free

#: Below Linux's ephemeral range (32768+), as tests/kvctl's harness picks them.
PORT_RANGE = (20000, 30900)
#: how long a node may take from exec to answering on its client port
START_TIMEOUT = 30.0
STATUS_TIMEOUT = 1.0


class NodeProcess:
    """One ``keyval serve``: started, killed, paused and resumed as its own process group."""

    def __init__(self, node_id: str, peer_port: int, client_port: int, base: Path, config: Path,
                 secret: Path) -> None:
        self.id = node_id
        self.peer_addr = f"127.0.0.1:{peer_port}"
        self.client_addr = f"127.0.0.1:{client_port}"
        self.dir = base / node_id
        self.data_dir = self.dir / "data"
        self.log_file = self.dir / "keyval.log"
        self.config = config
        self.secret = secret
        self.proc: subprocess.Popen | None = None
        self.paused = False
        #: set once the cluster removed it (it shuts itself down): never started again
        self.retired = False
        #: the initial voters' --bootstrap (ignored by a node with data; None: added later)
        self.bootstrap: str | None = None

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, "-m", "keyval.cli", "serve", "--config", str(self.config), "--id", self.id,
                "--peer-addr", self.peer_addr, "--client-addr", self.client_addr,
                "--data-dir", str(self.data_dir), "--log-file", str(self.log_file),
                "--secret-file", str(self.secret)]
        if self.bootstrap:
            args += ["--bootstrap", self.bootstrap]
        stderr = open(self.dir / "stderr.log", "ab")
        try:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr,
                                         start_new_session=True)
        finally:
            stderr.close()
        self.paused = False

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _signal(self, sig: int) -> None:
        if self.running:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        """kill -9: nothing it had not fsynced survives."""
        self._signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)
        self.paused = False

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self._signal(signal.SIGCONT)
        self.paused = False

    def terminate(self, grace: float = 10.0) -> None:
        if not self.running:
            return
        self.resume()
        self._signal(signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            text = ""
        try:
            text += (self.dir / "stderr.log").read_text(errors="replace")
        except OSError:
            pass
        return "\n".join(text.splitlines()[-lines:])


class Cluster:
    """The node processes of one run under ``base``, and what the nemesis does to them."""

    def __init__(self, base: Path, transport: str, size: int) -> None:
        self.base = base
        self.size = size
        self.control = base / "faults.json"
        self.secret = base / "cluster.secret"
        self.config = base / "node.yaml"
        self.nodes: dict[str, NodeProcess] = {}
        self._next_id = 1
        self._ports: set[int] = set()
        self._port_rng = random.Random()  # ports are the machine's business, not the seed's
        base.mkdir(parents=True, exist_ok=True)
        create_secret(self.secret)
        # JSON is YAML: the config file holds what only the config file can say.
        self.config.write_text(json.dumps({
            "transport": "faulty",
            "transport_options": {"inner": transport, "control_file": str(self.control), "poll_interval": 0.05},
            # small segments, so compaction deletes files and a damaged segment is a small one
            "storage_options": {"segment_size": "1MiB"},
        }, indent=2) + "\n")
        self.set_partitions([])

    # -- processes ---------------------------------------------------------------------------
    def _free_port(self) -> int:
        for _ in range(1000):
            port = self._port_rng.randrange(*PORT_RANGE)
            if port not in self._ports and port_free(port):
                self._ports.add(port)
                return port
        raise RuntimeError(f"no free port found in {PORT_RANGE}")

    def new_node(self) -> NodeProcess:
        node_id = f"n{self._next_id}"
        self._next_id += 1
        node = NodeProcess(node_id, self._free_port(), self._free_port(), self.base, self.config, self.secret)
        self.nodes[node_id] = node
        return node

    def bootstrap(self) -> list[str]:
        """Start the initial ``size`` voters; their ids."""
        initial = [self.new_node() for _ in range(self.size)]
        spec = ",".join(f"{n.id}={n.peer_addr}" for n in initial)
        for node in initial:
            node.bootstrap = spec
            node.start()
        return [n.id for n in initial]

    def live(self) -> list[NodeProcess]:
        """Nodes not retired, by id (running or not)."""
        return sorted((n for n in self.nodes.values() if not n.retired), key=lambda n: _order(n.id))

    def endpoints(self) -> list[str]:
        return [n.client_addr for n in self.live()]

    def shutdown(self) -> None:
        for node in self.nodes.values():
            node.terminate(grace=5.0)

    def kill_all(self) -> None:
        for node in self.nodes.values():
            node.kill()

    # -- the network -------------------------------------------------------------------------
    def set_partitions(self, pairs: list[list[str]]) -> None:
        """Cut each pair both ways (nothing: heal). Atomic: no node reads half a document."""
        tmp = self.control.with_suffix(".tmp")
        tmp.write_text(json.dumps({"partitions": pairs}))
        tmp.replace(self.control)

    # -- asking the nodes --------------------------------------------------------------------
    async def status(self, node: NodeProcess) -> dict[str, Any] | None:
        if not node.running or node.paused:
            return None
        client = AsyncClient([node.client_addr], timeout=STATUS_TIMEOUT)
        try:
            return await asyncio.wait_for(client.status(node.client_addr), STATUS_TIMEOUT)
        except (KeyvalError, OSError, asyncio.TimeoutError):
            return None
        finally:
            await client.close()

    async def statuses(self) -> dict[str, dict[str, Any]]:
        nodes = [n for n in self.live() if n.running and not n.paused]
        answers = await asyncio.gather(*(self.status(n) for n in nodes))
        return {n.id: s for n, s in zip(nodes, answers) if s is not None}

    async def leader(self) -> tuple[str | None, dict[str, Any] | None]:
        """The leader of the highest term any node reports leading in, and its status."""
        leaders = [s for s in (await self.statuses()).values() if s["role"] == "leader"]
        if not leaders:
            return None, None
        best = max(leaders, key=lambda s: s["term"])
        return best["id"], best

    async def wait_started(self, node: NodeProcess, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not node.running:
                raise NodeFailed(f"{node.id} exited at start (code {node.proc.returncode}):\n{node.log_tail()}")
            if await self.status(node) is not None:
                return
            await asyncio.sleep(0.2)
        raise NodeFailed(f"{node.id} did not answer on {node.client_addr} within {timeout:g}s:\n{node.log_tail()}")

    async def kvctl(self, *args: str, timeout: float = 30.0) -> tuple[int, str]:
        """Run kvctl against the live nodes: (exit code, its output in one line)."""
        command = [sys.executable, "-m", "kvctl.cli", "--endpoints", ",".join(self.endpoints()),
                   "--timeout", f"{timeout:g}", *args]
        proc = await asyncio.create_subprocess_exec(*command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                                    stderr=subprocess.STDOUT, cwd=self.base)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout + 15)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            return -1, f"kvctl {' '.join(args)} did not finish within {timeout + 15:g}s"
        text = " | ".join(line.strip() for line in out.decode(errors="replace").splitlines() if line.strip())
        return proc.returncode, text


class NodeFailed(Exception):
    """A node process would not start or answer; the message holds its log's tail."""


def _order(node_id: str) -> tuple[int, str]:
    digits = node_id.lstrip("n")
    return (int(digits), node_id) if digits.isdigit() else (1 << 30, node_id)
