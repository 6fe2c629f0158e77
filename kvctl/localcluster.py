"""The files of a local dev cluster and the processes behind them.

Layout of the cluster dir (``./.keyval`` by default)::

    cluster.json        what was started: nodes, ports, storage and transport
    cluster.secret      the secret every node authenticates its peer traffic with (0600)
    endpoints           the nodes' client addresses, one a line (kvctl reads it when run here)
    nodeN/data/         the node's data dir
    nodeN/keyval.log    its log (stdout and stderr too, so a startup error lands here)
    nodeN/keyval.pid    its pid while kvctl believes it runs (only `local stop`/`down` remove it)

and with ``--secure`` (TLS and tokens on the client ports; kvctl run here uses them)::

    tls/ca.pem, ca.key  the dev CA; tls/nodeN.pem|key each node's certificate, tls/kvctl.pem|key kvctl's
    tokens/ROLE         the token of each role (admin, readwrite, read), 0600
    tokens.sha256       the nodes' tokens file (hashes only)

nodeN always listens on base port + N (peer) and base port + 1000 + N (client), so a node
added later (``kvctl local start node4``) has predictable addresses.
"""
from __future__ import annotations

import json
import re
import socket
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from keyval.errors import ConfigError
from kvctl import processes
from kvctl.output import Failure

FORMAT = 1
HOST = "127.0.0.1"
NODE_NAME = re.compile(r"^node([1-9][0-9]*)$")
DEFAULT_STORAGE = "segment"  # `keyval serve`'s defaults
DEFAULT_TRANSPORT = "tcp"


@dataclass
class NodeSpec:
    id: str
    peer_address: str
    client_address: str
    #: one of the voters the cluster was bootstrapped with (a later node joins uninitialised)
    initial: bool


@dataclass
class ClusterSpec:
    base_port: int
    storage: str = DEFAULT_STORAGE
    transport: str = DEFAULT_TRANSPORT
    nodes: dict[str, NodeSpec] = field(default_factory=dict)
    format: int = FORMAT
    #: nodes run with --insecure-peers instead of the cluster secret (benchmarks compare both)
    insecure_peers: bool = False
    #: TLS and tokens on the client ports (``local up --secure``)
    secure: bool = False

    @classmethod
    def new(cls, count: int, base_port: int, storage: str, transport: str, secure: bool = False) -> "ClusterSpec":
        spec = cls(base_port, storage, transport, secure=secure)
        for n in range(1, count + 1):
            spec.add(f"node{n}", initial=True)
        return spec

    def add(self, node_id: str, initial: bool) -> NodeSpec:
        match = NODE_NAME.match(node_id)
        if match is None:
            raise Failure(f"a local node's id is nodeN (its ports follow from N), not {node_id!r}", 2, "usage")
        n = int(match.group(1))
        peer, client = self.base_port + n, self.base_port + 1000 + n
        if client > 65535:
            raise Failure(f"{node_id} would need port {client}, above 65535; use a lower --base-port", 2, "usage")
        node = self.nodes[node_id] = NodeSpec(node_id, f"{HOST}:{peer}", f"{HOST}:{client}", initial)
        return node

    def bootstrap(self) -> str:
        return ",".join(f"{n.id}={n.peer_address}" for n in self.nodes.values() if n.initial)

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "nodes": [asdict(n) for n in self.nodes.values()]}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "ClusterSpec":
        doc = json.loads(text)
        nodes = [NodeSpec(**n) for n in doc.pop("nodes")]
        return cls(**doc, nodes={n.id: n for n in nodes})


class LocalCluster:
    def __init__(self, root: str | Path) -> None:
        self.shown = str(root)  # as the user typed it, for messages
        # Resolved: nodes are started with real paths, so a cluster dir reached through a
        # symlink (./.keyval -> /tmp/x) still recognises its nodes' command lines.
        self.root = Path(root).resolve()
        self._unresolved = Path(root).absolute()
        self.cluster_file = self.root / "cluster.json"
        self.endpoints_file = self.root / "endpoints"
        self.secret_file = self.root / "cluster.secret"
        self.tls_ca = self.root / "tls" / "ca.pem"
        self.tokens_file = self.root / "tokens.sha256"

    # -- files -------------------------------------------------------------------------
    def node_dir(self, node_id: str) -> Path:
        return self.root / node_id

    def data_dir(self, node_id: str) -> Path:
        return self.node_dir(node_id) / "data"

    def log_file(self, node_id: str) -> Path:
        return self.node_dir(node_id) / "keyval.log"

    def pid_file(self, node_id: str) -> Path:
        return self.node_dir(node_id) / "keyval.pid"

    def cert_file(self, name: str) -> Path:
        return self.root / "tls" / f"{name}.pem"

    def key_file(self, name: str) -> Path:
        return self.root / "tls" / f"{name}.key"

    def token_file(self, role: str) -> Path:
        return self.root / "tokens" / role

    def shown_log(self, node_id: str) -> str:
        return str(Path(self.shown) / node_id / "keyval.log")

    def load(self) -> ClusterSpec | None:
        try:
            return ClusterSpec.from_json(self.cluster_file.read_text())
        except FileNotFoundError:
            return None
        except (ValueError, TypeError, KeyError) as exc:
            raise Failure(f"{self.shown}/cluster.json is unreadable ({exc}); remove {self.shown} to start over") from None

    def require(self) -> ClusterSpec:
        spec = self.load()
        if spec is None:
            raise Failure(f"no local cluster in {self.shown}; start one with `kvctl local up`")
        return spec

    def save(self, spec: ClusterSpec) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        _write_atomically(self.cluster_file, spec.to_json())
        _write_atomically(self.endpoints_file, "".join(f"{n.client_address}\n" for n in spec.nodes.values()))

    def cluster_secret(self) -> Path:
        """The dev cluster's one secret, made on first use (a cluster made before secrets
        existed gets one too: every node is started with the same file)."""
        if not self.secret_file.exists():
            # Here, not at the top: the data commands read this module, and the secret's
            # module brings the node's config (yaml) with it.
            from keyval.peer.secret import create_secret

            self.root.mkdir(parents=True, exist_ok=True)
            try:
                create_secret(self.secret_file)
            except ConfigError as exc:
                raise Failure(str(exc)) from None
        return self.secret_file

    # -- processes ---------------------------------------------------------------------
    def marker(self, node_id: str) -> tuple[str, ...]:
        """What the node's command line contains: its data dir as kvctl passes it (resolved),
        or as an older kvctl passed it through a symlinked cluster dir (unresolved).
        Every argv element ends in a NUL, shown as a space: the trailing space makes node1's
        marker not match node10's data dir."""
        dirs = dict.fromkeys([self.data_dir(node_id), self._unresolved / node_id / "data"])
        return tuple(f"--data-dir {d} " for d in dirs)

    def pid(self, node_id: str) -> int | None:
        """The node's pid if it runs. Only looks: a stale pid file stays (``stop`` removes
        it, ``start`` replaces it), so read-only commands never remove one."""
        path = self.pid_file(node_id)
        try:
            pid = int(path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if processes.alive(pid, self.marker(node_id)) else None

    def running(self, spec: ClusterSpec) -> dict[str, int]:
        return {node_id: pid for node_id in spec.nodes if (pid := self.pid(node_id)) is not None}

    def start(self, spec: ClusterSpec, node: NodeSpec) -> subprocess.Popen:
        check_ports_free(node, spec.transport)
        self.data_dir(node.id).mkdir(parents=True, exist_ok=True)
        argv = [
            "serve", "--id", node.id, "--peer-addr", node.peer_address, "--client-addr", node.client_address,
            "--data-dir", str(self.data_dir(node.id)), "--log-file", str(self.log_file(node.id)),
            "--storage", spec.storage, "--transport", spec.transport,
            *(["--insecure-peers"] if spec.insecure_peers else ["--secret-file", str(self.cluster_secret())]),
        ]
        if node.initial:
            # A node with data ignores it and resumes, so a restart may pass it again.
            argv += ["--bootstrap", spec.bootstrap()]
        if spec.secure:
            from kvctl import secure_files  # cryptography: only for the nodes of a secure cluster

            secure_files.ensure_node(self, node.id)
            argv += ["--tokens-file", str(self.tokens_file),
                     "--client-cert", str(self.cert_file(node.id)), "--client-key", str(self.key_file(node.id)),
                     "--client-ca", str(self.tls_ca)]
        proc = processes.spawn(argv, self.log_file(node.id), self.node_dir(node.id))
        _write_atomically(self.pid_file(node.id), f"{proc.pid}\n")
        return proc

    def stop(self, node_ids: list[str], grace: float = processes.STOP_GRACE) -> dict[str, tuple[int, str]]:
        """Stop the given nodes that run; returns {id: (pid, "stopped" | "killed")}."""
        pids = {node_id: pid for node_id in node_ids if (pid := self.pid(node_id)) is not None}
        outcome = processes.terminate({pid: self.marker(node_id) for node_id, pid in pids.items()}, grace)
        for node_id in node_ids:  # the running ones just stopped, and any stale file
            self.pid_file(node_id).unlink(missing_ok=True)
        return {node_id: (pid, outcome.get(pid, "stopped")) for node_id, pid in pids.items()}

    def last_log_line(self, node_id: str) -> str:
        try:
            lines = self.log_file(node_id).read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return next((line.strip() for line in reversed(lines) if line.strip()), "")


def check_ports_free(node: NodeSpec, transport: str) -> None:
    checks = [(node.client_address, socket.SOCK_STREAM, "client")]
    if transport in ("tcp", "udp"):
        kind = socket.SOCK_STREAM if transport == "tcp" else socket.SOCK_DGRAM
        checks.append((node.peer_address, kind, "peer"))
    for address, kind, role in checks:
        host, _, port = address.rpartition(":")
        with socket.socket(socket.AF_INET, kind) as sock:
            if kind == socket.SOCK_STREAM:
                # As the node does: a port in TIME_WAIT from a previous run is free to reuse.
                # (Not for UDP, where it would let two sockets share a port.)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, int(port)))
            except OSError:
                raise Failure(f"port {port} ({node.id}'s {role} address) is in use; stop what uses it "
                              f"or choose other ports with --base-port") from None


def _write_atomically(path: Path, content: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(content)
    tmp.replace(path)
