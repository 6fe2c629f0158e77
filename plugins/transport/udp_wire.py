"""The datagram format of the ``udp`` transport.

A datagram is a header followed by one or more records (all integers big-endian)::

    offset size  field
    0      2     magic b"KU"
    2      1     datagram format version (1)
    3      1     flags: bit 0 set = sealed (an HMAC-SHA256 tag of 32 bytes ends the datagram)
    4      8     epoch: random, chosen when the sending transport starts
    12     8     seq: the sender's datagram counter (never repeats within an epoch)
    20     1     length L of the sender's node id
    21     L     sender's node id (UTF-8)
    21+L   ...   records, back to back
    [end-32 32   HMAC tag over everything before it, when sealed]

    record:
    0      4     message id: the sender's message counter (wraps), keys reassembly
    4      4     fragment index (0-based)
    8      4     fragment count
    12     4     total length of the encoded message
    16     n     fragment bytes, part of one ``keyval.peer.codec`` encoded message

A record carries no length of its own: a message of ``total`` bytes in ``count`` fragments
has fragments of ``ceil(total / count)`` bytes (the last one shorter), so ``n`` follows from
the record header. A small message is one record (count 1) and several are coalesced into
one datagram when they are queued together; a large message is split so that each datagram
carries one of its fragments.

When sealed, the tag covers the whole datagram, so the sender id, epoch and sequence number
that replay protection relies on cannot be altered. The encoded message inside carries the
codec's own protocol version and the cluster id.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterator

from keyval.wire_bounds import MAX_NODE_ID, NODE_ID

from .udp_fragment import expected_length

MAGIC = b"KU"
FORMAT_VERSION = 1
FLAG_SEALED = 0x01

_HEADER = struct.Struct(">2sBBQQB")
HEADER_FIXED = _HEADER.size  # 21
_RECORD = struct.Struct(">IIII")
RECORD_HEADER = _RECORD.size  # 16
MAX_SENDER_ID = MAX_NODE_ID  # what the length byte can say
#: The largest UDP payload over IPv4.
MAX_UDP_PAYLOAD = 65507


class BadDatagram(Exception):
    """The bytes are not a datagram of this format."""


@dataclass(frozen=True, slots=True)
class Header:
    flags: int
    epoch: int
    seq: int
    sender: str

    @property
    def sealed(self) -> bool:
        return bool(self.flags & FLAG_SEALED)


def encode_sender(sender: str) -> bytes:
    raw = sender.encode()
    if not 0 < len(raw) <= MAX_SENDER_ID:
        raise ValueError(f"node id {sender!r} must be 1..{MAX_SENDER_ID} bytes of UTF-8")
    return raw


def header_size(sender_raw: bytes) -> int:
    return HEADER_FIXED + len(sender_raw)


def pack_header(flags: int, epoch: int, seq: int, sender_raw: bytes) -> bytes:
    return _HEADER.pack(MAGIC, FORMAT_VERSION, flags, epoch, seq, len(sender_raw)) + sender_raw


def record_header(message_id: int, index: int, count: int, total: int) -> bytes:
    return _RECORD.pack(message_id & 0xFFFFFFFF, index, count, total)


def pack_record(message_id: int, index: int, count: int, total: int, data: bytes | memoryview) -> bytes:
    return record_header(message_id, index, count, total) + data


def peek_flags(data: bytes | memoryview) -> int:
    """The flags of a datagram, read before it is authenticated; raises BadDatagram."""
    if len(data) < HEADER_FIXED or data[:2] != MAGIC:
        raise BadDatagram("bad magic or too short")
    if data[2] != FORMAT_VERSION:
        raise BadDatagram(f"datagram format {data[2]} not understood")
    return data[3]


def unpack(data: bytes | memoryview) -> tuple[Header, memoryview]:
    """The header and the records of an (already opened) datagram; raises BadDatagram."""
    view = memoryview(data)
    if len(view) < HEADER_FIXED:
        raise BadDatagram("too short")
    magic, version, flags, epoch, seq, id_len = _HEADER.unpack_from(view)
    if magic != MAGIC or version != FORMAT_VERSION:
        raise BadDatagram("bad magic or format version")
    end = HEADER_FIXED + id_len
    if id_len == 0 or len(view) < end:
        raise BadDatagram("truncated sender id")
    try:
        sender = str(view[HEADER_FIXED:end], "utf-8")
    except UnicodeDecodeError:
        raise BadDatagram("sender id is not UTF-8") from None
    if not NODE_ID.match(sender):
        # The sender id keys replay windows and reassembly quotas: only node ids get one.
        raise BadDatagram("sender id is not a node id")
    return Header(flags, epoch, seq, sender), view[end:]


Record = tuple[int, int, int, int, memoryview]


def records(body: memoryview) -> Iterator[Record]:
    """``(message_id, index, count, total, data)`` of each record; raises BadDatagram at the
    first record whose geometry is impossible or that runs past the end (the records after it
    cannot be found)."""
    pos, end = 0, len(body)
    if end == 0:
        raise BadDatagram("no records")
    while pos < end:
        if end - pos < RECORD_HEADER:
            raise BadDatagram("truncated record header")
        message_id, index, count, total = _RECORD.unpack_from(body, pos)
        pos += RECORD_HEADER
        n = total if count == 1 and index == 0 else expected_length(total, count, index)
        if n is None or pos + n > end:
            raise BadDatagram("record geometry impossible or past the end")
        yield message_id, index, count, total, body[pos:pos + n]
        pos += n
