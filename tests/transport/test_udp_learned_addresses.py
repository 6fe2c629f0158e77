"""The udp transport learns where a peer listens from the source of its accepted datagrams."""
from __future__ import annotations

import asyncio

from keyval.peer.codec import encode_message
from keyval_plugins.transport import udp_wire as wire
from keyval_plugins.transport.udp import UdpTransport
from test_udp_support import Sink, addr_tuple, hb, raw_udp_socket, run, wait_until, write_secret


def datagram(sender: str, seq: int, message) -> bytes:
    encoded = encode_message(message, "")
    return wire.pack_header(0, 1, seq, wire.encode_sender(sender)) + wire.pack_record(1, 0, 1, len(encoded), encoded)


def test_the_source_of_an_accepted_datagram_is_where_its_sender_listens():
    async def go():
        b, sb = UdpTransport({}), Sink()
        await b.start("b", "127.0.0.1:0", sb)
        with raw_udp_socket() as sock:
            sock.sendto(datagram("a", 1, hb("a", "b")), addr_tuple(b.address))
            await wait_until(lambda: len(sb) == 1)
            b.send("a", None, hb("b", "a", 2))
            answer, _ = await asyncio.get_running_loop().run_in_executor(None, sock.recvfrom, 65536)
        assert wire.unpack(answer)[0].sender == "b"
        await b.close()
    run(go())


def test_a_datagram_that_is_refused_teaches_nothing(tmp_path):
    async def go():
        secret = {"secret_file": write_secret(tmp_path / "secret")}
        a, b = UdpTransport(secret), UdpTransport(secret)
        sa, sb = Sink(), Sink()
        await a.start("a", "127.0.0.1:0", sa)
        await b.start("b", "127.0.0.1:0", sb)
        a.send("b", b.address, hb("a", "b"))
        await wait_until(lambda: len(sb) == 1)
        with raw_udp_socket() as forger:  # claims to be a, unsealed
            forger.sendto(datagram("a", 99, hb("a", "b", 9)), addr_tuple(b.address))
            await wait_until(lambda: b.stats()["dropped_auth"] == 1)
        b.send("a", None, hb("b", "a", 3))
        await wait_until(lambda: len(sa) == 1)  # still answered at a's own address
        await a.close()
        await b.close()
    run(go())
