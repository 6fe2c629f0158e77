"""The options of the ``udp`` transport (``transport_options`` in a node's config file)."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from keyval.peer.codec import MAX_MESSAGE_BYTES
from keyval.errors import ConfigError

from .udp_wire import MAX_UDP_PAYLOAD

MiB = 1024 * 1024


@dataclass(frozen=True)
class UdpOptions:
    #: Cluster secret file (mode 0600): seal every datagram with HMAC-SHA256 and reject
    #: replays. Without it peer traffic is unauthenticated.
    secret_file: str | None = None
    #: Largest datagram sent, header and tag included. The default suits loopback and LANs
    #: that pass IP fragments: fewer, larger datagrams mean far fewer system calls. Across
    #: real networks use about 1400 (fits a 1500-byte MTU): an IP-fragmented datagram is
    #: lost whole when any IP fragment is, and some firewalls drop IP fragments outright.
    max_datagram_bytes: int = 60_000
    #: Largest encoded message sent or accepted.
    max_message_bytes: int = MAX_MESSAGE_BYTES
    #: Memory held for incomplete incoming messages; the oldest are evicted beyond it.
    reassembly_bytes: int = 64 * MiB
    #: Incomplete incoming messages held at once, from all senders and from one sender; the
    #: oldest (of that sender) is dropped beyond. A leader has at most a few dozen messages
    #: in flight to one follower.
    reassembly_max_messages: int = 4096
    reassembly_max_per_sender: int = 512
    #: Incomplete incoming messages older than this (seconds) are dropped.
    reassembly_timeout: float = 10.0
    #: Datagrams waiting to be sent to one peer; a message that does not fit is dropped.
    send_queue_bytes: int = 16 * MiB
    #: Pacing per peer (bytes/s, 0 = none). There are no acks, so without pacing a large
    #: message leaves as one burst that overflows the receiver's socket buffer and is lost.
    pace_bytes_per_s: int = 256 * MiB
    #: Bytes that may leave at once before pacing applies; keep it well below the
    #: receiver's socket buffer.
    pace_burst_bytes: int = 1 * MiB
    #: SO_RCVBUF / SO_SNDBUF asked for (the kernel caps them at net.core.[rw]mem_max).
    socket_buffer_bytes: int = 4 * MiB
    #: Width of the anti-replay window, in datagrams.
    replay_window: int = 1024

    @classmethod
    def parse(cls, options: dict[str, Any]) -> "UdpOptions":
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(map(str, options)) - set(known))
        if unknown:
            raise ConfigError(f"transport_options: unknown udp option(s) {', '.join(unknown)}; "
                              f"known: {', '.join(sorted(known))}")
        values: dict[str, Any] = {}
        for name, value in options.items():
            if name == "secret_file":
                values[name] = None if value is None else str(value)
                continue
            kind = float if name == "reassembly_timeout" else int
            try:
                values[name] = kind(value)
            except (TypeError, ValueError, OverflowError):  # OverflowError: int(float('inf'))
                raise ConfigError(f"transport_options.{name}: expected a number, got {value!r}") from None
        parsed = cls(**values)
        parsed._check()
        return parsed

    def _check(self) -> None:
        if not 400 <= self.max_datagram_bytes <= MAX_UDP_PAYLOAD:
            raise ConfigError(f"transport_options.max_datagram_bytes: must be 400..{MAX_UDP_PAYLOAD}")
        if self.reassembly_bytes < self.max_message_bytes:
            raise ConfigError("transport_options.reassembly_bytes: must be at least max_message_bytes "
                              "(a message that cannot be held can never be reassembled)")
        if not 1 <= self.reassembly_max_per_sender <= self.reassembly_max_messages:
            raise ConfigError("transport_options.reassembly_max_per_sender: must be 1..reassembly_max_messages")
        for name in ("max_message_bytes", "send_queue_bytes", "replay_window", "pace_burst_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"transport_options.{name}: must be positive")
        if self.reassembly_timeout <= 0 or self.pace_bytes_per_s < 0:
            raise ConfigError("transport_options: reassembly_timeout must be > 0, pace_bytes_per_s >= 0")


def split_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` to ``(host, port)``; raises ValueError."""
    host, sep, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected HOST:PORT, got {address!r}")
    return host, int(port)


def join_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
