"""The wire codec: Raft messages to bytes and back, versioned and carrying the cluster id.

Wire format (protocol version 1)::

    b"KV"  version:u8  msgpack([cluster_id, [tag, term, frm, to, field, ...]])

``tag`` numbers the message type (see ``TAGS``); the fields follow in the order the
dataclass declares them. An entry is ``[term, index, type, data]``; a ``SnapshotMeta`` is
``[index, term, voters, learners, [[id, address], ...], cluster_id]``. ``bytes`` travel as msgpack bin.

Compatibility rule: a node decodes its own ``PROTOCOL_VERSION`` and the one before it
(``MIN_PROTOCOL_VERSION``), so a rolling upgrade can mix two versions. Within a version a
sender may append new trailing fields to a message (decoders of that version ignore fields
they do not know); anything else — a field changed, removed or reordered, a new message
type — bumps ``PROTOCOL_VERSION`` and adds a decoder for the new version to ``DECODERS``,
keeping the previous one for one release.

Decoding never trusts the bytes: it is a typed msgspec decode (never pickle) into structs
that are then turned into the core's frozen dataclasses, and whatever goes wrong surfaces as
``DecodeError`` and nothing else.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Annotated, Callable, Mapping, Union

import msgspec

from keyval.raft.messages import (
    AppendEntries,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    RequestVote,
    SnapshotResponse,
    TimeoutNow,
    VoteResponse,
)
from keyval.raft.types import Entry, EntryType, Membership, SnapshotMeta

PROTOCOL_VERSION: int = 1
MIN_PROTOCOL_VERSION: int = max(1, PROTOCOL_VERSION - 1)
#: Default bound on one encoded message; transports refuse larger frames before reading them.
MAX_MESSAGE_BYTES: int = 64 * 1024 * 1024

MAGIC = b"KV"
HEADER_SIZE = len(MAGIC) + 1


class DecodeError(Exception):
    """The bytes are not a message this node can decode; the only exception decode raises."""


Decoder = Callable[[memoryview], "tuple[str, Message]"]

# -- version 1 ------------------------------------------------------------------------------
U64 = Annotated[int, msgspec.Meta(ge=0)]  # msgpack ints stop at 2**64 - 1
_WireEntry = tuple[U64, U64, EntryType, bytes]
_WireMeta = tuple[U64, U64, list[str], list[str], list[tuple[str, str]], str]


class _V1(msgspec.Struct, array_like=True, frozen=True):
    term: U64
    frm: str
    to: str


class _V1AppendEntries(_V1, tag=1):
    prev_index: U64
    prev_term: U64
    entries: list[_WireEntry]
    commit: U64
    transferee: str = ""  # appended in version 1 (leadership transfer gating)


class _V1AppendResponse(_V1, tag=2):
    index: U64
    reject: bool
    hint_index: U64
    hint_term: U64


class _V1RequestVote(_V1, tag=3):
    last_index: U64
    last_term: U64
    pre_vote: bool
    transfer: bool


class _V1VoteResponse(_V1, tag=4):
    granted: bool
    pre_vote: bool


class _V1Heartbeat(_V1, tag=5):
    commit: U64
    context: bytes
    transferee: str = ""  # appended in version 1 (leadership transfer gating)


class _V1HeartbeatResponse(_V1, tag=6):
    context: bytes


class _V1InstallSnapshot(_V1, tag=7):
    meta: _WireMeta
    offset: U64
    data: bytes
    done: bool


class _V1SnapshotResponse(_V1, tag=8):
    snapshot_index: U64
    offset: U64
    done: bool
    reject: bool


class _V1TimeoutNow(_V1, tag=9):
    pass


_V1Message = Union[
    _V1AppendEntries,
    _V1AppendResponse,
    _V1RequestVote,
    _V1VoteResponse,
    _V1Heartbeat,
    _V1HeartbeatResponse,
    _V1InstallSnapshot,
    _V1SnapshotResponse,
    _V1TimeoutNow,
]


class _V1Envelope(msgspec.Struct, array_like=True, frozen=True):
    cluster_id: str
    message: _V1Message


TAGS: Mapping[type, int] = MappingProxyType({
    AppendEntries: 1,
    AppendResponse: 2,
    RequestVote: 3,
    VoteResponse: 4,
    Heartbeat: 5,
    HeartbeatResponse: 6,
    InstallSnapshot: 7,
    SnapshotResponse: 8,
    TimeoutNow: 9,
})


def _meta_to_wire(meta: SnapshotMeta) -> tuple:
    m = meta.membership
    return (meta.index, meta.term, sorted(m.voters), sorted(m.learners), list(m.addresses), m.cluster_id)


def _meta_from_wire(w: tuple) -> SnapshotMeta:
    index, term, voters, learners, addresses, cluster_id = w
    membership = Membership(frozenset(voters), frozenset(learners), tuple(addresses), cluster_id)
    return SnapshotMeta(index, term, membership)


def _fields_v1(msg: Message) -> tuple:
    """The fields of ``msg`` after ``term, frm, to``, in wire order."""
    t = type(msg)
    if t is AppendEntries:
        entries = [(e.term, e.index, int(e.type), e.data) for e in msg.entries]
        # The trailing transferee is sent only during a transfer: older decoders of this
        # version ignore it, and outside transfers the bytes stay as they were.
        if msg.transferee:
            return (msg.prev_index, msg.prev_term, entries, msg.commit, msg.transferee)
        return (msg.prev_index, msg.prev_term, entries, msg.commit)
    if t is AppendResponse:
        return (msg.index, msg.reject, msg.hint_index, msg.hint_term)
    if t is RequestVote:
        return (msg.last_index, msg.last_term, msg.pre_vote, msg.transfer)
    if t is VoteResponse:
        return (msg.granted, msg.pre_vote)
    if t is Heartbeat:
        if msg.transferee:
            return (msg.commit, msg.context, msg.transferee)
        return (msg.commit, msg.context)
    if t is HeartbeatResponse:
        return (msg.context,)
    if t is InstallSnapshot:
        return (_meta_to_wire(msg.meta), msg.offset, msg.data, msg.done)
    if t is SnapshotResponse:
        return (msg.snapshot_index, msg.offset, msg.done, msg.reject)
    if t is TimeoutNow:
        return ()
    raise TypeError(f"cannot encode {t.__name__}: not a Raft message type")


def _from_wire_v1(w: _V1) -> Message:
    t = type(w)
    if t is _V1AppendEntries:
        entries = tuple(Entry(term, index, kind, data) for term, index, kind, data in w.entries)
        return AppendEntries(w.term, w.frm, w.to, w.prev_index, w.prev_term, entries, w.commit, w.transferee)
    if t is _V1AppendResponse:
        return AppendResponse(w.term, w.frm, w.to, w.index, w.reject, w.hint_index, w.hint_term)
    if t is _V1RequestVote:
        return RequestVote(w.term, w.frm, w.to, w.last_index, w.last_term, w.pre_vote, w.transfer)
    if t is _V1VoteResponse:
        return VoteResponse(w.term, w.frm, w.to, w.granted, w.pre_vote)
    if t is _V1Heartbeat:
        return Heartbeat(w.term, w.frm, w.to, w.commit, w.context, w.transferee)
    if t is _V1HeartbeatResponse:
        return HeartbeatResponse(w.term, w.frm, w.to, w.context)
    if t is _V1InstallSnapshot:
        return InstallSnapshot(w.term, w.frm, w.to, _meta_from_wire(w.meta), w.offset, w.data, w.done)
    if t is _V1SnapshotResponse:
        return SnapshotResponse(w.term, w.frm, w.to, w.snapshot_index, w.offset, w.done, w.reject)
    return TimeoutNow(w.term, w.frm, w.to)


_V1_DECODER = msgspec.msgpack.Decoder(_V1Envelope)
_ENCODER = msgspec.msgpack.Encoder()
_V1_HEADER = MAGIC + bytes([1])


def _decode_v1(body: memoryview) -> tuple[str, Message]:
    envelope = _V1_DECODER.decode(body)
    return envelope.cluster_id, _from_wire_v1(envelope.message)


#: Decoder of each accepted protocol version: exactly MIN_PROTOCOL_VERSION..PROTOCOL_VERSION.
DECODERS: Mapping[int, Decoder] = MappingProxyType({1: _decode_v1})
assert set(DECODERS) == set(range(MIN_PROTOCOL_VERSION, PROTOCOL_VERSION + 1))


def encode_message(msg: Message, cluster_id: str) -> bytes:
    """The wire bytes of ``msg`` for cluster ``cluster_id`` (always the current version)."""
    tag = TAGS.get(type(msg))
    if tag is None:
        raise TypeError(f"cannot encode {type(msg).__name__}: not a Raft message type")
    body = (cluster_id, (tag, msg.term, msg.frm, msg.to, *_fields_v1(msg)))
    return _V1_HEADER + _ENCODER.encode(body)


def decode_message(
    data: bytes | bytearray | memoryview, *, decoders: Mapping[int, Decoder] = DECODERS
) -> tuple[str, Message]:
    """``(cluster_id, message)`` from wire bytes; raises ``DecodeError`` and nothing else.

    ``decoders`` maps each accepted version to its decoder (tests pass their own table to
    exercise a version mix).
    """
    try:
        view = memoryview(data)
        if len(view) > MAX_MESSAGE_BYTES:
            raise DecodeError(f"message of {len(view)} bytes exceeds {MAX_MESSAGE_BYTES}")
        if len(view) < HEADER_SIZE or view[: len(MAGIC)] != MAGIC:
            raise DecodeError("not a KeyVal message (bad magic)")
        version = view[len(MAGIC)]
        decoder = decoders.get(version)
        if decoder is None:
            raise DecodeError(f"protocol version {version} not accepted (accepts {sorted(decoders)})")
        return decoder(view[HEADER_SIZE:])
    except DecodeError:
        raise
    # Whatever a decoder trips over — msgspec errors, a Membership refusing overlapping
    # voters and learners, RecursionError, OverflowError, MemoryError — is the peer's
    # fault, never ours to raise: nothing a peer sends gets out of here as anything else.
    except Exception as exc:  # noqa: BLE001
        raise DecodeError(f"{type(exc).__name__}: {exc}") from None
