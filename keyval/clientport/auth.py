"""Who may do what on the client port: tokens with roles, and the nodes' own credential.

A client presents a token once per connection (``Authenticate``); the connection then has
that token's role. Roles are ranked: ``read`` < ``readwrite`` < ``admin`` < ``node``. Only
nodes hold ``node``: a credential derived from the cluster secret, needed to register a
client address (what followers redirect clients to, so it must come from the cluster).

Without a tokens file every connection starts as ``admin`` (the client port is open, as it
was before tokens existed); registration still needs the node credential whenever the node
has a cluster secret. Every refusal reads "permission denied" and nothing more: it must not
tell a guesser whether a token exists or what role it has.

The tokens file holds one ``ROLE NAME SHA256-OF-TOKEN`` a line (``#`` starts a comment), so
a copy of the file gives away no token. It must be readable by its owner only.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import re
import ssl
import time
from dataclasses import dataclass
from enum import IntEnum

from prometheus_client import CollectorRegistry, Counter

from keyval.client import protocol as p
from keyval.client import tls
from keyval.peer.auth import load_secret, read_owner_only
from keyval.client import AsyncClient
from keyval.config import NodeConfig
from keyval.errors import ConfigError

log = logging.getLogger("keyval.client_auth")

#: the node credential is HMAC-SHA256(cluster secret, this): a fixed purpose label, so the
#: credential is useless for anything else the secret keys (peer message tags)
NODE_CREDENTIAL_LABEL = b"keyval node credential v1"
#: a presented token longer than this is refused unhashed
MAX_TOKEN_LENGTH = 1024
#: denials are logged at most once per this many seconds (a guesser must not flood the log)
DENIAL_LOG_INTERVAL = 10.0
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
TOKEN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


class Role(IntEnum):
    NONE = 0
    READ = 1
    READWRITE = 2
    ADMIN = 3
    NODE = 4


#: the roles a tokens file may grant (``node`` comes only from the cluster secret)
FILE_ROLES = {"read": Role.READ, "readwrite": Role.READWRITE, "admin": Role.ADMIN}
#: cluster operations a ``read`` token may run: they show state and change nothing. Every
#: other operation (membership, transfer, snapshots, compaction, backup, restore, the
#: nodes' own ``removal_check`` and ``introduce``) needs ``admin``.
READ_OPERATIONS = frozenset({"cluster_status", "cluster_health", "membership", "snapshot_list"})
_REQUIRED = {p.Get: Role.READ, p.Scan: Role.READ, p.Status: Role.READ,
             p.Put: Role.READWRITE, p.Delete: Role.READWRITE, p.RegisterClientAddress: Role.NODE}


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def node_credential(secret: bytes) -> str:
    return hmac.new(secret, NODE_CREDENTIAL_LABEL, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class TokenEntry:
    role: Role
    name: str


def load_tokens(path: str) -> dict[str, TokenEntry]:
    """{sha256 hex of token: entry} from a tokens file; one-line ConfigError naming the line."""
    raw = read_owner_only(path, "tokens_file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"tokens_file {path!r} is not UTF-8 text") from None
    tokens: dict[str, TokenEntry] = {}
    names: set[str] = set()
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        where = f"tokens_file {path!r} line {number}"
        if len(fields) != 3:
            raise ConfigError(f"{where}: expected ROLE NAME SHA256-OF-TOKEN, got {len(fields)} field(s)")
        role, name, digest = fields
        if role not in FILE_ROLES:
            raise ConfigError(f"{where}: role {role!r} is not one of {', '.join(FILE_ROLES)}")
        if not TOKEN_NAME.match(name):
            raise ConfigError(f"{where}: name {name!r} must be 1-64 letters, digits, '.', '_', '@' or '-'")
        digest = digest.lower()
        if not SHA256_HEX.match(digest):
            raise ConfigError(f"{where}: {digest[:16]!r}... is not a SHA-256 hex digest (64 hex digits; "
                              f"make one with `printf %s TOKEN | sha256sum`)")
        if name in names:
            raise ConfigError(f"{where}: name {name!r} is used twice")
        if digest in tokens:
            raise ConfigError(f"{where}: the same token is listed twice")
        names.add(name)
        tokens[digest] = TokenEntry(FILE_ROLES[role], name)
    if not tokens:
        raise ConfigError(f"tokens_file {path!r} lists no token (one ROLE NAME SHA256-OF-TOKEN a line)")
    return tokens


class Session:
    """One connection's standing: the role its token (or the open port) gave it."""

    __slots__ = ("role", "name")

    def __init__(self, role: Role) -> None:
        self.role = role
        self.name = ""


class ClientGate:
    """Checks each request of a connection against the role the connection holds."""

    def __init__(self, tokens: dict[str, TokenEntry] | None, node_token: str | None,
                 registry: CollectorRegistry | None = None, node_id: str = "") -> None:
        self.tokens = tokens
        self._node_hash = bytes.fromhex(token_hash(node_token)) if node_token else None
        self.node_id = node_id
        self._default = Role.NONE if tokens is not None else Role.ADMIN
        self._counter = Counter("keyval_client_auth", "Client-port authentication outcomes",
                                ["outcome"], registry=registry)
        self._outcomes = {o: self._counter.labels(o) for o in ("accepted", "denied")}
        self._next_log = 0.0
        self._unlogged = 0

    @property
    def open_registration(self) -> bool:
        """No cluster secret, so no node credential: anyone may register (as before)."""
        return self._node_hash is None

    def session(self) -> Session:
        return Session(self._default)

    def screen(self, session: Session, body) -> object | None:
        """None if ``session`` may go on with ``body``; else the reply to send instead."""
        if isinstance(body, p.Authenticate):
            return self._authenticate(session, body.token)
        required = _REQUIRED.get(type(body))
        if required is None:  # Admin, or a type added later: admin unless a read-only operation
            required = Role.READ if isinstance(body, p.Admin) and body.op in READ_OPERATIONS else Role.ADMIN
        if required is Role.NODE and self.open_registration:
            required = Role.NONE  # documented fallback: without a secret, registration is as before
        if session.role >= required:
            return None
        return self._deny(f"{type(body).__name__} needs {required.name.lower()}, connection has "
                          f"{session.role.name.lower()}{' (' + session.name + ')' if session.name else ''}")

    def _authenticate(self, session: Session, token: object) -> object:
        session.role, session.name = self._default, ""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
            return self._deny("malformed token")
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        # compare_digest: the node credential's check must not leak how much of it matched.
        if self._node_hash is not None and hmac.compare_digest(digest, self._node_hash):
            session.role, session.name = Role.NODE, "node"
        elif self.tokens is not None:
            # A dict lookup by hash: a guess's timing reveals at most its hash's prefix.
            entry = self.tokens.get(digest.hex())
            if entry is None:
                return self._deny("unknown token")
            session.role, session.name = entry.role, entry.name
        self._outcomes["accepted"].inc()
        return p.AuthReply(session.role.name.lower())

    def _deny(self, why: str) -> p.Error:
        self._outcomes["denied"].inc()
        self._unlogged += 1
        now = time.monotonic()
        if now >= self._next_log:
            log.warning("node %s: client request refused: %s (%d refusal(s) since the last line)",
                        self.node_id, why, self._unlogged)
            self._unlogged = 0
            self._next_log = now + DENIAL_LOG_INTERVAL
        return p.Error(p.PERMISSION_DENIED, p.DENIED_MESSAGE)


class NodeCaller:
    """How a node calls its peers' client ports (registration, the removal watch): with the
    node credential, and over TLS checked against ``client_ca`` when the port serves TLS."""

    def __init__(self, token: str | None, tls: ssl.SSLContext | None) -> None:
        self.token = token
        self.tls = tls

    def client(self, addresses: list[str], timeout: float) -> AsyncClient:
        return AsyncClient(addresses, timeout=timeout, token=self.token, tls=self.tls)


@dataclass
class ClientSecurity:
    """What ``keyval serve`` needs for its client port, read from the config's files once."""

    gate: ClientGate
    server_tls: ssl.SSLContext | None
    caller: NodeCaller

    def warn_if_open(self, address: str) -> None:
        """Once, when the node serves: what anyone who reaches the client port may do."""
        if self.gate.tokens is None:
            log.warning("node %s: no tokens_file: any client that reaches %s may read, write and change "
                        "the cluster (see docs/security.md)", self.gate.node_id, address)
        if self.gate.open_registration:
            log.warning("node %s: no cluster secret, so no node credential: any client may register a "
                        "member's client address", self.gate.node_id)

    @classmethod
    def from_config(cls, config: NodeConfig, registry: CollectorRegistry | None) -> "ClientSecurity":
        secret = load_secret(config.secret_file) if config.secret_file else None
        node_token = node_credential(secret) if secret else None
        tokens = load_tokens(config.tokens_file) if config.tokens_file else None
        server_tls = outgoing = None
        if config.client_cert:
            server_tls = tls.server_context(config.client_cert, config.client_key, config.client_ca)
            # Present our certificate only where peers demand one (they then share our CA).
            mine = (config.client_cert, config.client_key) if config.client_ca else (None, None)
            outgoing = tls.client_context(config.client_ca, *mine, what=("client_ca", "client_cert", "client_key"))
        return cls(ClientGate(tokens, node_token, registry, config.id), server_tls, NodeCaller(node_token, outgoing))
