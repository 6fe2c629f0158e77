"""The client protocol: what kvctl and ``keyval.client`` say to a node's client address.

Frames: a 4-byte big-endian length, then a msgpack ``Envelope`` (protocol version, request
id, body). Requests are pipelined: a client may send many before reading, and responses come
back in completion order, matched by id. Bodies are tagged arrays, so a new request type is
an addition a node of the previous version answers with ``Error("unknown_request")``.
"""
from __future__ import annotations

import asyncio
from typing import Annotated, Any, Union

import msgspec

PROTOCOL_VERSION = 1
MAX_FRAME = 8 << 20

# Bounds checked at decode: a value outside them is a ProtocolError (answered ``invalid``), so
# it never reaches the log, the disk or an encoder. Numbers must fit the int64 the node stores.
INT64_MAX = 2**63 - 1
MAX_CLIENT_ID_BYTES = 128
MAX_NODE_ID_CHARS = 128
MAX_ADDRESS_CHARS = 256
MAX_OP_CHARS = 64
#: Admin arguments and replies' documents: nesting depth and number of values in all
MAX_NESTING = 8
MAX_DOCUMENT_VALUES = 100_000
MAX_MESSAGE_CHARS = 64 << 10

Count = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]
Revision = Annotated[int, msgspec.Meta(ge=-1, le=INT64_MAX)]  # -1: no condition
Blob = Annotated[bytes, msgspec.Meta(max_length=MAX_FRAME)]
ClientId = Annotated[str, msgspec.Meta(max_length=MAX_CLIENT_ID_BYTES)]
NodeName = Annotated[str, msgspec.Meta(max_length=MAX_NODE_ID_CHARS)]
Address = Annotated[str, msgspec.Meta(max_length=MAX_ADDRESS_CHARS)]
Text = Annotated[str, msgspec.Meta(max_length=MAX_MESSAGE_CHARS)]
#: Error codes a client acts on.
NOT_LEADER = "not_leader"  # retry at `leader_address` (or elsewhere if empty)
NO_LEADER = "no_leader"  # retry shortly
TIMEOUT = "timeout"
INVALID = "invalid"  # the request itself is wrong: do not retry
REFUSED = "refused"  # a well-formed request the cluster will not do (reason in message)
UNKNOWN_REQUEST = "unknown_request"
UNAVAILABLE = "unavailable"  # e.g. the node is shutting down or uninitialised
NO_SPACE = "no_space"  # the leader's NOSPACE alarm is raised: writes refused until space is freed
#: no token, an unknown one, or a role too low: always with exactly DENIED_MESSAGE
PERMISSION_DENIED = "permission_denied"
DENIED_MESSAGE = "permission denied"


class Body(msgspec.Struct, array_like=True, tag=True, omit_defaults=True):
    pass


# -- requests ---------------------------------------------------------------------------
class Put(Body, tag="put"):
    key: Blob
    value: Blob
    expect_revision: Revision = -1
    #: (client, seq) identify a write for deduplication; `acked`: every seq of this client
    #: below it has been answered, so the cluster may forget those answers.
    client: ClientId = ""
    seq: Count = 0
    acked: Count = 0

    def __post_init__(self) -> None:
        _check_client(self.client)


class Delete(Body, tag="delete"):
    key: Blob
    expect_revision: Revision = -1
    client: ClientId = ""
    seq: Count = 0
    acked: Count = 0

    def __post_init__(self) -> None:
        _check_client(self.client)


class Get(Body, tag="get"):
    key: Blob
    #: False (default): linearizable. True: served from this node's state, possibly stale.
    serializable: bool = False


class Scan(Body, tag="scan"):
    prefix: Blob = b""
    limit: Count = 0
    serializable: bool = False


class Status(Body, tag="status"):
    pass


class RegisterClientAddress(Body, tag="register"):
    """A member tells the leader the client address it serves, so every node can show it."""

    node: NodeName
    address: Address


class Authenticate(Body, tag="auth"):
    """Present a token (or a node's credential); the connection keeps its role until closed."""

    token: str


class Admin(Body, tag="admin"):
    """A cluster operation (membership, transfer, snapshots...): ``op`` names it."""

    op: Annotated[str, msgspec.Meta(max_length=MAX_OP_CHARS)]
    args: dict[str, Any] = {}

    def __post_init__(self) -> None:
        check_document(self.args)


# -- responses --------------------------------------------------------------------------
class WriteReply(Body, tag="write"):
    ok: bool
    revision: Count
    current_revision: Count = 0
    existed: bool = False
    error: Text = ""


class GetReply(Body, tag="value"):
    found: bool
    value: Blob = b""
    revision: Count = 0
    create_revision: Count = 0


class ScanReply(Body, tag="items"):
    #: (key, value, mod_revision)
    items: list[tuple[Blob, Blob, Count]]
    revision: Count = 0


class StatusReply(Body, tag="status_reply"):
    status: dict[str, Any]

    def __post_init__(self) -> None:
        check_document(self.status)


class AdminReply(Body, tag="admin_reply"):
    result: dict[str, Any]

    def __post_init__(self) -> None:
        check_document(self.result)


class AuthReply(Body, tag="auth_reply"):
    role: str


class Error(Body, tag="error"):
    code: Annotated[str, msgspec.Meta(max_length=MAX_OP_CHARS)]
    message: Text
    leader: NodeName = ""
    leader_address: Address = ""


RequestBody = Union[Put, Delete, Get, Scan, Status, RegisterClientAddress, Admin, Authenticate]
ResponseBody = Union[WriteReply, GetReply, ScanReply, StatusReply, AdminReply, AuthReply, Error]


REQUEST_TAGS = frozenset(t.__struct_config__.tag for t in RequestBody.__args__)


class Request(msgspec.Struct, array_like=True):
    version: Count
    id: Count
    body: RequestBody


class Response(msgspec.Struct, array_like=True):
    version: Count
    id: Count
    body: ResponseBody


class ProtocolError(Exception):
    pass


def _check_client(client: str) -> None:
    if len(client.encode()) > MAX_CLIENT_ID_BYTES:
        raise ValueError(f"client id longer than {MAX_CLIENT_ID_BYTES} bytes")


def check_document(doc: Any) -> None:
    """A free-form map (admin arguments, status) is at most MAX_NESTING deep and holds at
    most MAX_DOCUMENT_VALUES values. Raises ValueError (msgspec makes it a decode error)."""
    budget = MAX_DOCUMENT_VALUES
    stack = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > MAX_NESTING:
                raise ValueError(f"nested deeper than {MAX_NESTING} levels")
            children = [*value.keys(), *value.values()] if isinstance(value, dict) else value
            budget -= len(children)
            if budget < 0:
                raise ValueError(f"holds more than {MAX_DOCUMENT_VALUES} values")
            stack.extend((child, depth + 1) for child in children)


_request_decoder = msgspec.msgpack.Decoder(Request)
_response_decoder = msgspec.msgpack.Decoder(Response)
_encoder = msgspec.msgpack.Encoder()


def frame(message: Request | Response) -> bytes:
    payload = _encoder.encode(message)
    return len(payload).to_bytes(4, "big") + payload


def decode_request(payload: bytes) -> Request:
    """Raises ProtocolError for anything that is not a well-formed request within bounds."""
    return _decode(_request_decoder, payload)


def decode_response(payload: bytes) -> Response:
    """Raises ProtocolError for anything that is not a well-formed response within bounds."""
    return _decode(_response_decoder, payload)


def _decode(decoder: msgspec.msgpack.Decoder, payload: bytes):
    try:
        return decoder.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ProtocolError(str(exc)[:200]) from None
    except RecursionError:  # an `Any` field nested thousands deep
        raise ProtocolError(f"nested deeper than {MAX_NESTING} levels") from None


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
        if isinstance(raw, list) and len(raw) >= 2 and isinstance(raw[1], int) and 0 <= raw[1] <= INT64_MAX:
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
