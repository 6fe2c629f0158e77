"""Real `keyval serve` processes on loopback, for tests of the node as users run it."""
from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from keyval.client import Client
from keyval.errors import KeyvalError
from keyval.peer.secret import create_secret


def free_ports(count: int) -> list[int]:
    """Ports the kernel says are free now (bound once, then released)."""
    socks, ports = [], []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def shared_secret(base: Path) -> Path:
    """The cluster secret of the nodes under ``base`` (made on first use)."""
    path = base / "cluster.secret"
    if not path.exists():
        create_secret(path)
    return path


class NodeProcess:
    def __init__(self, node_id: str, peer: int, client: int, metrics: int, base: Path,
                 nofile: int | None = None) -> None:
        self.id = node_id
        #: RLIMIT_NOFILE (soft and hard) the process runs with; None: inherited
        self.nofile = nofile
        self.peer_addr = f"127.0.0.1:{peer}"
        self.client_addr = f"127.0.0.1:{client}"
        self.metrics_addr = f"127.0.0.1:{metrics}"
        self.data_dir = base / node_id / "data"
        self.log_file = base / node_id / "keyval.log"
        self.proc: subprocess.Popen | None = None
        #: the root of another KeyVal source tree to run this node from (an older release,
        #: extracted with `git archive`), or None for this tree; set before start()
        self.source: Path | None = None

    def start(self, bootstrap: str | None, *extra: str) -> None:
        """Start with ``extra`` flags; without --insecure-peers or --secret-file among them,
        with the cluster secret every node of this test directory shares."""
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        if "--insecure-peers" not in extra and "--secret-file" not in extra:
            extra = ("--secret-file", str(shared_secret(self.log_file.parent.parent)), *extra)
        args = [sys.executable, "-m", "keyval.cli", "serve", "--id", self.id, "--peer-addr", self.peer_addr,
                "--client-addr", self.client_addr, "--metrics-addr", self.metrics_addr,
                "--data-dir", str(self.data_dir), "--log-file", str(self.log_file), *extra]
        if bootstrap:
            args += ["--bootstrap", bootstrap]
        env, cwd = None, None
        if self.source is not None:
            # The other tree first on the path, and as the working directory: `-m` puts the
            # working directory first, and this tree's editable install comes after both.
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(
                [str(self.source), *filter(None, [os.environ.get("PYTHONPATH")])])}
            cwd = str(self.source)
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True, preexec_fn=self._limits(),
                                     env=env, cwd=cwd)

    def _limits(self):
        if self.nofile is None:
            return None
        nofile = self.nofile
        return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.running:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> int | None:
        if not self.running:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def log(self) -> str:
        return self.log_file.read_text() if self.log_file.exists() else ""


class LocalCluster:
    def __init__(self, base: Path, size: int = 3, extra: tuple[str, ...] = (), nofile: int | None = None,
                 client_options: dict | None = None) -> None:
        ports = free_ports(3 * (size + 2))
        self.base = base
        self.extra = extra
        #: what the harness's own clients pass to Client (token=..., tls=...) on a secured cluster
        self.client_options = client_options or {}
        self.nodes = {
            f"n{i + 1}": NodeProcess(f"n{i + 1}", ports[3 * i], ports[3 * i + 1], ports[3 * i + 2], base, nofile)
            for i in range(size + 2)  # two spares for nodes added later
        }
        self.initial = [f"n{i + 1}" for i in range(size)]
        self.bootstrap = ",".join(f"{n}={self.nodes[n].peer_addr}" for n in self.initial)

    def start(self, *ids: str) -> None:
        for node_id in ids or self.initial:
            self.nodes[node_id].start(self.bootstrap if node_id in self.initial else None, *self.extra)

    def endpoints(self, ids=None) -> list[str]:
        return [self.nodes[n].client_addr for n in (ids or self.initial)]

    def client(self, ids=None, timeout: float = 10.0) -> Client:
        return Client(self.endpoints(ids), timeout=timeout, **self.client_options)

    def status(self, node_id: str) -> dict | None:
        with Client([self.nodes[node_id].client_addr], timeout=2, **self.client_options) as c:
            try:
                return c.status(self.nodes[node_id].client_addr)
            except KeyvalError:
                return None

    def wait_for_leader(self, among=None, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        among = among or [n for n in self.initial if self.nodes[n].running]
        while time.monotonic() < deadline:
            leaders = set()
            for node_id in among:
                status = self.status(node_id)
                if status and status["role"] == "leader":
                    leaders.add(node_id)
            if len(leaders) == 1:
                return leaders.pop()
            time.sleep(0.2)
        raise AssertionError(f"no leader among {among} within {timeout}s:\n" + self.logs())

    def stop_all(self) -> None:
        for node in self.nodes.values():
            node.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {n.id}\n{n.log()[-3000:]}" for n in self.nodes.values() if n.log())


class BackgroundWriter:
    """Puts new keys one after another until stopped, remembering which were acknowledged
    and which were tried (an unanswered write may or may not have applied), and the errors.
    ``connect()`` makes the client it writes through."""

    def __init__(self, connect, value_bytes: int = 1000) -> None:
        self._connect = connect
        self._value_bytes = value_bytes
        self.tried: set[str] = set()
        self.acked: dict[str, bytes] = {}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self._connect() as client:
            i = 0
            while not self._stop.is_set():
                key = f"w{i:06d}"
                value = (f"value {i} ".encode() * self._value_bytes)[: self._value_bytes]
                self.tried.add(key)
                try:
                    client.put(key, value)
                    self.acked[key] = value
                except KeyvalError as exc:
                    self.errors.append(type(exc).__name__)
                i += 1

    def __enter__(self) -> "BackgroundWriter":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)
