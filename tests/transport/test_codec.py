"""The wire codec: every message round-trips, and nothing a peer sends raises but DecodeError."""
from __future__ import annotations

import dataclasses
import operator
import string
import typing

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyval.peer import codec
from keyval.peer.codec import DecodeError, decode_message, encode_message
from keyval.raft.messages import (
    ALL_MESSAGE_TYPES,
    AppendEntries,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    TimeoutNow,
)
from keyval.raft.types import Entry, EntryType, Membership, SnapshotMeta
from keyval.wire_bounds import MAX_CONTEXT_BYTES, MAX_WIRE_INT

u62 = st.integers(min_value=0, max_value=MAX_WIRE_INT - 1)
_ID_CHARS = string.ascii_letters + string.digits
node_ids = st.builds(operator.add, st.sampled_from(_ID_CHARS), st.text(_ID_CHARS + "._-", max_size=5))
addresses = st.builds("{}:{}".format, st.sampled_from(["h", "127.0.0.1", "[::1]", "node-1.example"]),
                      st.integers(0, 65535))
cluster_ids = st.text(_ID_CHARS + "._-", max_size=16)


@st.composite
def memberships(draw) -> Membership:
    ids = draw(st.lists(node_ids, unique=True, min_size=1, max_size=6))
    split = draw(st.integers(1, len(ids)))
    with_address = draw(st.lists(st.sampled_from(ids), unique=True, max_size=len(ids)))
    addrs = tuple((node, draw(addresses)) for node in with_address)
    return Membership(frozenset(ids[:split]), frozenset(ids[split:]), addrs, draw(cluster_ids))


normal_entries = st.builds(Entry, u62, u62, st.just(EntryType.NORMAL), st.binary(max_size=32))
config_entries = st.builds(Entry, u62, u62, st.just(EntryType.CONFIG), memberships().map(Membership.encode))
entries = normal_entries | config_entries
snapshot_metas = st.builds(SnapshotMeta, u62, u62, memberships())

# By resolved annotation, so a field added to a message later is generated here too and the
# round trip fails until the codec carries it.
FIELD_STRATEGIES = {
    int: u62,
    str: node_ids,
    bool: st.booleans(),
    bytes: st.binary(max_size=MAX_CONTEXT_BYTES),
    tuple[Entry, ...]: st.lists(entries, max_size=5).map(tuple),
    SnapshotMeta: snapshot_metas,
}


def message_strategy(cls: type[Message]) -> st.SearchStrategy[Message]:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if hints[f.name] not in FIELD_STRATEGIES:
            raise AssertionError(f"{cls.__name__}.{f.name}: no strategy for {hints[f.name]!r}; teach the codec")
        kwargs[f.name] = FIELD_STRATEGIES[hints[f.name]]
    return st.builds(cls, **kwargs)


messages = st.one_of([message_strategy(cls) for cls in ALL_MESSAGE_TYPES])


def sample_messages() -> list[Message]:
    meta = SnapshotMeta(9, 2, Membership(frozenset({"a", "b"}), frozenset({"c"}), (("a", "h:1"),), "cl"))
    return [
        AppendEntries(3, "a", "b", 4, 2, (Entry(3, 5, EntryType.NORMAL, b"x"), Entry(3, 6, EntryType.CONFIG, meta.membership.encode())), 4),
        AppendResponse(3, "b", "a", 6, reject=True, hint_index=2, hint_term=1),
        InstallSnapshot(3, "a", "b", meta, 0, b"snap", True),
        TimeoutNow(3, "a", "b"),
        AppendResponse(3, "b", "a", 6, lost=9),  # a follower re-fetching entries it lost
        AppendEntries(3, "a", "b", 6, 3, (), 6, leader_last=12),
        HeartbeatResponse(3, "b", "a", b"", lost=9),
    ]


@settings(max_examples=300, deadline=None)
@given(messages, cluster_ids)
def test_every_message_round_trips(msg, cluster_id):
    data = encode_message(msg, cluster_id)
    got_cluster, got = decode_message(data)
    assert got_cluster == cluster_id
    assert got == msg
    assert type(got) is type(msg)


@pytest.mark.parametrize("cls", ALL_MESSAGE_TYPES, ids=lambda c: c.__name__)
def test_every_message_type_has_a_tag(cls):
    assert cls in codec.TAGS
    assert len(set(codec.TAGS.values())) == len(codec.TAGS)


def test_decoded_values_are_the_cores_types():
    _, msg = decode_message(encode_message(sample_messages()[0], "c"))
    assert isinstance(msg.entries, tuple)
    assert [type(e.type) for e in msg.entries] == [EntryType, EntryType]
    _, snap = decode_message(encode_message(sample_messages()[2], "c"))
    assert isinstance(snap.meta.membership.voters, frozenset)
    assert snap.meta.membership.cluster_id == "cl"


def test_memoryview_and_bytearray_decode():
    data = encode_message(sample_messages()[1], "c")
    assert decode_message(memoryview(data)) == decode_message(bytearray(data)) == decode_message(data)


def test_encoding_a_non_message_is_a_type_error():
    with pytest.raises(TypeError):
        encode_message(object(), "c")  # type: ignore[arg-type]


# -- nothing but DecodeError --------------------------------------------------------------
def must_not_raise_but_decode_error(data) -> None:
    try:
        decode_message(data)
    except DecodeError:
        pass


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=256))
def test_random_bytes(data):
    must_not_raise_but_decode_error(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=256))
def test_random_bytes_behind_a_valid_header(data):
    must_not_raise_but_decode_error(codec.MAGIC + bytes([codec.PROTOCOL_VERSION]) + data)


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=8) | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(msgpack_values)
def test_well_formed_msgpack_of_the_wrong_shape(value):
    must_not_raise_but_decode_error(codec.MAGIC + bytes([codec.PROTOCOL_VERSION]) + msgspec.msgpack.encode(value))


@settings(max_examples=200, deadline=None)
@given(messages, st.data())
def test_truncations_and_bit_flips_of_valid_encodings(msg, data):
    encoded = encode_message(msg, "cluster")
    cut = data.draw(st.integers(0, len(encoded) - 1))
    must_not_raise_but_decode_error(encoded[:cut])
    flipped = bytearray(encoded)
    for _ in range(data.draw(st.integers(1, 4))):
        bit = data.draw(st.integers(0, len(encoded) * 8 - 1))
        flipped[bit // 8] ^= 1 << (bit % 8)
    must_not_raise_but_decode_error(bytes(flipped))


def test_deeply_nested_input():
    deep = b"\x91" * 100_000 + b"\xc0"
    with pytest.raises(DecodeError):
        decode_message(codec.MAGIC + bytes([1]) + deep)


def raw_v1(cluster_id, message_array) -> bytes:
    return codec.MAGIC + bytes([1]) + msgspec.msgpack.encode([cluster_id, message_array])


@pytest.mark.parametrize(
    "array, why",
    [
        ([1, 1, "a", "b", 0, 0, [[1, 1, 7, b""]], 0], "unknown entry type"),
        ([2, -1, "a", "b", 0, False, 0, 0], "negative term"),
        ([2, 1, "a", "b", 0, 1, 0, 0], "int where a bool belongs"),
        ([5, 1, "a", "b", 0, "ctx"], "str where bytes belong"),
        ([7, 1, "a", "b", [0, 0, ["x"], ["x"], [], ""], 0, b"", True], "voter also a learner"),
        ([42, 1, "a", "b"], "unknown message tag"),
        ([2, 1, "a", "b", 0], "missing fields"),
    ],
)
def test_malformed_fields_are_decode_errors(array, why):
    with pytest.raises(DecodeError):
        decode_message(raw_v1("c", array))


def test_bad_magic_and_short_input():
    good = encode_message(TimeoutNow(1, "a", "b"), "c")
    for data in (b"", b"K", b"KV", b"XY" + good[2:]):
        with pytest.raises(DecodeError):
            decode_message(data)


def test_oversized_message_is_refused_before_decoding(monkeypatch):
    data = encode_message(Heartbeat(1, "a", "b", 0, b"x" * 200), "c")
    monkeypatch.setattr(codec, "MAX_MESSAGE_BYTES", 100)
    with pytest.raises(DecodeError, match="exceeds"):
        decode_message(data)


# -- versions -------------------------------------------------------------------------------
def test_accepted_versions_are_this_one_and_the_previous():
    assert codec.MIN_PROTOCOL_VERSION == max(1, codec.PROTOCOL_VERSION - 1)
    assert set(codec.DECODERS) == set(range(codec.MIN_PROTOCOL_VERSION, codec.PROTOCOL_VERSION + 1))
    assert encode_message(TimeoutNow(1, "a", "b"), "c")[2] == codec.PROTOCOL_VERSION


@pytest.mark.parametrize("version", [0, codec.PROTOCOL_VERSION + 1, 255])
def test_versions_outside_the_table_are_refused(version):
    data = bytearray(encode_message(TimeoutNow(1, "a", "b"), "c"))
    data[2] = version
    with pytest.raises(DecodeError, match="protocol version"):
        decode_message(bytes(data))


def test_trailing_fields_from_a_newer_sender_of_the_same_version_are_ignored():
    plain = TimeoutNow(4, "a", "b")
    assert decode_message(raw_v1("c", [9, 4, "a", "b", "new field", 17])) == ("c", plain)
    extended = codec.MAGIC + bytes([1]) + msgspec.msgpack.encode(["c", [9, 4, "a", "b"], {"envelope": "extra"}])
    assert decode_message(extended) == ("c", plain)
