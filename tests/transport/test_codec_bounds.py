"""Every field a peer sends is bounded at decode: out of range is a DecodeError, never a value
that reaches the core, the disk or an encoder (issue 11, item 3)."""
from __future__ import annotations

import random

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyval import wire_bounds
from keyval.peer import codec
from keyval.peer.codec import DecodeError, decode_message, encode_message
from keyval.raft.messages import AppendEntries, Heartbeat, InstallSnapshot, RequestVote, TimeoutNow
from keyval.raft.types import Entry, EntryType, Membership, SnapshotMeta
from keyval.wire_bounds import MAX_WIRE_INT

from test_codec import messages, raw_v1  # same directory: pytest puts it on sys.path

NUMBER_FIELDS = ("term", "prev_index", "prev_term", "commit", "index", "hint_index", "hint_term",
                 "last_index", "last_term", "offset", "snapshot_index", "lost", "leader_last")


def assert_membership_within_bounds(m: Membership) -> None:
    assert wire_bounds.membership_problem(m.voters, m.learners, m.addresses, m.cluster_id) is None


def assert_within_bounds(cluster_id: str, msg) -> None:
    """What the codec promises of anything it hands out, restated independently of it."""
    assert len(cluster_id) <= wire_bounds.MAX_CLUSTER_ID
    for node in (msg.frm, msg.to):
        assert 0 < len(node) <= wire_bounds.MAX_NODE_ID and wire_bounds.NODE_ID.match(node)
    for name in NUMBER_FIELDS:
        value = getattr(msg, name, 0)
        assert type(value) is int and 0 <= value < MAX_WIRE_INT, (name, value)
    if isinstance(msg, AppendEntries):
        assert len(msg.entries) <= wire_bounds.MAX_ENTRIES_PER_MESSAGE
        for e in msg.entries:
            assert 0 <= e.term < MAX_WIRE_INT and 0 <= e.index < MAX_WIRE_INT
            assert isinstance(e.type, EntryType)
            if e.type is EntryType.CONFIG:
                assert_membership_within_bounds(Membership.decode(e.data))
    if isinstance(msg, InstallSnapshot):
        assert 0 <= msg.meta.index < MAX_WIRE_INT and 0 <= msg.meta.term < MAX_WIRE_INT
        assert_membership_within_bounds(msg.meta.membership)
    if isinstance(msg, Heartbeat):
        assert len(msg.context) <= wire_bounds.MAX_CONTEXT_BYTES


def decode_or_decode_error(data: bytes) -> None:
    try:
        cluster_id, msg = decode_message(data)
    except DecodeError:
        return
    assert_within_bounds(cluster_id, msg)


# -- the attack of issue 11, and the bound itself ------------------------------------------
@pytest.mark.parametrize("term", [2**64 - 1, 2**63, 2**63 - 1, MAX_WIRE_INT])
def test_a_vote_with_a_huge_term_is_a_decode_error(term):
    with pytest.raises(DecodeError, match="term|<"):
        decode_message(raw_v1("c", [3, term, "intruder", "n1", 0, 0, False, False]))


def test_the_largest_accepted_term_decodes():
    msg = RequestVote(MAX_WIRE_INT - 1, "a", "b", MAX_WIRE_INT - 1, MAX_WIRE_INT - 1)
    assert decode_message(encode_message(msg, "c")) == ("c", msg)


def test_beyond_the_bound_the_encoder_refuses_with_a_clear_error():
    with pytest.raises(ValueError, match="2\\*\\*62"):
        encode_message(RequestVote(MAX_WIRE_INT, "a", "b", 0, 0), "c")
    entries = (Entry(1, MAX_WIRE_INT - 1), Entry(1, MAX_WIRE_INT))
    with pytest.raises(ValueError, match="outside"):
        encode_message(AppendEntries(1, "a", "b", MAX_WIRE_INT - 2, 1, entries, 0), "c")
    meta = SnapshotMeta(MAX_WIRE_INT, 1, Membership(frozenset({"a"})))
    with pytest.raises(ValueError):
        encode_message(InstallSnapshot(1, "a", "b", meta, 0, b"", True), "c")


def test_the_bound_keeps_a_node_within_what_storage_holds():
    # The invariant of keyval.wire_bounds: 2**62 one-steps above the bound still fit in the
    # segment log's signed 64-bit term column.
    assert MAX_WIRE_INT * 2 - 1 <= 2**63 - 1


META = [9, 2, ["a", "b"], ["c"], [["a", "h:1"]], "cl"]


@pytest.mark.parametrize(
    "array, why",
    [
        ([9, 1, "", "b"], "empty sender"),
        ([9, 1, "a", ""], "empty receiver"),
        ([9, 1, "a" * 256, "b"], "sender id too long"),
        ([9, 1, "a\n", "b"], "newline after the id"),
        ([9, 1, "a b", "b"], "space in an id"),
        ([9, 1, "-a", "b"], "id starting with punctuation"),
        ([1, 1, "a", "b", 0, 0, [[1, 1, 0, b""]] * 4097, 0], "too many entries"),
        ([1, 1, "a", "b", 0, 0, [[1, 1, 1, b"not json"]], 0], "CONFIG entry that is not a configuration"),
        ([1, 1, "a", "b", 0, 0, [[1, 1, 1, b'{"voters":[],"learners":[]}']], 0], "CONFIG entry without voters"),
        ([1, 1, "a", "b", 0, 0, [[1, 1, 1, b'{"voters":["a"],"addresses":{"a":"x y:1"}}']], 0],
         "CONFIG entry with a bad address"),
        ([1, 1, "a", "b", 0, 0, [[1, 1, 1, b'{"voters":["a\\n"]}']], 0], "CONFIG entry with a bad id"),
        ([5, 1, "a", "b", 0, b"x" * 65], "heartbeat context too long"),
        ([6, 1, "a", "b", b"x" * 65], "heartbeat response context too long"),
        ([7, 1, "a", "b", [9, 2, [], [], [], "cl"], 0, b"", True], "snapshot without voters"),
        ([7, 1, "a", "b", [9, 2, ["a", "a"], [], [], "cl"], 0, b"", True], "voter listed twice"),
        ([7, 1, "a", "b", [9, 2, ["a"], [], [["z", "h:1"]], "cl"], 0, b"", True], "address of a non-member"),
        ([7, 1, "a", "b", [9, 2, ["a"], [], [["a", "h:1"], ["a", "h:2"]], "cl"], 0, b"", True], "two addresses"),
        ([7, 1, "a", "b", [9, 2, ["a"], [], [["a", "h:99999"]], "cl"], 0, b"", True], "port out of range"),
        ([7, 1, "a", "b", [9, 2, ["a"], [], [["a", "h"]], "cl"], 0, b"", True], "address without a port"),
        ([7, 1, "a", "b", [9, 2, ["a"], [], [["a", "h:1"]], "c" * 65], 0, b"", True], "cluster id too long"),
        ([7, 1, "a", "b", [2**62, 2, ["a"], [], [], ""], 0, b"", True], "snapshot index too large"),
        ([8, 1, "a", "b", 2**63, 0, False, False], "snapshot index too large in a response"),
        ([7, 1, "a", "b", META, 2**64 - 1, b"", True], "offset too large"),
    ],
)
def test_out_of_bounds_fields_are_decode_errors(array, why):
    with pytest.raises(DecodeError):
        decode_message(raw_v1("c", array))


def test_a_bad_cluster_id_is_a_decode_error():
    for cluster_id in ("c" * 65, "a b", "é"):
        with pytest.raises(DecodeError):
            decode_message(raw_v1(cluster_id, [9, 1, "a", "b"]))


def test_bounds_at_their_limits_decode():
    ids = [f"n{i}" for i in range(wire_bounds.MAX_MEMBERS)]
    meta = [1, 1, ids, [], [[n, "[fe80::1%eth0]:65535"] for n in ids], "c" * 64]
    _, msg = decode_message(raw_v1("c" * 64, [7, 1, "a" * 255, "b", meta, 0, b"", True]))
    assert len(msg.meta.membership.voters) == wire_bounds.MAX_MEMBERS
    entries = [[1, i + 1, 0, b""] for i in range(wire_bounds.MAX_ENTRIES_PER_MESSAGE)]
    _, msg = decode_message(raw_v1("", [1, 1, "a", "b", 0, 0, entries, 0]))
    assert len(msg.entries) == wire_bounds.MAX_ENTRIES_PER_MESSAGE


# -- properties ----------------------------------------------------------------------------
@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=512))
def test_any_bytes_behind_a_valid_header_decode_within_bounds_or_fail(data):
    decode_or_decode_error(codec.MAGIC + bytes([codec.PROTOCOL_VERSION]) + data)


# Values a hostile peer would put in a field: boundaries of every integer type, odd strings.
hostile_values = st.one_of(
    st.sampled_from([-1, 0, 1, MAX_WIRE_INT - 1, MAX_WIRE_INT, 2**63 - 1, 2**63, 2**64 - 1, -(2**63)]),
    st.integers(-(2**63), 2**64 - 1),
    st.text(max_size=300),
    st.sampled_from(["", "a\n", "a" * 256, "h:99999", "x y:1", "[::1]:1", "c" * 65]),
    st.binary(max_size=80),
    st.booleans(),
    st.none(),
    st.lists(st.integers(0, 3), max_size=3),
)


def _leaves(value, path=()):
    """Paths to every leaf of a decoded msgpack value (lists only: the wire has no maps)."""
    if isinstance(value, list):
        for i, item in enumerate(value):
            yield from _leaves(item, (*path, i))
    else:
        yield path


def _replace(value, path, new):
    if not path:
        return new
    copy = list(value)
    copy[path[0]] = _replace(copy[path[0]], path[1:], new)
    return copy


@settings(max_examples=400, deadline=None)
@given(messages, st.data())
def test_a_field_of_a_valid_message_replaced_by_a_hostile_value(msg, data):
    body = msgspec.msgpack.decode(encode_message(msg, "cluster")[codec.HEADER_SIZE:])
    paths = list(_leaves(body))
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        body = _replace(body, path, data.draw(hostile_values))
        paths = list(_leaves(body))
    decode_or_decode_error(codec.MAGIC + bytes([codec.PROTOCOL_VERSION]) + msgspec.msgpack.encode(body))


@settings(max_examples=300, deadline=None)
@given(messages, st.data())
def test_byte_mutations_of_valid_encodings_decode_within_bounds_or_fail(msg, data):
    encoded = bytearray(encode_message(msg, "cluster"))
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    for _ in range(data.draw(st.integers(1, 6))):
        op = rng.randrange(3)
        pos = rng.randrange(len(encoded))
        if op == 0:
            encoded[pos] = rng.randrange(256)
        elif op == 1:
            encoded[pos:pos] = bytes([rng.randrange(256)])
        elif len(encoded) > codec.HEADER_SIZE:
            del encoded[pos]
    decode_or_decode_error(bytes(encoded))


@settings(max_examples=300, deadline=None)
@given(messages, st.sampled_from(["", "c", "0123456789abcdef"]))
def test_generated_valid_messages_round_trip_within_bounds(msg, cluster_id):
    got_cluster, got = decode_message(encode_message(msg, cluster_id))
    assert (got_cluster, got) == (cluster_id, msg)
    assert_within_bounds(got_cluster, got)


def test_a_message_without_fields_still_checks_its_ids():
    assert decode_message(encode_message(TimeoutNow(1, "a", "b"), "c"))[1] == TimeoutNow(1, "a", "b")
