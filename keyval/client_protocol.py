"""The client protocol: what kvctl and ``keyval.client`` say to a node's client address.

Frames: a 4-byte big-endian length, then a msgpack ``Envelope`` (protocol version, request
id, body). Requests are pipelined: a client may send many before reading, and responses come
back in completion order, matched by id. Bodies are tagged arrays, so a new request type is
an addition a node of the previous version answers with ``Error("unknown_request")``.
"""
from __future__ import annotations

import asyncio
from typing import Any, Union

import msgspec

PROTOCOL_VERSION = 1
MAX_FRAME = 8 << 20
#: Error codes a client acts on.
NOT_LEADER = "not_leader"  # retry at `leader_address` (or elsewhere if empty)
NO_LEADER = "no_leader"  # retry shortly
TIMEOUT = "timeout"
INVALID = "invalid"  # the request itself is wrong: do not retry
REFUSED = "refused"  # a well-formed request the cluster will not do (reason in message)
UNKNOWN_REQUEST = "unknown_request"
UNAVAILABLE = "unavailable"  # e.g. the node is shutting down or uninitialised
#: no token, an unknown one, or a role too low: always with exactly DENIED_MESSAGE
PERMISSION_DENIED = "permission_denied"
DENIED_MESSAGE = "permission denied"


class Body(msgspec.Struct, array_like=True, tag=True, omit_defaults=True):
    pass


# -- requests ---------------------------------------------------------------------------
class Put(Body, tag="put"):
    key: bytes
    value: bytes
    expect_revision: int = -1
    #: (client, seq) identify a write for deduplication; `acked`: every seq of this client
    #: below it has been answered, so the cluster may forget those answers.
    client: str = ""
    seq: int = 0
    acked: int = 0


class Delete(Body, tag="delete"):
    key: bytes
    expect_revision: int = -1
    client: str = ""
    seq: int = 0
    acked: int = 0


class Get(Body, tag="get"):
    key: bytes
    #: False (default): linearizable. True: served from this node's state, possibly stale.
    serializable: bool = False


class Scan(Body, tag="scan"):
    prefix: bytes = b""
    limit: int = 0
    serializable: bool = False


class Status(Body, tag="status"):
    pass


class RegisterClientAddress(Body, tag="register"):
    """A member tells the leader the client address it serves, so every node can show it."""

    node: str
    address: str


class Authenticate(Body, tag="auth"):
    """Present a token (or a node's credential); the connection keeps its role until closed."""

    token: str


class Admin(Body, tag="admin"):
    """A cluster operation (membership, transfer, snapshots...): ``op`` names it."""

    op: str
    args: dict[str, Any] = {}


# -- responses --------------------------------------------------------------------------
class WriteReply(Body, tag="write"):
    ok: bool
    revision: int
    current_revision: int = 0
    existed: bool = False
    error: str = ""


class GetReply(Body, tag="value"):
    found: bool
    value: bytes = b""
    revision: int = 0
    create_revision: int = 0


class ScanReply(Body, tag="items"):
    #: (key, value, mod_revision)
    items: list[tuple[bytes, bytes, int]]
    revision: int = 0


class StatusReply(Body, tag="status_reply"):
    status: dict[str, Any]


class AdminReply(Body, tag="admin_reply"):
    result: dict[str, Any]


class AuthReply(Body, tag="auth_reply"):
    role: str


class Error(Body, tag="error"):
    code: str
    message: str
    leader: str = ""
    leader_address: str = ""


RequestBody = Union[Put, Delete, Get, Scan, Status, RegisterClientAddress, Admin, Authenticate]
ResponseBody = Union[WriteReply, GetReply, ScanReply, StatusReply, AdminReply, AuthReply, Error]


REQUEST_TAGS = frozenset(t.__struct_config__.tag for t in RequestBody.__args__)


class Request(msgspec.Struct, array_like=True):
    version: int
    id: int
    body: RequestBody


class Response(msgspec.Struct, array_like=True):
    version: int
    id: int
    body: ResponseBody


class ProtocolError(Exception):
    pass


_request_decoder = msgspec.msgpack.Decoder(Request)
_response_decoder = msgspec.msgpack.Decoder(Response)
_encoder = msgspec.msgpack.Encoder()


def frame(message: Request | Response) -> bytes:
    payload = _encoder.encode(message)
    return len(payload).to_bytes(4, "big") + payload


def decode_request(payload: bytes) -> Request:
    """Raises ProtocolError for anything that is not a well-formed request."""
    try:
        return _request_decoder.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ProtocolError(str(exc)) from None


def decode_response(payload: bytes) -> Response:
    try:
        return _response_decoder.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ProtocolError(str(exc)) from None


def bad_request_code(payload: bytes) -> str:
    """``unknown_request`` for a well-framed request of a type this node does not know (a
    newer client), else ``invalid``."""
    try:
        raw = msgspec.msgpack.decode(payload)
    except (msgspec.DecodeError, RecursionError):
        return INVALID
    if isinstance(raw, list) and len(raw) == 3 and isinstance(raw[2], list) and raw[2]:
        tag = raw[2][0]
        if isinstance(tag, str) and tag not in REQUEST_TAGS:
            return UNKNOWN_REQUEST
    return INVALID


def request_id_of(payload: bytes) -> int:
    """Best effort: the id of a request we could not decode, so the error can be matched."""
    try:
        raw = msgspec.msgpack.decode(payload)
        if isinstance(raw, list) and len(raw) >= 2 and isinstance(raw[1], int):
            return raw[1]
    except (msgspec.DecodeError, RecursionError):
        pass
    return 0


async def read_frame(reader, max_frame: int = MAX_FRAME) -> bytes | None:
    """The next frame's payload; None at a clean end of stream. Raises ProtocolError on an
    oversized frame (the stream cannot be resynchronised after that)."""
    try:
        header = await reader.readexactly(4)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise ProtocolError("stream ended inside a frame header") from None
        return None
    size = int.from_bytes(header, "big")
    if size > max_frame:
        raise ProtocolError(f"frame of {size} bytes exceeds the limit of {max_frame}")
    try:
        return await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        raise ProtocolError("stream ended inside a frame") from None
