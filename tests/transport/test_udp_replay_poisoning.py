"""The udp replay window cannot be moved by a datagram that did not authenticate (issue 11).

The attack: a datagram of the leader re-sent with sequence number 2**62 made the follower
drop every real datagram from the leader, as "too old", until the leader restarted.
"""
from __future__ import annotations

import asyncio

import pytest

from keyval_plugins.transport import udp_wire as wire
from test_udp_support import addr_tuple, hb, raw_udp_socket, run, wait_until, write_secret
from test_udp_transport import close, pair

SEQ_OFFSET = 12  # magic 2, version 1, flags 1, epoch 8: then the sequence number (udp_wire)


def renumbered(datagram: bytes, seq: int) -> bytes:
    return datagram[:SEQ_OFFSET] + seq.to_bytes(8, "big") + datagram[SEQ_OFFSET + 8:]


async def captured_datagram(a, tap) -> bytes:
    a.send("b", "127.0.0.1:%d" % tap.getsockname()[1], hb(commit=1))
    return await asyncio.get_running_loop().run_in_executor(None, tap.recv, 65536)


@pytest.mark.parametrize("sealed", [True, False], ids=["secret", "insecure"])
def test_a_forged_sequence_of_2_62_does_not_stop_real_traffic(tmp_path, sealed):
    options = {"secret_file": write_secret(tmp_path / "s")} if sealed else {}

    async def go():
        a, b, _, sb = await pair(options, options)
        tap = raw_udp_socket()
        forged = renumbered(await captured_datagram(a, tap), 2**62)
        assert wire.unpack(forged if not sealed else forged[:-32])[0].seq == 2**62
        a.send("b", b.address, hb(commit=2))
        await wait_until(lambda: [m.commit for m in sb.messages] == [2])
        for _ in range(3):
            tap.sendto(forged, addr_tuple(b.address))
        if sealed:  # the forged number broke the MAC: refused before any window saw it
            await wait_until(lambda: b.stats()["dropped_auth"] == 3)
        else:  # insecure mode delivers what anyone sends, but keeps no window to poison
            await wait_until(lambda: len(sb.messages) == 4)
        for commit in range(3, 8):
            a.send("b", b.address, hb(commit=commit))
        await wait_until(lambda: [m.commit for m in sb.messages if m.commit >= 3] == [3, 4, 5, 6, 7])
        assert b.stats()["dropped_replay"] == 0
        tap.close()
        await close(a, b)
    run(go())


def test_with_a_secret_a_captured_datagram_replays_into_nothing(tmp_path):
    options = {"secret_file": write_secret(tmp_path / "s")}

    async def go():
        a, b, _, sb = await pair(options, options)
        tap = raw_udp_socket()
        captured = await captured_datagram(a, tap)
        for _ in range(3):
            tap.sendto(captured, addr_tuple(b.address))
        await wait_until(lambda: b.stats()["dropped_replay"] == 2)
        assert [m.commit for m in sb.messages] == [1]
        a.send("b", b.address, hb(commit=2))
        await wait_until(lambda: [m.commit for m in sb.messages] == [1, 2])
        tap.close()
        await close(a, b)
    run(go())
