"""Per-peer version negotiation (keyval.peer.versions), alone and through real transports."""
from __future__ import annotations

import asyncio

import pytest

from keyval import __version__
from keyval.peer import codec
from keyval.peer.codec import Advert, decode_envelope, encode_message
from keyval.peer.versions import PeerVersion, PeerVersions
from keyval.raft.messages import Heartbeat
from keyval_plugins.transport.tcp_transport import TcpTransport
from keyval_plugins.transport.udp import UdpTransport


def test_a_peer_not_heard_from_is_written_the_oldest_version():
    assert PeerVersions().send_version("n2") == codec.MIN_PROTOCOL_VERSION == 1


def test_an_advert_raises_the_version_to_what_both_decode():
    table = PeerVersions()
    table.heard("n2", Advert(2, "0.2.0"))
    assert table.send_version("n2") == 2 and table.get("n2") == PeerVersion(2, "0.2.0")
    table.heard("n3", Advert(9, "3.0.0"))  # a newer peer: it still decodes ours
    assert table.send_version("n3") == codec.PROTOCOL_VERSION
    table.heard("n4", Advert(1, "0.1.5"))  # a release advertising 1 only
    assert table.send_version("n4") == 1


def test_a_plain_v1_message_means_0_1_0_again_a_rollback():
    table = PeerVersions()
    table.heard("n2", Advert(2, "0.2.0"))
    table.heard("n2", None)
    assert table.send_version("n2") == 1 and table.get("n2") == PeerVersion(1, None)
    table.heard("n2", Advert(2, "0.2.0"))  # upgraded again
    assert table.send_version("n2") == 2


def test_the_json_of_status():
    table = PeerVersions()
    table.heard("n3", None)
    table.heard("n2", Advert(2, "0.2.0"))
    assert table.as_json() == {"n2": {"version": "0.2.0", "protocol": 2}, "n3": {"version": None, "protocol": 1}}


def test_the_table_is_bounded_and_keeps_the_most_recently_heard():
    table = PeerVersions(limit=3)
    for peer in ("a", "b", "c"):
        table.heard(peer, Advert(2, "0.2.0"))
    table.heard("a", Advert(2, "0.2.0"))  # heard again: most recent
    table.heard("d", None)
    assert sorted(table.as_json()) == ["a", "c", "d"]


class Inbox:
    def __init__(self) -> None:
        self.got: list = []

    def __call__(self, message) -> None:
        self.got.append(message)


@pytest.mark.parametrize("kind", [TcpTransport, UdpTransport])
def test_two_transports_move_from_v1_to_v2_and_record_each_other(kind):
    """Real sockets: a first message goes out as v1 (plus the advert); once the other side
    has spoken, each writes v2; each node's table names the other's release."""

    async def go():
        a, b = kind({}), kind({})
        va, vb = PeerVersions(), PeerVersions()
        a.use_peer_versions(va)
        b.use_peer_versions(vb)
        ina, inb = Inbox(), Inbox()
        await a.start("a", "127.0.0.1:0", ina)
        await b.start("b", "127.0.0.1:0", inb)
        try:
            assert va.send_version("b") == 1
            a.send("b", b.address, Heartbeat(1, "a", "b", 0))
            await _until(lambda: inb.got)
            assert vb.get("a") == PeerVersion(2, __version__)  # learned from a v1 message's advert
            b.send("a", a.address, Heartbeat(1, "b", "a", 0))
            await _until(lambda: ina.got)
            assert va.get("b") == PeerVersion(2, __version__) and va.send_version("b") == 2
            assert vb.send_version("a") == 2
        finally:
            await a.close()
            await b.close()

    asyncio.run(go())


def test_what_a_node_writes_to_each_peer_follows_the_table():
    hb = Heartbeat(1, "a", "b", 0)
    table = PeerVersions()
    assert encode_message(hb, "c", table.send_version("b"))[2] == 1
    table.heard("b", decode_envelope(encode_message(Heartbeat(1, "b", "a", 0), "c", 1))[2])
    assert encode_message(hb, "c", table.send_version("b"))[2] == 2


async def _until(predicate, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_forget_writes_the_oldest_version_again():
    table = PeerVersions()
    table.heard("b", Advert(2, "0.2.0"))
    table.forget("b")
    table.forget("never-heard")
    assert table.send_version("b") == 1 and table.get("b") is None


def test_a_new_tcp_connection_forgets_what_the_peer_said_before():
    """The peer restarted (perhaps rolled back to 0.1.0): until it speaks again it is written
    protocol 1, which every release decodes."""

    async def go():
        a, b = TcpTransport({}), TcpTransport({})
        va = PeerVersions()
        a.use_peer_versions(va)
        ina, inb = Inbox(), Inbox()
        await a.start("a", "127.0.0.1:0", ina)
        await b.start("b", "127.0.0.1:0", inb)
        address = b.address
        try:
            a.send("b", address, Heartbeat(1, "a", "b", 0))
            await _until(lambda: inb.got)
            b.send("a", a.address, Heartbeat(1, "b", "a", 0))
            await _until(lambda: va.send_version("b") == 2)
            await b.close()
            b = TcpTransport({})
            inb2 = Inbox()
            await b.start("b", address, inb2)
            # the old connection breaks; the next dial reaches the restarted peer
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while not inb2.got:
                assert loop.time() < deadline, "no message reached the restarted peer"
                a.send("b", address, Heartbeat(1, "a", "b", 0))
                await asyncio.sleep(0.1)
            assert va.get("b") is None and va.send_version("b") == 1
        finally:
            await a.close()
            await b.close()

    asyncio.run(go())
