"""Fragmentation and reassembly, without a network: order, loss, duplicates, bounds, hostility."""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyval_plugins.transport.udp_fragment import (
    FRAGMENT_OVERHEAD,
    MESSAGE_OVERHEAD,
    Reassembler,
    expected_length,
    split,
)

MiB = 1024 * 1024


def fragments_of(payload: bytes, room: int) -> list[tuple[int, int, int, bytes]]:
    parts = split(payload, room)
    return [(i, len(parts), len(payload), bytes(p)) for i, p in enumerate(parts)]


def make(max_bytes: int = 4 * MiB, timeout: float = 5.0, max_message: int = 4 * MiB) -> Reassembler:
    return Reassembler(max_bytes, timeout, max_message)


@pytest.mark.parametrize("size", [0, 1, 99, 100, 101, 1000, 12345])
def test_split_balances_fragments_within_room(size):
    payload = bytes(range(256)) * (size // 256 + 1)
    payload = payload[:size]
    parts = split(payload, 100)
    assert b"".join(parts) == payload
    assert all(len(p) <= 100 for p in parts)
    assert len({len(p) for p in parts[:-1]}) <= 1  # all but the last have the same size
    for i, p in enumerate(parts):
        assert expected_length(size, len(parts), i) == len(p)


def test_in_order_reassembly_returns_the_message_on_the_last_fragment():
    r = make()
    payload = random.Random(1).randbytes(5000)
    frags = fragments_of(payload, 700)
    results = [r.add("m", i, n, total, data, now=0.0) for i, n, total, data in frags]
    assert results[:-1] == [None] * (len(frags) - 1)
    assert results[-1] == payload
    assert r.held == 0 and len(r) == 0 and r.stats.completed == 1


def test_reordered_fragments_reassemble():
    r = make()
    payload = random.Random(2).randbytes(10_000)
    frags = fragments_of(payload, 333)
    random.Random(3).shuffle(frags)
    out = [r.add("m", *f, now=0.0) for f in frags]
    assert [o for o in out if o is not None] == [payload]


def test_duplicate_fragments_are_counted_and_ignored():
    r = make()
    payload = b"abcdefghij" * 30
    frags = fragments_of(payload, 100)
    assert r.add("m", *frags[0], now=0.0) is None
    assert r.add("m", *frags[0], now=0.0) is None
    assert r.stats.duplicate == 1
    assert r.add("m", *frags[1], now=0.0) is None
    assert r.add("m", *frags[2], now=0.0) == payload


def test_interleaved_messages_from_different_keys():
    r = make()
    a, b = b"A" * 900, b"B" * 900
    fa, fb = fragments_of(a, 100), fragments_of(b, 100)
    done = []
    for x, y in zip(fa, fb):
        done += [r.add(("s", 1), *x, now=0.0), r.add(("s", 2), *y, now=0.0)]
    assert [d for d in done if d] == [a, b]


def test_lost_fragment_leaves_message_incomplete_until_timeout():
    r = make(timeout=2.0)
    frags = fragments_of(b"x" * 1000, 100)
    for f in frags[:-1]:
        assert r.add("m", *f, now=0.0) is None
    assert len(r) == 1 and r.held > 0
    assert r.expire(now=1.9) == 0
    assert r.expire(now=2.0) == 1
    assert len(r) == 0 and r.held == 0 and r.stats.timed_out == 1
    # The late last fragment starts a new (doomed) message rather than resurrecting the old.
    assert r.add("m", *frags[-1], now=2.1) is None


def test_timeout_is_also_applied_when_fragments_arrive():
    r = make(timeout=1.0)
    f = fragments_of(b"y" * 300, 100)
    r.add("old", *f[0], now=0.0)
    r.add("new", *f[0], now=5.0)
    assert r.stats.timed_out == 1 and len(r) == 1


def test_memory_bound_evicts_oldest_incomplete_messages():
    # Room for one whole message, not for two halves.
    limit = 6000 + MESSAGE_OVERHEAD + 6 * FRAGMENT_OVERHEAD + 60
    r = make(max_bytes=limit, max_message=6000)
    frag = fragments_of(b"z" * 6000, 1000)
    for key in range(5):
        for f in frag[:3]:  # three of six fragments of each message: all stay incomplete
            r.add(key, *f, now=float(key))
        assert r.held <= limit
    assert r.stats.evicted == 4
    assert len(r) == 1
    # The survivor is the newest one and still completes.
    out = [r.add(4, *f, now=5.0) for f in frag[3:]]
    assert out[-1] == b"z" * 6000


def test_a_message_larger_than_the_bound_is_refused_without_evicting_others():
    r = make(max_bytes=5000, max_message=1_000_000)
    r.add("keep", *fragments_of(b"k" * 400, 100)[0], now=0.0)
    huge = fragments_of(b"h" * 20_000, 1000)
    assert r.add("huge", *huge[0], now=0.0) is None
    assert r.stats.too_large == 1 and r.stats.evicted == 0 and len(r) == 1


def test_header_claiming_more_than_max_message_is_refused():
    r = make(max_message=1000)
    assert r.add("m", 0, 2, 2000, b"a" * 1000, now=0.0) is None
    assert r.stats.too_large == 1 and r.held == 0


@pytest.mark.parametrize("index,count,total,length", [
    (0, 0, 10, 10),       # no fragments
    (3, 3, 30, 10),       # index out of range
    (0, 5, 3, 1),         # more fragments than bytes
    (0, 2, 10, 4),        # wrong length for the geometry (chunk is 5)
    (1, 2, 10, 6),        # overlapping / too long last fragment
    (0, 1, 0, 1),         # empty message with a byte in it
    (0, 1, 5, 4),         # truncated single fragment
])
def test_impossible_headers_are_bogus(index, count, total, length):
    r = make()
    assert r.add("m", index, count, total, b"q" * length, now=0.0) is None
    assert r.stats.bogus == 1 and r.held == 0


def test_fragment_disagreeing_with_its_message_is_bogus():
    r = make()
    r.add("m", 0, 3, 300, b"a" * 100, now=0.0)
    assert r.add("m", 1, 2, 200, b"b" * 100, now=0.0) is None
    assert r.stats.bogus == 1


def test_accounting_matches_what_is_held():
    r = make()
    r.add("m", 0, 3, 300, b"a" * 100, now=0.0)
    r.add("m", 1, 3, 300, b"a" * 100, now=0.0)
    assert r.held == MESSAGE_OVERHEAD + 2 * (100 + FRAGMENT_OVERHEAD)


headers = st.tuples(
    st.one_of(st.integers(0, 8), st.integers(0, 2**32 - 1)),  # key
    st.integers(0, 2**32 - 1),                                   # index
    st.one_of(st.integers(0, 40), st.integers(0, 2**32 - 1)),    # count
    st.one_of(st.integers(0, 4000), st.integers(0, 2**32 - 1)),  # total
    st.binary(max_size=300),
    st.floats(0, 100),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(headers, max_size=60))
def test_hostile_fragments_never_raise_or_exceed_the_bound(fragments):
    limit = 8000
    r = Reassembler(limit, timeout=10.0, max_message=6000)
    now = 0.0
    for key, index, count, total, data, dt in fragments:
        now += dt
        out = r.add(key, index, count, total, data, now=now)
        assert out is None or len(out) == total
        assert 0 <= r.held <= limit
    r.expire(now + 1000)
    assert r.held == 0 and len(r) == 0


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=3000), st.integers(1, 500), st.randoms(use_true_random=False))
def test_any_payload_survives_shuffle_and_duplication(payload, room, rnd):
    r = make()
    frags = fragments_of(payload, room)
    frags = frags + rnd.sample(frags, len(frags) // 2)
    rnd.shuffle(frags)
    out = [o for o in (r.add("k", *f, now=0.0) for f in frags) if o is not None]
    assert out == [payload]
