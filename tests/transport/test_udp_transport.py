"""The udp transport end to end on loopback: big messages, authentication, replays, hostility."""
from __future__ import annotations

import asyncio
import logging
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyval.peer.auth import Authenticator
from keyval.peer import codec
from keyval.peer.codec import encode_message
from keyval.errors import ConfigError
from keyval.plugin_api.loading import build_plugin_manager, choose_transport
from keyval.raft.messages import AppendEntries, InstallSnapshot
from keyval.raft.types import Entry, Membership, SnapshotMeta
from keyval_plugins.transport import udp_wire as wire
from keyval_plugins.transport.udp import UdpTransport
from test_udp_support import Sink, addr_tuple, hb, raw_udp_socket, run, wait_until, write_secret

#: A snapshot always carries a configuration with a voter; peers refuse one without.
VOTERS = Membership(frozenset({"a", "b"}))


async def pair(opts_a=None, opts_b=None):
    a, b = UdpTransport(opts_a or {}), UdpTransport(opts_b or {})
    sa, sb = Sink(), Sink()
    await a.start("a", "127.0.0.1:0", sa)
    await b.start("b", "127.0.0.1:0", sb)
    return a, b, sa, sb


async def close(*transports):
    for t in transports:
        await t.close()


def test_udp_is_chosen_through_the_plugin_manager():
    backend = choose_transport(build_plugin_manager(), "udp")
    assert isinstance(backend.factory({}), UdpTransport)


def test_messages_cross_both_ways():
    async def go():
        a, b, sa, sb = await pair()
        entries = tuple(Entry(1, i, data=b"x" * 100) for i in range(1, 6))
        a.send("b", b.address, AppendEntries(1, "a", "b", 0, 0, entries, 3))
        b.send("a", a.address, hb("b", "a"))
        await wait_until(lambda: len(sa) == 1 and len(sb) == 1)
        assert sb.messages[0].entries == entries
        assert (a.stats()["sent"], b.stats()["received"]) == (1, 1)
        await close(a, b)
    run(go())


def test_ten_megabyte_message_crosses_in_fragments():
    async def go():
        a, b, _, sb = await pair()
        data = random.Random(7).randbytes(10 * 1024 * 1024)
        a.send("b", b.address, InstallSnapshot(2, "a", "b", SnapshotMeta(9, 2, VOTERS), 0, data, True))
        await wait_until(lambda: len(sb) == 1, timeout=10)
        assert sb.messages[0].data == data
        assert b.stats()["datagrams_received"] > 100
        assert b.stats()["reassembly_bytes_held"] == 0
        await close(a, b)
    run(go())


def test_small_datagrams_work_too():
    async def go():
        a, b, _, sb = await pair({"max_datagram_bytes": 1400}, {"max_datagram_bytes": 1400})
        data = bytes(300_000)
        a.send("b", b.address, InstallSnapshot(2, "a", "b", SnapshotMeta(9, 2, VOTERS), 0, data, True))
        await wait_until(lambda: len(sb) == 1)
        assert sb.messages[0].data == data
        assert a.stats()["datagrams_sent"] >= 300_000 // 1400
        await close(a, b)
    run(go())


def test_authenticated_pair_and_a_bad_hmac(tmp_path):
    good = write_secret(tmp_path / "good")
    bad = write_secret(tmp_path / "bad", b"another-secret")

    async def go():
        a, b, _, sb = await pair({"secret_file": good}, {"secret_file": good})
        intruder = UdpTransport({"secret_file": bad})
        await intruder.start("a", "127.0.0.1:0", Sink())
        intruder.send("b", b.address, hb())
        await wait_until(lambda: b.stats()["dropped_auth"] == 1)
        a.send("b", b.address, hb(commit=5))
        await wait_until(lambda: len(sb) == 1)
        assert sb.messages[0].commit == 5
        await close(a, b, intruder)
    run(go())


def test_sealed_and_unsealed_peers_do_not_mix(tmp_path):
    secret = write_secret(tmp_path / "s")

    async def go():
        a, b, sa, sb = await pair({}, {"secret_file": secret})
        a.send("b", b.address, hb())
        b.send("a", a.address, hb("b", "a"))
        await wait_until(lambda: a.stats()["dropped_auth"] == 1 and b.stats()["dropped_auth"] == 1)
        assert len(sa) == len(sb) == 0
        await close(a, b)
    run(go())


def test_replayed_datagram_is_dropped(tmp_path):
    secret = write_secret(tmp_path / "s")

    async def go():
        a, b, _, sb = await pair({"secret_file": secret}, {"secret_file": secret})
        tap = raw_udp_socket()
        tap_addr = "127.0.0.1:%d" % tap.getsockname()[1]
        a.send("b", tap_addr, hb(commit=1))
        loop = asyncio.get_running_loop()
        captured = await loop.run_in_executor(None, tap.recv, 65536)
        for _ in range(3):
            tap.sendto(captured, addr_tuple(b.address))
        await wait_until(lambda: b.stats()["dropped_replay"] == 2)
        assert [m.commit for m in sb.messages] == [1]
        tap.close()
        await close(a, b)
    run(go())


def test_wrong_cluster_id_is_dropped_then_the_right_one_served():
    async def go():
        a, b, _, sb = await pair()
        b.set_cluster_id("cluster-1")
        a.set_cluster_id("cluster-2")
        a.send("b", b.address, hb())
        await wait_until(lambda: b.stats()["dropped_cluster"] == 1)
        a.set_cluster_id("cluster-1")
        a.send("b", b.address, hb(commit=2))
        await wait_until(lambda: len(sb) == 1)
        assert sb.messages[0].commit == 2
        await close(a, b)
    run(go())


def test_sender_id_must_match_the_message():
    async def go():
        a, b, _, sb = await pair()
        a.send("b", b.address, hb(frm="someone-else"))
        await wait_until(lambda: b.stats()["dropped_decode"] == 1)
        assert len(sb) == 0
        await close(a, b)
    run(go())


def hostile_datagrams(rng: random.Random) -> list[bytes]:
    sender = wire.encode_sender("a")
    out = [b"", b"K", b"KU", rng.randbytes(30), rng.randbytes(2000), b"KV\x01" + rng.randbytes(50)]
    for _ in range(200):
        count = rng.choice([0, 1, 2, 3, 2**32 - 1])
        total = rng.choice([0, 10, 1000, 2**32 - 1, 64 * 1024 * 1024])
        index = rng.choice([0, 1, count, 2**32 - 1])
        header = wire.pack_header(rng.choice([0, 1, 255]), rng.getrandbits(64), rng.getrandbits(64), sender)
        record = wire.record_header(rng.getrandbits(32), index, count, total)
        out.append(header + record + rng.randbytes(rng.choice([0, 5, 500, 1000])))
    # A whole, valid-looking datagram whose message is garbage.
    out.append(wire.pack_header(0, 1, 1, sender) + wire.pack_record(1, 0, 1, 40, rng.randbytes(40)))
    return out


def test_garbage_from_a_raw_socket_leaves_the_receiver_serving():
    async def go():
        a, b, _, sb = await pair()
        raw = raw_udp_socket()
        for datagram in hostile_datagrams(random.Random(3)):
            raw.sendto(datagram, addr_tuple(b.address))
        a.send("b", b.address, hb(commit=42))
        await wait_until(lambda: any(m.commit == 42 for m in sb.messages))
        stats = b.stats()
        assert stats["dropped_decode"] + stats["dropped_fragment_bogus"] + stats["dropped_too_large"] > 0
        assert stats["reassembly_bytes_held"] <= b.options.reassembly_bytes
        raw.close()
        await close(a, b)
    run(go())


records = st.builds(wire.record_header, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
                    st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
small_records = st.builds(lambda i, n, t, d: wire.record_header(1, i, n, t) + d, st.integers(0, 3),
                          st.integers(0, 4), st.integers(0, 40), st.binary(max_size=40))
datagrams = st.builds(
    lambda h, body: h + b"".join(body),
    st.builds(wire.pack_header, st.integers(0, 255), st.integers(0, 2**64 - 1),
              st.integers(0, 2**64 - 1), st.just(b"a")),
    st.lists(st.one_of(records, small_records, st.binary(max_size=100)), max_size=5),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=200), datagrams), max_size=30))
def test_no_datagram_raises_out_of_the_receive_path(datagrams):
    transport = UdpTransport({"reassembly_bytes": 64 * 1024 * 1024})
    transport._deliver = Sink()
    for datagram in datagrams:
        transport._on_datagram(datagram)
    assert transport._reassembler.held <= transport.options.reassembly_bytes


def test_hostile_fragments_cannot_exceed_the_memory_bound():
    t = UdpTransport({"reassembly_bytes": 1_000_000, "max_message_bytes": 1_000_000})
    t._deliver = Sink()
    sender = wire.encode_sender("a")
    for message_id in range(500):
        # Each claims a 900 kB message and sends one 10 kB fragment of it.
        t._on_datagram(wire.pack_header(0, 1, message_id + 1, sender)
                       + wire.pack_record(message_id, 0, 90, 900_000, bytes(10_000)))
        assert t._reassembler.held <= 1_000_000
    assert t.stats()["dropped_reassembly_evicted"] > 0


def test_send_never_raises_and_full_queues_are_counted():
    async def go():
        a, b, _, _ = await pair({"send_queue_bytes": 100_000})
        big = InstallSnapshot(1, "a", "b", SnapshotMeta(), 0, bytes(200_000), True)
        a.send("b", b.address, big)
        a.send("nobody", "no-such-host.invalid:1", hb())
        a.send("closed", "127.0.0.1:1", hb())
        await wait_until(lambda: a.stats()["dropped_unresolved"] == 1)
        assert a.stats()["dropped_queue_full"] == 1
        await close(a, b)
        a.send("b", b.address, hb())  # after close: silently nothing
    run(go())


def test_unauthenticated_start_is_logged_once(caplog):
    async def go():
        with caplog.at_level(logging.WARNING, logger="keyval_plugins.transport.udp"):
            a, b, _, _ = await pair()
            await close(a, b)
    run(go())
    lines = [r.getMessage() for r in caplog.records if "unauthenticated" in r.getMessage()]
    assert len(lines) == 2  # one per transport started


def test_bad_options_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown udp option"):
        UdpTransport({"max_datagram": 1})
    with pytest.raises(ConfigError, match="max_datagram_bytes"):
        UdpTransport({"max_datagram_bytes": 70_000})
    loose = tmp_path / "loose"
    loose.write_bytes(b"secret")
    loose.chmod(0o644)
    with pytest.raises(ConfigError, match="0600"):
        UdpTransport({"secret_file": str(loose)})


def test_sealed_datagram_layout(tmp_path):
    """The documented format: fixed header, sender id, one record, then the 32-byte tag."""
    secret = write_secret(tmp_path / "s")

    async def go():
        a = UdpTransport({"secret_file": secret})
        await a.start("a", "127.0.0.1:0", Sink())
        tap = raw_udp_socket()
        a.send("b", "127.0.0.1:%d" % tap.getsockname()[1], hb())
        data = await asyncio.get_running_loop().run_in_executor(None, tap.recv, 65536)
        header, body = wire.unpack(Authenticator(b"s3cret-for-tests").open(data))
        assert data[:4] == b"KU\x01\x01"
        assert struct.unpack(">Q", data[12:20])[0] == header.seq and header.sender == "a"
        [(_, index, count, total, fragment)] = list(wire.records(body))
        assert (index, count, total) == (0, 1, len(fragment))
        # "b" has not spoken yet: it is written the oldest version this release speaks
        assert bytes(fragment) == encode_message(hb(), "", codec.MIN_PROTOCOL_VERSION)
        tap.close()
        await a.close()
    run(go())


def test_small_messages_queued_together_share_datagrams():
    async def go():
        a, b, _, sb = await pair()
        for i in range(300):
            a.send("b", b.address, hb(commit=i))
        await wait_until(lambda: len(sb) == 300)
        assert [m.commit for m in sb.messages] == list(range(300))
        assert a.stats()["datagrams_sent"] < 10
        await close(a, b)
    run(go())


def test_every_bit_flip_of_a_sealed_datagram_is_refused(tmp_path):
    secret = write_secret(tmp_path / "s")

    async def capture() -> bytes:
        a = UdpTransport({"secret_file": secret})
        await a.start("a", "127.0.0.1:0", Sink())
        tap = raw_udp_socket()
        a.send("b", "127.0.0.1:%d" % tap.getsockname()[1], hb())
        data = await asyncio.get_running_loop().run_in_executor(None, tap.recv, 65536)
        tap.close()
        await a.close()
        return data

    data = run(capture())
    b = UdpTransport({"secret_file": secret})
    sink = Sink()
    b._deliver = sink
    for bit in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        b._on_datagram(bytes(flipped))
    assert len(sink) == 0
    b._on_datagram(data)
    assert len(sink) == 1
