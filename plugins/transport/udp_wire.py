"""The datagram format of the ``udp`` transport.

One datagram (all integers big-endian)::

    offset size  field
    0      2     magic b"KU"
    2      1     datagram format version (1)
    3      1     flags: bit 0 set = sealed (an HMAC-SHA256 tag of 32 bytes ends the datagram)
    4      8     epoch: random, chosen when the sending transport starts
    12     8     seq: the sender's datagram counter (never repeats within an epoch)
    20     4     message id: the sender's message counter (wraps), keys reassembly
    24     4     fragment index (0-based)
    28     4     fragment count
    32     4     total length of the encoded message
    36     1     length L of the sender's node id
    37     L     sender's node id (UTF-8)
    37+L   ...   fragment bytes: part of one ``keyval.codec`` encoded message
    [end-32 32   HMAC tag over everything before it, when sealed]

When sealed, the tag covers the whole header, so the sender id, epoch and sequence number
that replay protection relies on cannot be altered. The encoded message inside carries the
codec's own protocol version and the cluster id.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

MAGIC = b"KU"
FORMAT_VERSION = 1
FLAG_SEALED = 0x01

_FIXED = struct.Struct(">2sBBQQIIIIB")
FIXED_SIZE = _FIXED.size  # 37
MAX_SENDER_ID = 255
#: The largest UDP payload over IPv4.
MAX_UDP_PAYLOAD = 65507


class BadDatagram(Exception):
    """The bytes are not a datagram of this format."""


@dataclass(frozen=True, slots=True)
class Header:
    flags: int
    epoch: int
    seq: int
    message_id: int
    index: int
    count: int
    total: int
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
    return FIXED_SIZE + len(sender_raw)


def pack_header(flags: int, epoch: int, seq: int, message_id: int, index: int, count: int,
                total: int, sender_raw: bytes) -> bytes:
    return _FIXED.pack(MAGIC, FORMAT_VERSION, flags, epoch, seq, message_id & 0xFFFFFFFF,
                       index, count, total, len(sender_raw)) + sender_raw


def peek_flags(data: bytes | memoryview) -> int:
    """The flags of a datagram, read before it is authenticated; raises BadDatagram."""
    if len(data) < FIXED_SIZE or data[:2] != MAGIC:
        raise BadDatagram("bad magic or too short")
    if data[2] != FORMAT_VERSION:
        raise BadDatagram(f"datagram format {data[2]} not understood")
    return data[3]


def unpack(data: bytes | memoryview) -> tuple[Header, memoryview]:
    """The header and the fragment bytes of an (already opened) datagram; raises BadDatagram."""
    view = memoryview(data)
    if len(view) < FIXED_SIZE:
        raise BadDatagram("too short")
    magic, version, flags, epoch, seq, message_id, index, count, total, id_len = _FIXED.unpack_from(view)
    if magic != MAGIC or version != FORMAT_VERSION:
        raise BadDatagram("bad magic or format version")
    end = FIXED_SIZE + id_len
    if id_len == 0 or len(view) < end:
        raise BadDatagram("truncated sender id")
    try:
        sender = str(view[FIXED_SIZE:end], "utf-8")
    except UnicodeDecodeError:
        raise BadDatagram("sender id is not UTF-8") from None
    return Header(flags, epoch, seq, message_id, index, count, total, sender), view[end:]
