"""The udp datagram format: header, records, and what parsing refuses."""
from __future__ import annotations

import pytest

from keyval_plugins.transport import udp_wire as wire


def datagram(*records: bytes, sender: bytes = b"n1", flags: int = 0) -> bytes:
    return wire.pack_header(flags, 0xABCDEF, 42, sender) + b"".join(records)


def test_header_round_trip():
    header, body = wire.unpack(datagram(wire.pack_record(1, 0, 1, 3, b"abc"), flags=wire.FLAG_SEALED))
    assert (header.sender, header.epoch, header.seq, header.sealed) == ("n1", 0xABCDEF, 42, True)
    assert wire.peek_flags(datagram(flags=1)) == 1
    assert len(datagram()) == wire.HEADER_FIXED + 2


def test_several_records_back_to_back():
    d = datagram(wire.pack_record(1, 0, 1, 3, b"abc"), wire.pack_record(2, 0, 1, 0, b""),
                 wire.pack_record(3, 1, 3, 10, b"dddd"), wire.pack_record(4, 0, 1, 2, b"zz"))
    _, body = wire.unpack(d)
    got = [(m, i, n, t, bytes(data)) for m, i, n, t, data in wire.records(body)]
    assert got == [(1, 0, 1, 3, b"abc"), (2, 0, 1, 0, b""), (3, 1, 3, 10, b"dddd"), (4, 0, 1, 2, b"zz")]


@pytest.mark.parametrize("body", [
    b"",                                            # no records at all
    wire.record_header(1, 0, 1, 5)[:10],            # truncated record header
    wire.pack_record(1, 0, 1, 5, b"abc"),           # runs past the end
    wire.pack_record(1, 0, 0, 5, b"abcde"),         # zero fragments
    wire.pack_record(1, 5, 2, 10, b"abcde"),        # index beyond count
])
def test_impossible_records_are_refused(body):
    _, view = wire.unpack(datagram(body))
    with pytest.raises(wire.BadDatagram):
        list(wire.records(view))


@pytest.mark.parametrize("data", [b"", b"K", b"KU\x02" + bytes(40), b"KV\x01" + bytes(40),
                                  wire.pack_header(0, 1, 1, b"ab")[:-1],
                                  wire.pack_header(0, 1, 1, b"\xff\xfe")])
def test_bad_headers_are_refused(data):
    with pytest.raises(wire.BadDatagram):
        wire.peek_flags(data)
        wire.unpack(data)


def test_sender_ids_are_bounded():
    assert wire.encode_sender("é" * 10) == "é".encode() * 10
    with pytest.raises(ValueError):
        wire.encode_sender("")
    with pytest.raises(ValueError):
        wire.encode_sender("x" * 256)
