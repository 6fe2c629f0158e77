"""Properties of the UDP receive path: any datagrams in, only the transport's own counted
drops out, and what it holds for reassembly stays under its caps (issue 11, item 3).

The datagrams cross a real loopback socket into a real ``UdpTransport``; a good datagram sent
last from the same socket marks the point by which the hostile ones were all handled.
"""
from __future__ import annotations

import asyncio
import logging
import socket

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyval.peer.codec import encode_message
from keyval.raft.messages import Heartbeat
from keyval_plugins.transport import udp_wire as wire
from keyval_plugins.transport.udp import UdpTransport
from keyval_plugins.transport.udp_fragment import FRAGMENT_OVERHEAD, MESSAGE_OVERHEAD, Reassembler, split
from test_codec import messages
from test_codec_bounds import assert_within_bounds
from test_udp_support import Sink, addr_tuple, run, wait_until

CAPS = {"reassembly_bytes": 200_000, "max_message_bytes": 100_000, "reassembly_max_messages": 12,
        "reassembly_max_per_sender": 4}
SENDERS = [b"a", b"b", b"evil", b"n" * 255, b"", b"a\n", b"\xc3\xa9", b"\xff"]


class _Escaped(logging.Handler):
    """Catches the line the receive loop logs when handling a datagram raised."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "handling failed" in record.getMessage():
            self.lines.append(record.getMessage())


@st.composite
def records(draw) -> bytes:
    if draw(st.booleans()):  # fragments of a real message, possibly cut or mis-numbered
        encoded = encode_message(draw(messages), "")
        frags = split(encoded, draw(st.integers(1, max(1, len(encoded)))))
        i = draw(st.integers(0, len(frags) - 1))
        count = draw(st.sampled_from([len(frags), len(frags) + 1, 0, 2**32 - 1]))
        return wire.pack_record(draw(st.integers(0, 5)), i, count, len(encoded), bytes(frags[i]))
    total = draw(st.one_of(st.integers(0, 300), st.integers(0, 2**32 - 1)))
    count = draw(st.one_of(st.integers(0, 8), st.integers(0, 2**32 - 1)))
    index = draw(st.one_of(st.integers(0, 8), st.integers(0, 2**32 - 1)))
    return wire.pack_record(draw(st.integers(0, 2**32 - 1)), index, count, total, draw(st.binary(max_size=300)))


@st.composite
def datagrams(draw) -> bytes:
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return draw(st.binary(min_size=1, max_size=400))
    sender = draw(st.sampled_from(SENDERS))
    head = wire._HEADER.pack(wire.MAGIC, wire.FORMAT_VERSION, draw(st.sampled_from([0, 0, 1, 255])),
                             draw(st.sampled_from([0, 1, 2**64 - 1])), draw(st.integers(0, 2**64 - 1)),
                             draw(st.sampled_from([len(sender), 0, 255]))) + sender
    body = b"".join(draw(st.lists(records(), min_size=0, max_size=4)))
    data = head + body
    if kind == 1 and data:  # one byte changed
        pos = draw(st.integers(0, len(data) - 1))
        data = data[:pos] + bytes([draw(st.integers(0, 255))]) + data[pos + 1:]
    return data


def good_datagram(seq: int) -> bytes:
    encoded = encode_message(Heartbeat(1, "good", "b", 7), "")
    return wire.pack_header(0, 42, seq, b"good") + wire.pack_record(1, 0, 1, len(encoded), encoded)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(datagrams(), max_size=25))
def test_any_datagrams_only_counted_drops_and_memory_under_the_caps(sequence):
    escaped = _Escaped()
    logging.getLogger("keyval_plugins.transport.udp").addHandler(escaped)

    async def go():
        t, sink = UdpTransport(dict(CAPS)), Sink()
        await t.start("b", "127.0.0.1:0", sink)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind(("127.0.0.1", 0))
            for data in sequence:
                sock.sendto(data, addr_tuple(t.address))
            sock.sendto(good_datagram(len(sequence)), addr_tuple(t.address))
            await wait_until(lambda: any(m.frm == "good" for m in sink.messages))
            stats = t.stats()
            assert stats["reassembly_bytes_held"] <= CAPS["reassembly_bytes"]
            assert stats["reassembly_messages_held"] <= CAPS["reassembly_max_messages"]
            for m in sink.messages:
                assert_within_bounds("", m)
        finally:
            sock.close()
            await t.close()

    try:
        run(go())
    finally:
        logging.getLogger("keyval_plugins.transport.udp").removeHandler(escaped)
    assert escaped.lines == []


fragments = st.tuples(
    st.sampled_from(["a", "b", "c", "d"]),                       # sender
    st.integers(0, 6),                                           # message id
    st.integers(0, 5),                                           # index
    st.one_of(st.integers(1, 6), st.integers(0, 2**32 - 1)),     # count
    st.one_of(st.integers(0, 600), st.integers(0, 2**32 - 1)),   # total
    st.integers(0, 200),                                         # length
)


@settings(max_examples=400, deadline=None)
@given(st.lists(fragments, max_size=80), st.integers(1, 6), st.integers(1, 10))
def test_reassembly_holds_at_most_its_caps_per_sender_and_in_all(frags, per_sender, in_all):
    per_sender = min(per_sender, in_all)
    limits: list[str] = []
    r = Reassembler(5000, timeout=10.0, max_message=2000, max_messages=in_all, max_per_sender=per_sender,
                    on_limit=lambda kind, detail: limits.append(kind))
    for sender, message_id, index, count, total, length in frags:
        out = r.add((sender, message_id), index, count, total, b"x" * length, now=0.0, sender=sender)
        assert out is None or len(out) == total
        held = list(r._partials.values())
        assert len(held) <= in_all and r.held <= 5000
        for s in "abcd":
            assert sum(p.sender == s for p in held) <= per_sender
        assert r.held == sum(p.cost for p in held)
        assert all(p.cost >= MESSAGE_OVERHEAD + FRAGMENT_OVERHEAD * len(p.fragments) for p in held)
    assert len(limits) == r.stats.sender_limit + r.stats.message_limit
    r.expire(100.0)
    assert r.held == 0 and len(r) == 0 and r.senders() == 0


def test_one_sender_starting_many_messages_evicts_only_its_own():
    r = Reassembler(10_000, timeout=10.0, max_message=1000, max_messages=100, max_per_sender=2)
    r.add(("good", 1), 0, 2, 10, b"x" * 5, now=0.0, sender="good")
    for i in range(50):
        r.add(("evil", i), 0, 2, 10, b"x" * 5, now=0.0, sender="evil")
    assert r.stats.sender_limit == 48
    assert r.add(("good", 1), 1, 2, 10, b"y" * 5, now=0.0, sender="good") == b"x" * 5 + b"y" * 5


def test_a_sender_id_that_is_not_a_node_id_is_a_bad_datagram():
    for sender in (b"a\n", b"-a", b"a b", b"\xc3\xa9"):
        data = wire.pack_header(0, 1, 1, sender) + wire.pack_record(1, 0, 1, 1, b"x")
        try:
            wire.unpack(data)
        except wire.BadDatagram:
            continue
        raise AssertionError(f"{sender!r} accepted")


def test_reassembly_caps_are_validated_settings():
    import pytest

    from keyval.errors import ConfigError
    from keyval_plugins.transport.udp_options import UdpOptions

    assert UdpOptions.parse({}).reassembly_max_per_sender == 512
    for bad in ({"reassembly_max_per_sender": 0}, {"reassembly_max_messages": 4, "reassembly_max_per_sender": 5},
                {"reassembly_max_messages": "many"}):
        with pytest.raises(ConfigError, match="transport_options.reassembly_max"):
            UdpOptions.parse(bad)
