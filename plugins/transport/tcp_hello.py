"""The hello frame of the ``tcp`` transport: who dials, where it listens, which cluster.

The source port of an inbound connection is ephemeral, so the accepting side could not
answer a peer it knows no address for (a node being added knows none for its leader). The
dialling side therefore makes the first frame of every connection it opens a hello, framed
like every frame (4-byte big-endian length) and, with a cluster secret, HMAC-sealed like
every frame::

    b"KH"  version:u8 (1)  msgpack([node_id, listen_address, cluster_id])

``listen_address`` is what the dialler is bound to (HOST:PORT); a wildcard host (0.0.0.0,
::) is replaced by the address the connection comes from. ``cluster_id`` is "" while the
dialler has none. The accepting side records node_id -> listen_address unless it has a
cluster id and the hello names another one.

Compatibility: "KH" is not the codec's "KV" magic, so a receiver that predates the hello
drops it as undecodable (one ``dropped_decode``, one bad frame, reset by the next good one)
and goes on reading the connection's messages. A connection without a hello (a dialler that
predates it) is served as before; no address is learned from it. Only the first frame may
be a hello. Within version 1 a sender may append fields, which decoders ignore; a hello of
another version is dropped and counted, and the connection kept.
"""
from __future__ import annotations

import msgspec

from .tcp_peer import split_address

MAGIC = b"KH"
VERSION = 1
#: A hello is a few short strings; anything larger is not one.
MAX_HELLO_BYTES = 1024
MAX_ID_BYTES = 255
_WILDCARDS = ("0.0.0.0", "::", "")


class HelloError(Exception):
    """The frame starts like a hello but is not one this node accepts."""


class Hello(msgspec.Struct, array_like=True, frozen=True):
    node_id: str
    address: str
    cluster_id: str


_DECODER = msgspec.msgpack.Decoder(Hello)
_ENCODER = msgspec.msgpack.Encoder()


def is_hello(payload: bytes | memoryview) -> bool:
    return bytes(payload[:len(MAGIC)]) == MAGIC


def encode_hello(node_id: str, address: str, cluster_id: str) -> bytes:
    return MAGIC + bytes([VERSION]) + _ENCODER.encode(Hello(node_id, address, cluster_id))


def decode_hello(payload: bytes | memoryview) -> Hello:
    """The hello in ``payload`` (already authenticated); raises HelloError and nothing else."""
    if len(payload) > MAX_HELLO_BYTES:
        raise HelloError(f"hello of {len(payload)} bytes (at most {MAX_HELLO_BYTES})")
    if len(payload) <= len(MAGIC) or not is_hello(payload):
        raise HelloError("not a hello")
    version = payload[len(MAGIC)]
    if version != VERSION:
        raise HelloError(f"hello version {version} not understood (understands {VERSION})")
    try:
        hello = _DECODER.decode(payload[len(MAGIC) + 1:])
        split_address(hello.address)
    except Exception as exc:  # noqa: BLE001 - whatever a peer sends is its fault, never raised
        raise HelloError(f"malformed hello: {type(exc).__name__}: {exc}") from None
    if not 0 < len(hello.node_id.encode()) <= MAX_ID_BYTES or len(hello.cluster_id.encode()) > MAX_ID_BYTES:
        raise HelloError("hello with an empty or overlong node id, or an overlong cluster id")
    return hello


def as_seen(address: str, source_host: str | None) -> str:
    """Where to reach the listener that announced ``address``, having dialled from
    ``source_host``: a wildcard bind says only the port, the connection says the host."""
    host, port = split_address(address)
    if host not in _WILDCARDS or not source_host:
        return address
    return f"[{source_host}]:{port}" if ":" in source_host else f"{source_host}:{port}"
