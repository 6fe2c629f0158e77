"""The handshake of the ``tcp`` transport (protocol 2): a challenge, then a hello.

Every frame is a 4-byte big-endian length and that many bytes. A connection runs one way:
the dialling side sends Raft messages, the accepting side only ever sends the challenge::

    acceptor -> dialler, at once:   b"KN"  version:u8 (2)  nonce_a:32
    dialler  -> acceptor, first:    b"KH"  version:u8 (2)  flags:u8  nonce_d:32
                                    msgpack([node_id, listen_address, cluster_id])  [tag:32]
    dialler  -> acceptor, then:     codec message  [tag:32]        (frames 1, 2, ...)

``flags`` bit 0 says the frames are sealed (the dialler has a cluster secret). Sealed, the
connection's key is ``HMAC-SHA256(secret, b"keyval tcp 2" + nonce_a + nonce_d)`` and frame
``i`` (the hello is 0) carries ``HMAC-SHA256(key, i as 8 bytes big-endian + payload)``: the
counter is implicit, so a frame replayed, dropped or moved within a connection fails its
tag, and a recorded connection replayed against a fresh nonce fails at its hello. Each
side's fresh nonce means neither can make a key the other has used before. Without a
secret the nonces are exchanged all the same and frames carry no tag (insecure mode).

``listen_address`` is what the dialler is bound to (HOST:PORT); a wildcard host (0.0.0.0,
::) is replaced by the address the connection comes from. ``cluster_id`` is "" while the
dialler has none. Until its hello has authenticated, a connection may send nothing larger
than ``PREAUTH_FRAME_BYTES``. Within version 2 a sender may append msgpack fields, which
decoders ignore. Protocol 1 (no challenge, untagged counters) is not spoken: a dialler of
protocol 1 is closed at its first frame, and a protocol 2 dialler gets no challenge from a
protocol 1 acceptor, so it gives up after ``connect_timeout``; upgrade all nodes together.
"""
from __future__ import annotations

import msgspec

from keyval.peer.auth import Authenticator

MAGIC = b"KH"
CHALLENGE_MAGIC = b"KN"
VERSION = 2
NONCE_BYTES = 32
FLAG_SEALED = 0x01
#: magic, version, flags, nonce: the part of a hello read before its tag is checked
HEADER_BYTES = len(MAGIC) + 2 + NONCE_BYTES
CHALLENGE_BYTES = len(CHALLENGE_MAGIC) + 1 + NONCE_BYTES
#: A hello's fields are a few short strings; anything larger is not one.
MAX_HELLO_BYTES = 1024
MAX_ID_BYTES = 255
#: The largest frame accepted from a connection whose hello has not authenticated yet.
PREAUTH_FRAME_BYTES = HEADER_BYTES + MAX_HELLO_BYTES + Authenticator.TAG_SIZE
_WILDCARDS = ("0.0.0.0", "::", "")


class HelloError(Exception):
    """The frame is not a challenge or hello this node accepts."""


class Hello(msgspec.Struct, array_like=True, frozen=True):
    node_id: str
    address: str
    cluster_id: str


_DECODER = msgspec.msgpack.Decoder(Hello)
_ENCODER = msgspec.msgpack.Encoder()


def encode_challenge(nonce: bytes) -> bytes:
    return CHALLENGE_MAGIC + bytes([VERSION]) + nonce


def decode_challenge(payload: bytes) -> bytes:
    """The acceptor's nonce; raises HelloError for anything but a protocol 2 challenge."""
    if len(payload) != CHALLENGE_BYTES or payload[:len(CHALLENGE_MAGIC)] != CHALLENGE_MAGIC:
        raise HelloError("the peer did not open with a protocol 2 challenge")
    if payload[len(CHALLENGE_MAGIC)] != VERSION:
        raise HelloError(f"challenge of protocol {payload[len(CHALLENGE_MAGIC)]} (this node speaks {VERSION})")
    return bytes(payload[len(CHALLENGE_MAGIC) + 1:])


def encode_hello(nonce: bytes, sealed: bool, node_id: str, address: str, cluster_id: str) -> bytes:
    """The hello's payload, without its tag."""
    flags = FLAG_SEALED if sealed else 0
    return MAGIC + bytes([VERSION, flags]) + nonce + _ENCODER.encode(Hello(node_id, address, cluster_id))


def peek_hello(frame: bytes | memoryview) -> tuple[bool, bytes]:
    """(sealed, dialler's nonce) of a first frame, read before its tag can be checked;
    raises HelloError if the frame is no protocol 2 hello."""
    if len(frame) < HEADER_BYTES or bytes(frame[:len(MAGIC)]) != MAGIC:
        raise HelloError("the first frame is not a hello")
    version, flags = frame[len(MAGIC)], frame[len(MAGIC) + 1]
    if version != VERSION:
        raise HelloError(f"hello of protocol {version} (this node speaks {VERSION})")
    return bool(flags & FLAG_SEALED), bytes(frame[len(MAGIC) + 2:HEADER_BYTES])


def decode_hello(payload: bytes | memoryview) -> Hello:
    """The fields of a hello (its tag removed and checked); raises HelloError and nothing else."""
    peek_hello(payload)
    if len(payload) > HEADER_BYTES + MAX_HELLO_BYTES:
        raise HelloError(f"hello of {len(payload)} bytes (at most {HEADER_BYTES + MAX_HELLO_BYTES})")
    try:
        hello = _DECODER.decode(payload[HEADER_BYTES:])
        split_address(hello.address)
    except Exception as exc:  # noqa: BLE001 - whatever a peer sends is its fault, never raised
        raise HelloError(f"malformed hello: {type(exc).__name__}: {exc}") from None
    if not 0 < len(hello.node_id.encode()) <= MAX_ID_BYTES or len(hello.cluster_id.encode()) > MAX_ID_BYTES:
        raise HelloError("hello with an empty or overlong node id, or an overlong cluster id")
    return hello


def split_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[v6]:PORT`` to ``(host, port)``; raises ValueError."""
    host, sep, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {address!r}")
    return host, int(port)


def as_seen(address: str, source_host: str | None) -> str:
    """Where to reach the listener that announced ``address``, having dialled from
    ``source_host``: a wildcard bind says only the port, the connection says the host."""
    host, port = split_address(address)
    if host not in _WILDCARDS or not source_host:
        return address
    return f"[{source_host}]:{port}" if ":" in source_host else f"{source_host}:{port}"
