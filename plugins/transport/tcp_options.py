"""Options of the ``tcp`` transport (``transport_options`` in the node's config file)."""
from __future__ import annotations

import dataclasses
import ssl
from dataclasses import dataclass
from typing import Any

from keyval.peer.auth import Authenticator, load_secret
from keyval.peer.codec import MAX_MESSAGE_BYTES
from keyval.errors import ConfigError

from .tcp_identity import normalise_refusal

DROP_POLICIES = ("oldest", "newest")


@dataclass(frozen=True)
class TcpOptions:
    #: File holding the cluster secret (mode 0600); every frame then carries an HMAC tag.
    secret_file: str | None = None
    #: Messages queued per peer before dropping, and their total bytes.
    queue_size: int = 4096
    queue_bytes: int = 256 * 1024 * 1024
    #: Which message a full queue drops: Raft prefers fresh news, so the oldest by default.
    queue_drop: str = "oldest"
    #: Largest frame accepted or sent; a peer announcing a larger one is disconnected.
    max_frame_bytes: int = MAX_MESSAGE_BYTES + Authenticator.TAG_SIZE
    connect_timeout: float = 5.0
    #: A peer that takes longer than this to accept buffered bytes is disconnected.
    write_timeout: float = 30.0
    #: Reconnection backoff doubles from reconnect_min up to reconnect_max, with jitter.
    reconnect_min: float = 0.05
    reconnect_max: float = 2.0
    #: Inbound connections served at once; more are refused.
    max_connections: int = 1024
    #: An inbound connection whose hello has not authenticated by then is closed.
    handshake_timeout: float = 5.0
    #: Bytes of partial frames all inbound connections together may hold (default: four
    #: max_frame_bytes). Connections not yet authenticated may hold half of it at most, so
    #: strangers cannot crowd out a member's frame; a connection that would take the total
    #: over its limit is closed.
    inbound_buffer_bytes: int | None = None
    #: Consecutive frames failing authentication or decoding before a connection is closed.
    max_bad_frames: int = 8
    #: At most one log line per kind of drop per this many seconds.
    log_interval: float = 10.0
    #: Seed of the jitter's random generator (None: from the OS).
    seed: int | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    #: With a CA, peers on both ends must present a certificate it signed (mutual TLS).
    tls_ca: str | None = None
    #: Certificates refused although tls_ca signed them (a removed member's): entries
    #: node:ID, serial:HEX or sha256:HEX (see tcp_identity). Needs tls_ca.
    tls_refused: tuple[str, ...] = ()

    @property
    def buffer_limit(self) -> int:
        return self.inbound_buffer_bytes or 4 * self.max_frame_bytes


_POSITIVE_INTS = ("queue_size", "queue_bytes", "max_frame_bytes", "max_connections", "max_bad_frames",
                  "inbound_buffer_bytes")
_POSITIVE_FLOATS = ("connect_timeout", "write_timeout", "reconnect_min", "reconnect_max", "log_interval",
                    "handshake_timeout")
_PATHS = ("secret_file", "tls_cert", "tls_key", "tls_ca")
KNOWN = tuple(f.name for f in dataclasses.fields(TcpOptions))


def parse_tcp_options(options: dict[str, Any] | None) -> TcpOptions:
    """Check ``options`` and return them typed; every problem is a one-line ``ConfigError``."""
    options = dict(options or {})
    unknown = sorted(set(map(str, options)) - set(KNOWN))
    if unknown:
        raise ConfigError(f"tcp transport: unknown option(s) {', '.join(unknown)}; known: {', '.join(KNOWN)}")
    for name in _POSITIVE_INTS:
        if name in options:
            value = options[name]
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"tcp transport: {name} must be a whole number > 0, got {value!r}")
    for name in _POSITIVE_FLOATS:
        if name in options:
            value = options[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"tcp transport: {name} must be a number > 0, got {value!r}")
            options[name] = float(value)
    for name in _PATHS:
        if options.get(name) is not None and not isinstance(options[name], str):
            raise ConfigError(f"tcp transport: {name} must be a file path, got {options[name]!r}")
    if options.get("queue_drop", "oldest") not in DROP_POLICIES:
        raise ConfigError(f"tcp transport: queue_drop must be one of {', '.join(DROP_POLICIES)}, got {options['queue_drop']!r}")
    seed = options.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ConfigError(f"tcp transport: seed must be a whole number, got {seed!r}")
    if "tls_refused" in options:
        refused = options["tls_refused"]
        if isinstance(refused, str) or not isinstance(refused, (list, tuple)):
            raise ConfigError(f"tcp transport: tls_refused must be a list, got {refused!r}")
        try:
            options["tls_refused"] = tuple(normalise_refusal(entry) for entry in refused)
        except ValueError as exc:
            raise ConfigError(f"tcp transport: tls_refused: {exc}") from None
    parsed = TcpOptions(**options)
    if parsed.inbound_buffer_bytes is not None and parsed.inbound_buffer_bytes < 2 * parsed.max_frame_bytes:
        raise ConfigError(f"tcp transport: inbound_buffer_bytes must be at least twice max_frame_bytes "
                          f"({2 * parsed.max_frame_bytes}), got {parsed.inbound_buffer_bytes}")
    if parsed.tls_refused and not parsed.tls_ca:
        raise ConfigError("tcp transport: tls_refused needs tls_ca (only mutual TLS sees the peer's certificate)")
    if parsed.reconnect_min > parsed.reconnect_max:
        raise ConfigError("tcp transport: reconnect_min must not exceed reconnect_max")
    if bool(parsed.tls_cert) != bool(parsed.tls_key):
        raise ConfigError("tcp transport: tls_cert and tls_key must be given together")
    if parsed.tls_ca and not parsed.tls_cert:
        raise ConfigError("tcp transport: tls_ca needs tls_cert and tls_key (mutual TLS presents our certificate too)")
    return parsed


def load_authenticator(opts: TcpOptions) -> Authenticator | None:
    return Authenticator(load_secret(opts.secret_file)) if opts.secret_file else None


def tls_contexts(opts: TcpOptions) -> tuple[ssl.SSLContext | None, ssl.SSLContext | None]:
    """(server, client) contexts, or (None, None) without TLS.

    Peers are dialled by address, often an IP their certificate does not name, so hostnames
    are not checked: with ``tls_ca`` the trust is "signed by the cluster's CA", on both ends.
    Without it the traffic is encrypted but the peer is not authenticated by TLS.
    """
    if not opts.tls_cert:
        return None, None
    try:
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server.load_cert_chain(opts.tls_cert, opts.tls_key)
        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        client.check_hostname = False
        client.load_cert_chain(opts.tls_cert, opts.tls_key)
        if opts.tls_ca:
            for ctx in (server, client):
                ctx.load_verify_locations(cafile=opts.tls_ca)
                ctx.verify_mode = ssl.CERT_REQUIRED
        else:
            client.verify_mode = ssl.CERT_NONE
    except (OSError, ssl.SSLError) as exc:
        files = ", ".join(p for p in (opts.tls_cert, opts.tls_key, opts.tls_ca) if p)
        raise ConfigError(f"tcp transport: cannot load TLS files ({files}): {' '.join(str(exc).split())}") from None
    return server, client
