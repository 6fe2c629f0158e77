"""The wire codec: Raft messages to bytes and back, versioned and carrying the cluster id.

Wire format (protocol version 2, the current one)::

    b"KV"  2  msgpack([cluster_id, [max_protocol, software_version], [tag, term, frm, to, field, ...]])

and protocol version 1 (still spoken to a peer that has not said it knows 2)::

    b"KV"  1  msgpack([cluster_id, [tag, term, frm, to, field, ...], [max_protocol, software_version]])

The advert ``[max_protocol, software_version]`` says which protocol versions the sender
decodes (``MIN_PROTOCOL_VERSION..max_protocol``) and which KeyVal release it runs. In
version 1 it is a trailing envelope element, which a 0.1.0 node (whose version-1 decoder
knows only two) ignores; a 0.1.0 node sends version 1 without it. Each node keeps what every
peer advertised (``keyval.peer.versions``) and writes to a peer at the highest version both
decode: version 1 until the peer has advertised more.

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

Every field is bounded (``keyval.wire_bounds`` says why each bound is what it is): terms,
indexes and offsets below 2**62; node ids non-empty, at most 255 characters of the node-id
pattern; addresses HOST:PORT; the cluster id, lists and byte strings length-bounded; a
snapshot's configuration consistent, and every CONFIG entry a valid configuration. A value
outside is a ``DecodeError``. The encoder refuses a number outside with ``ValueError``.
"""
from __future__ import annotations

import re
from types import MappingProxyType
from operator import itemgetter
from typing import Annotated, Callable, Mapping, NamedTuple, Union

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
from keyval.wire_bounds import (
    ADDRESS_PATTERN,
    CLUSTER_ID_PATTERN,
    MAX_ADDRESS,
    MAX_CLUSTER_ID,
    MAX_CONTEXT_BYTES,
    MAX_ENTRIES_PER_MESSAGE,
    MAX_MEMBERS,
    MAX_NODE_ID,
    MAX_WIRE_INT,
    NODE_ID_PATTERN,
    SOFTWARE_VERSION_PATTERN,
    MAX_SOFTWARE_VERSION,
    membership_problem,
)
from keyval import __version__ as SOFTWARE_VERSION

PROTOCOL_VERSION: int = 2
MIN_PROTOCOL_VERSION: int = max(1, PROTOCOL_VERSION - 1)
#: Default bound on one encoded message; transports refuse larger frames before reading them.
MAX_MESSAGE_BYTES: int = 64 * 1024 * 1024

MAGIC = b"KV"
HEADER_SIZE = len(MAGIC) + 1


class DecodeError(Exception):
    """The bytes are not a message this node can decode; the only exception decode raises."""


#: A decoder returns ``(cluster_id, message, advert or None)``; a two-tuple (a decoder of
#: 0.1.0's kind, which tests pass in) counts as "no advert".
Decoder = Callable[[memoryview], "tuple[str, Message, Advert | None] | tuple[str, Message]"]

# -- version 1 ------------------------------------------------------------------------------
# Every field is bounded by its type: msgspec checks these constraints in C while decoding,
# so a value out of range is a DecodeError before any core object exists (see
# keyval.wire_bounds for why the bounds are what they are).
U62 = Annotated[int, msgspec.Meta(ge=0, lt=MAX_WIRE_INT)]
NodeIdField = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NODE_ID, pattern=NODE_ID_PATTERN)]
#: a node id, or "" when no transfer is under way
TransfereeField = Annotated[str, msgspec.Meta(max_length=MAX_NODE_ID, pattern=rf"^(?:{NODE_ID_PATTERN[1:-2]})?\Z")]
ClusterIdField = Annotated[str, msgspec.Meta(max_length=MAX_CLUSTER_ID, pattern=CLUSTER_ID_PATTERN)]
AddressField = Annotated[str, msgspec.Meta(max_length=MAX_ADDRESS, pattern=ADDRESS_PATTERN)]
EntryData = Annotated[bytes, msgspec.Meta(max_length=MAX_MESSAGE_BYTES)]
Context = Annotated[bytes, msgspec.Meta(max_length=MAX_CONTEXT_BYTES)]
Chunk = Annotated[bytes, msgspec.Meta(max_length=MAX_MESSAGE_BYTES)]
_WireEntry = tuple[U62, U62, EntryType, EntryData]
_Ids = Annotated[list[NodeIdField], msgspec.Meta(max_length=MAX_MEMBERS)]
_Addresses = Annotated[list[tuple[NodeIdField, AddressField]], msgspec.Meta(max_length=MAX_MEMBERS)]
_WireMeta = tuple[U62, U62, _Ids, _Ids, _Addresses, ClusterIdField]
_Entries = Annotated[list[_WireEntry], msgspec.Meta(max_length=MAX_ENTRIES_PER_MESSAGE)]


class _V1(msgspec.Struct, array_like=True, frozen=True):
    term: U62
    frm: NodeIdField
    to: NodeIdField


class _V1AppendEntries(_V1, tag=1):
    prev_index: U62
    prev_term: U62
    entries: _Entries
    commit: U62
    transferee: TransfereeField = ""  # appended in version 1 (leadership transfer gating)
    leader_last: U62 = 0  # appended later (recovery from lost storage); older decoders skip it


class _V1AppendResponse(_V1, tag=2):
    index: U62
    reject: bool
    hint_index: U62
    hint_term: U62
    lost: U62 = 0  # appended later (recovery from lost storage); older decoders skip it


class _V1RequestVote(_V1, tag=3):
    last_index: U62
    last_term: U62
    pre_vote: bool
    transfer: bool


class _V1VoteResponse(_V1, tag=4):
    granted: bool
    pre_vote: bool


class _V1Heartbeat(_V1, tag=5):
    commit: U62
    context: Context
    transferee: TransfereeField = ""  # appended in version 1 (leadership transfer gating)


class _V1HeartbeatResponse(_V1, tag=6):
    context: Context
    lost: U62 = 0  # appended later (recovery from lost storage); older decoders skip it


class _V1InstallSnapshot(_V1, tag=7):
    meta: _WireMeta
    offset: U62
    data: Chunk
    done: bool


class _V1SnapshotResponse(_V1, tag=8):
    snapshot_index: U62
    offset: U62
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
    """Version 1 exactly as 0.1.0 decodes it (tests use it as that release's decoder)."""
    cluster_id: ClusterIdField
    message: _V1Message


# -- the advert (version 2, and trailing in version 1) --------------------------------------
MaxProtocolField = Annotated[int, msgspec.Meta(ge=1, le=255)]
SoftwareVersionField = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_SOFTWARE_VERSION,
                                                   pattern=SOFTWARE_VERSION_PATTERN)]


class Advert(NamedTuple):
    """What a peer said of itself: the highest protocol version it decodes, its release."""
    max_protocol: int
    version: str


class _WireAdvert(msgspec.Struct, array_like=True, frozen=True):
    max_protocol: MaxProtocolField
    version: SoftwareVersionField


class _V1AdvertEnvelope(msgspec.Struct, array_like=True, frozen=True):
    cluster_id: ClusterIdField
    message: _V1Message
    # Raw, checked apart: version 1 lets a sender append anything, and what is not an
    # advert (or a bad one) only means the sender said nothing of itself.
    advert: msgspec.Raw = msgspec.Raw()  # empty: nothing appended


# -- version 2: the advert second, the messages as in version 1 ------------------------------
class _V2Envelope(msgspec.Struct, array_like=True, frozen=True):
    cluster_id: ClusterIdField
    advert: _WireAdvert
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
    problem = membership_problem(voters, learners, addresses, cluster_id)
    if problem:
        raise DecodeError(f"snapshot configuration: {problem}")
    membership = Membership(frozenset(voters), frozenset(learners), tuple(addresses), cluster_id)
    return SnapshotMeta(index, term, membership)


def _fields_v1(msg: Message) -> tuple:
    """The fields of ``msg`` after ``term, frm, to``, in wire order."""
    t = type(msg)
    if t is AppendEntries:
        entries = [(e.term, e.index, e.type, e.data) for e in msg.entries]  # msgspec writes an IntEnum as its int
        # The trailing fields are sent only when set (a transfer, a recovering follower):
        # older decoders of this version ignore them, and otherwise the bytes stay as they were.
        if msg.leader_last:
            return (msg.prev_index, msg.prev_term, entries, msg.commit, msg.transferee, msg.leader_last)
        if msg.transferee:
            return (msg.prev_index, msg.prev_term, entries, msg.commit, msg.transferee)
        return (msg.prev_index, msg.prev_term, entries, msg.commit)
    if t is AppendResponse:
        if msg.lost:
            return (msg.index, msg.reject, msg.hint_index, msg.hint_term, msg.lost)
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
        return (msg.context, msg.lost) if msg.lost else (msg.context,)
    if t is InstallSnapshot:
        return (_meta_to_wire(msg.meta), msg.offset, msg.data, msg.done)
    if t is SnapshotResponse:
        return (msg.snapshot_index, msg.offset, msg.done, msg.reject)
    if t is TimeoutNow:
        return ()
    raise TypeError(f"cannot encode {t.__name__}: not a Raft message type")


_CONFIG = EntryType.CONFIG
_KIND = itemgetter(2)


def _check_config_entries(entries: tuple[Entry, ...]) -> None:
    for entry in entries:
        if entry.type is _CONFIG:
            try:
                m = Membership.decode(entry.data)
            except ValueError as exc:
                raise DecodeError(f"CONFIG entry {entry.index}: {exc}") from None
            problem = membership_problem(m.voters, m.learners, m.addresses, m.cluster_id)
            if problem:
                raise DecodeError(f"CONFIG entry {entry.index}: {problem}")


def _from_wire_v1(w: _V1) -> Message:
    t = type(w)
    if t is _V1AppendEntries:
        entries = tuple(Entry(term, index, kind, data) for term, index, kind, data in w.entries)
        # Applying a CONFIG entry that is not a configuration would stop the node, so it is
        # refused here too; the scan runs in C and only CONFIG entries are decoded.
        if _CONFIG in map(_KIND, w.entries):
            _check_config_entries(entries)
        return AppendEntries(
            w.term, w.frm, w.to, w.prev_index, w.prev_term, entries, w.commit, w.transferee, w.leader_last
        )
    if t is _V1AppendResponse:
        return AppendResponse(w.term, w.frm, w.to, w.index, w.reject, w.hint_index, w.hint_term, w.lost)
    if t is _V1RequestVote:
        return RequestVote(w.term, w.frm, w.to, w.last_index, w.last_term, w.pre_vote, w.transfer)
    if t is _V1VoteResponse:
        return VoteResponse(w.term, w.frm, w.to, w.granted, w.pre_vote)
    if t is _V1Heartbeat:
        return Heartbeat(w.term, w.frm, w.to, w.commit, w.context, w.transferee)
    if t is _V1HeartbeatResponse:
        return HeartbeatResponse(w.term, w.frm, w.to, w.context, w.lost)
    if t is _V1InstallSnapshot:
        return InstallSnapshot(w.term, w.frm, w.to, _meta_from_wire(w.meta), w.offset, w.data, w.done)
    if t is _V1SnapshotResponse:
        return SnapshotResponse(w.term, w.frm, w.to, w.snapshot_index, w.offset, w.done, w.reject)
    return TimeoutNow(w.term, w.frm, w.to)


_V1_DECODER = msgspec.msgpack.Decoder(_V1AdvertEnvelope)
_V2_DECODER = msgspec.msgpack.Decoder(_V2Envelope)
_ADVERT_DECODER = msgspec.msgpack.Decoder(_WireAdvert)
_ENCODER = msgspec.msgpack.Encoder()
_HEADERS = {1: MAGIC + bytes([1]), 2: MAGIC + bytes([2])}
#: What this node says of itself in everything it sends.
OWN_ADVERT = Advert(PROTOCOL_VERSION, SOFTWARE_VERSION)
# Peers refuse a version-2 message whose advert is out of bounds: never write one.
assert len(SOFTWARE_VERSION) <= MAX_SOFTWARE_VERSION and re.match(SOFTWARE_VERSION_PATTERN, SOFTWARE_VERSION)


def _decode_v1(body: memoryview) -> tuple[str, Message, Advert | None]:
    envelope = _V1_DECODER.decode(body)
    advert = None
    if envelope.advert:
        try:
            wire = _ADVERT_DECODER.decode(envelope.advert)
            advert = Advert(wire.max_protocol, wire.version)
        except msgspec.DecodeError:
            pass
    return envelope.cluster_id, _from_wire_v1(envelope.message), advert


def _decode_v2(body: memoryview) -> tuple[str, Message, Advert]:
    envelope = _V2_DECODER.decode(body)
    wire = envelope.advert
    return envelope.cluster_id, _from_wire_v1(envelope.message), Advert(wire.max_protocol, wire.version)


#: Decoder of each accepted protocol version: exactly MIN_PROTOCOL_VERSION..PROTOCOL_VERSION.
DECODERS: Mapping[int, Decoder] = MappingProxyType({1: _decode_v1, 2: _decode_v2})
assert set(DECODERS) == set(range(MIN_PROTOCOL_VERSION, PROTOCOL_VERSION + 1))


def encode_message(msg: Message, cluster_id: str, version: int = PROTOCOL_VERSION) -> bytes:
    """The wire bytes of ``msg`` for cluster ``cluster_id`` in protocol ``version`` (default:
    the current one; ``keyval.peer.versions`` says which one a peer decodes). Both carry
    this node's advert."""
    tag = TAGS.get(type(msg))
    if tag is None:
        raise TypeError(f"cannot encode {type(msg).__name__}: not a Raft message type")
    fields = _fields_v1(msg)
    _check_encodable(msg, fields)
    message = (tag, msg.term, msg.frm, msg.to, *fields)
    if version == 2:
        body = (cluster_id, OWN_ADVERT, message)
    elif version == 1:
        body = (cluster_id, message, OWN_ADVERT)
    else:
        raise ValueError(f"cannot encode protocol version {version} (writes {sorted(_HEADERS)})")
    return _HEADERS[version] + _ENCODER.encode(body)


def _check_encodable(msg: Message, fields: tuple) -> None:
    """Refuse a number no peer would decode (see keyval.wire_bounds) instead of writing it."""
    numbers = [msg.term, *(v for v in fields if type(v) is int)]
    if type(msg) is AppendEntries and msg.entries:
        # A log's entries have contiguous indexes and non-decreasing terms (the core keeps
        # that, and receivers drop anything else), so the ends bound them all: O(1), not
        # a pass over every entry on the replication path.
        first, last = msg.entries[0], msg.entries[-1]
        numbers += (first.term, first.index, last.term, last.index)
    elif type(msg) is InstallSnapshot:
        numbers += (msg.meta.index, msg.meta.term)
    if max(numbers) >= MAX_WIRE_INT or min(numbers) < 0:
        raise ValueError(f"cannot encode {type(msg).__name__}: a term, index or offset is outside "
                         f"0..2**62-1 (peers refuse it): {numbers}")


def decode_message(
    data: bytes | bytearray | memoryview, *, decoders: Mapping[int, Decoder] = DECODERS
) -> tuple[str, Message]:
    """``(cluster_id, message)`` from wire bytes; raises ``DecodeError`` and nothing else.

    ``decoders`` maps each accepted version to its decoder (tests pass their own table to
    exercise a version mix).
    """
    cluster_id, message, _ = decode_envelope(data, decoders=decoders)
    return cluster_id, message


def decode_envelope(
    data: bytes | bytearray | memoryview, *, decoders: Mapping[int, Decoder] = DECODERS
) -> tuple[str, Message, Advert | None]:
    """``(cluster_id, message, advert)``: ``advert`` is what the sender said of itself, None
    for a plain version-1 message (a 0.1.0 sender). Raises ``DecodeError`` and nothing else."""
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
        decoded = decoder(view[HEADER_SIZE:])
        return (*decoded, None) if len(decoded) == 2 else decoded
    except DecodeError:
        raise
    # Whatever a decoder trips over — msgspec errors, a Membership refusing overlapping
    # voters and learners, RecursionError, OverflowError, MemoryError — is the peer's
    # fault, never ours to raise: nothing a peer sends gets out of here as anything else.
    except Exception as exc:  # noqa: BLE001
        raise DecodeError(f"{type(exc).__name__}: {exc}") from None
