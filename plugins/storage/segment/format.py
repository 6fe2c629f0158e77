"""The on-disk format of a log segment, and the recovery scan of one segment file.

A segment file ``DATA_DIR/log/<first index, 20 digits>.seg`` is::

    file header (32 bytes, little-endian)
      magic "KVLOGSEG" | format version u32 | flags u32 | first index u64 |
      previous block u32 | crc32 u32 of the 28 bytes before it
    blocks, one per append call (one write, one checksum for a whole batch)

    block header (32 bytes)
      marker "kvB\\xa7" | crc32 u32 | body length u32 | entry count u32 |
      first index u64 | synced end u64
    block body
      count x term i64 | count x data length u32 | count x entry type u8 | the data, concatenated

The checksum is ``zlib.crc32`` (C speed; no CRC32C is available without a third-party
package) over everything after the crc field: the rest of the header and the whole body.
Entry ``k`` of a block has index ``first index + k``; terms and indexes are therefore covered
by the checksum and checked for sequence on every open.

The active (last) segment may end in zeros: its writer extends the file a chunk at a time
ahead of the blocks (see ``SegmentLog``), so that the fdatasync after a block has no file
size to commit. A tail of zeros after the last block is a clean end, not a torn write.

``synced end`` is how many bytes of this segment were known durable (fsynced) when the block
was written. It is what tells a torn tail from corruption (see ``scan_segment``).

``previous block``, when flag ``PREVIOUS_BLOCK`` is set, is the crc field of the last block
of the segment before this one, as that segment was when this one was created (and it never
changes after). Only it shows that a segment before the last lost blocks at its end: cut at
a block boundary, a segment scans clean, and when the blocks lost had superseded entries of
an earlier block, the entries they replaced come back and the indexes still line up with the
next segment. Files written before the flag existed have it clear (the field was 0) and
are not checked; readers before it ignored both fields, so the format version is unchanged.

A block may start *inside* the previous block's index range: that is how a conflicting
suffix is truncated without rewriting acknowledged data. The later block supersedes the
earlier block's entries from its first index on (see ``SegmentLog.truncate``).

Versions: every segment file (and the hard state file) carries its own format version, so
after an upgrade a node reads the segments it wrote before and writes new ones in its own
version. The magic and the version sit at fixed offsets in every version; a reader refuses a
version newer than ``FORMAT_VERSION`` with ``UnsupportedFormat`` before it looks at anything
else (a downgraded node stops with a clear message rather than misread a newer file).
"""
from __future__ import annotations

import struct
import zlib
from array import array
from dataclasses import dataclass, field
from itertools import accumulate
from operator import attrgetter
from typing import Sequence

from keyval.errors import CorruptLog, KeyvalError, StorageError
from keyval.raft.types import Entry

FORMAT_VERSION = 1
#: header flag: the "previous block" field holds the crc of the previous segment's last block
PREVIOUS_BLOCK = 1

SEGMENT_MAGIC = b"KVLOGSEG"
SEGMENT_HEADER = struct.Struct("<8sIIQII")
BLOCK_MAGIC = b"kvB\xa7"
BLOCK_HEADER = struct.Struct("<4sIIIQQ")
#: bytes of per-entry table in a block body: term i64, length u32, type u8
ENTRY_TABLE = 13
#: the table of a block holding one entry
_SINGLE = struct.Struct("<qIB")
#: bytes the search for a block proving an fsync may checksum beyond 4x the rest of the file
_PROOF_BUDGET = 1 << 20

_get_data = attrgetter("data")
_get_term = attrgetter("term")
_get_type = attrgetter("type")


class UnsupportedFormat(StorageError, KeyvalError):
    """A file was written by a newer KeyVal in a format this one cannot read."""

    def __init__(self, path: str, version: int) -> None:
        self.path = path
        self.version = version
        super().__init__(
            f"{path} has log format version {version}, newer than this KeyVal reads "
            f"(up to {FORMAT_VERSION}); upgrade KeyVal on this node before starting it"
        )


def encode_segment_header(first_index: int, previous_block: int | None = None) -> bytes:
    """The header of a segment starting at ``first_index``; ``previous_block``: the crc of the
    previous segment's last block, None for the first segment (or one after no block)."""
    flags = 0 if previous_block is None else PREVIOUS_BLOCK
    head = SEGMENT_HEADER.pack(SEGMENT_MAGIC, FORMAT_VERSION, flags, first_index, previous_block or 0, 0)
    return head[:-4] + struct.pack("<I", zlib.crc32(head[:-4]))


def decode_segment_header(path: str, buf: bytes | memoryview) -> int:
    """The first index recorded in a segment header; raises on anything but the current format."""
    return segment_header(path, buf)[0]


def segment_header(path: str, buf: bytes | memoryview) -> tuple[int, int | None]:
    """(first index, the previous segment's last block crc or None) from a segment header."""
    if len(buf) < SEGMENT_HEADER.size:
        raise CorruptLog(path, 0, f"file is {len(buf)} bytes, shorter than a segment header")
    magic, version, flags, first, previous, crc = SEGMENT_HEADER.unpack_from(buf, 0)
    if magic != SEGMENT_MAGIC:
        raise CorruptLog(path, 0, "not a KeyVal log segment (bad magic)")
    if version > FORMAT_VERSION:
        raise UnsupportedFormat(path, version)
    if version < 1:
        raise CorruptLog(path, 8, f"invalid format version {version}")
    if zlib.crc32(buf[: SEGMENT_HEADER.size - 4]) != crc:
        raise CorruptLog(path, 0, "segment header checksum mismatch")
    return first, previous if flags & PREVIOUS_BLOCK else None


def encode_block(entries: Sequence[Entry], synced_end: int) -> tuple[bytearray, array]:
    """One block holding ``entries`` (contiguous indexes), and their data lengths."""
    if len(entries) == 1:
        # Batch 1 is the latency path: skip the columns and build it in one go.
        (entry,) = entries
        buf = bytearray(BLOCK_HEADER.size + ENTRY_TABLE + len(entry.data))
        BLOCK_HEADER.pack_into(buf, 0, BLOCK_MAGIC, 0, len(buf) - BLOCK_HEADER.size, 1, entry.index, synced_end)
        _SINGLE.pack_into(buf, BLOCK_HEADER.size, entry.term, len(entry.data), entry.type)
        buf[BLOCK_HEADER.size + ENTRY_TABLE :] = entry.data
        struct.pack_into("<I", buf, 4, zlib.crc32(memoryview(buf)[8:]))
        return buf, array("I", (len(entry.data),))
    datas = list(map(_get_data, entries))
    lens = array("I", map(len, datas))
    buf = bytearray(BLOCK_HEADER.size)
    buf += array("q", map(_get_term, entries))
    buf += lens
    buf += bytes(map(_get_type, entries))
    buf += b"".join(datas)
    BLOCK_HEADER.pack_into(
        buf, 0, BLOCK_MAGIC, 0, len(buf) - BLOCK_HEADER.size, len(entries), entries[0].index, synced_end
    )
    struct.pack_into("<I", buf, 4, zlib.crc32(memoryview(buf)[8:]))
    return buf, lens


@dataclass
class SegmentScan:
    """What a scan found in one segment: its live entries (``first`` on) and where they are."""

    first: int
    #: per live entry: term, data length, type, data offset in the file, its block's offset
    terms: array = field(default_factory=lambda: array("q"))
    lens: array = field(default_factory=lambda: array("I"))
    types: bytearray = field(default_factory=bytearray)
    pos: array = field(default_factory=lambda: array("q"))
    blk: array = field(default_factory=lambda: array("q"))
    #: end of the last valid block: the file is cut here if ``torn`` says why
    end: int = SEGMENT_HEADER.size
    torn: str = ""
    #: the crc of the last valid block (None: no block), and what the header records of the
    #: previous segment's (None: nothing)
    last_block: int | None = None
    previous_block: int | None = None


def _check_block(buf: memoryview, off: int) -> tuple[str, int, int, int, int]:
    """(problem or "", end, count, first index, synced end) of the block at ``off``."""
    size = len(buf)
    if size - off < BLOCK_HEADER.size:
        return "incomplete block header", 0, 0, 0, 0
    magic, crc, body, count, first, synced = BLOCK_HEADER.unpack_from(buf, off)
    if magic != BLOCK_MAGIC:
        return "no block marker", 0, 0, 0, 0
    end = off + BLOCK_HEADER.size + body
    if end > size:
        return f"block of {body} bytes runs past the end of the file", 0, 0, 0, 0
    if zlib.crc32(buf[off + 8 : end]) != crc:
        return "block checksum mismatch", 0, 0, 0, 0
    if count == 0 or body < ENTRY_TABLE * count or synced > off:
        return "bad block framing", 0, 0, 0, 0
    return "", end, count, first, synced


def _later_synced_block(buf: memoryview, raw: bytes, bad: int) -> int | None:
    """Offset of a valid block after ``bad`` whose synced end lies past ``bad``, or -1;
    None when the search gave up (below).

    Such a block proves the bytes at ``bad`` had been fsynced before it was written. Every
    block marker after ``bad`` is a candidate, those inside entry data too, and entry data is
    what clients write: a value full of markers each claiming a long body would cost one
    checksum over most of the file per marker. So the header rules candidates out first, and
    the checksums computed may cover a few times the bytes after ``bad``, no more.
    """
    size = len(buf)
    budget = _PROOF_BUDGET + 4 * (size - bad)
    at = raw.find(BLOCK_MAGIC, bad + 1)
    while at >= 0 and size - at >= BLOCK_HEADER.size:
        _magic, crc, body, count, _first, synced = BLOCK_HEADER.unpack_from(buf, at)
        end = at + BLOCK_HEADER.size + body
        if bad < synced <= at and count and body >= ENTRY_TABLE * count and end <= size:
            budget -= end - at
            if budget < 0:
                return None
            if zlib.crc32(buf[at + 8 : end]) == crc:
                return at
        at = raw.find(BLOCK_MAGIC, at + 1)
    return -1


def scan_segment(path: str, raw: bytes, last: bool) -> SegmentScan:
    """Verify every block of one segment file's bytes and index its live entries.

    Torn tail or corruption — the rule: a block that fails its checks (short, no marker,
    past EOF, bad checksum, bad framing) is

    * corruption (``CorruptLog``) in any segment but the last: a segment is fsynced in full
      before the next one is created, so nothing in it can be torn;
    * corruption in the last segment if some valid block after it records a synced end past
      the bad block's offset: the bad bytes had been fsynced — reported durable — before;
    * otherwise a torn tail: everything from the bad block on was written after the last
      fsync, so nothing there was ever reported durable. The caller cuts it off.

    A block with a good checksum but an index out of sequence is always corruption.
    Inherent limit (shared by every log with a per-record checksum): damage inside the
    final fsynced batch, with nothing written after it, looks exactly like a torn write.
    """
    buf = memoryview(raw)
    first, previous = segment_header(path, buf)
    scan = SegmentScan(first, previous_block=previous)
    terms, lens, types, pos, blk = scan.terms, scan.lens, scan.types, scan.pos, scan.blk
    expected = scan.first  # the next index in sequence
    prev_first = scan.first - 1  # a block must start past the previous block's first index
    off = SEGMENT_HEADER.size
    size = len(buf)
    header = BLOCK_HEADER.size
    last_block = None
    unpack_header, unpack_single, crc32 = BLOCK_HEADER.unpack_from, _SINGLE.unpack_from, zlib.crc32
    while off < size:
        # The checks of _check_block, inlined: this loop runs once per append ever made.
        end = count = 0
        if size - off >= header:
            magic, crc, body, count, first, synced = unpack_header(buf, off)
            end = off + header + body
        if not (end and magic == BLOCK_MAGIC and end <= size and crc32(buf[off + 8 : end]) == crc
                and count and body >= ENTRY_TABLE * count and synced <= off):
            if last and raw.count(0, off) == size - off:
                break  # the preallocated zeros after the last block: nothing was written there
            problem = _check_block(buf, off)[0] or "bad block framing"
            later = _later_synced_block(buf, raw, off) if last else off
            if later is None:
                raise CorruptLog(path, off, problem + "; too many block markers after it to tell a torn write "
                                 "from damage (was much entry data shaped like block headers?)")
            if later >= 0:
                where = f"; the valid block at byte {later} shows it was fsynced" if last else ""
                raise CorruptLog(path, off, problem + where)
            scan.end, scan.torn, scan.last_block = off, problem, last_block
            return scan
        if not prev_first < first <= expected:
            raise CorruptLog(path, off, f"block starts at index {first}, expected {expected}")
        if first < expected:
            # This block supersedes the previous one's entries from ``first`` on.
            keep = first - scan.first
            del terms[keep:], lens[keep:], types[keep:], pos[keep:], blk[keep:]
        table = off + header
        data = table + ENTRY_TABLE * count
        if count == 1:
            term, length, kind = unpack_single(buf, table)
            if data + length != end:
                raise CorruptLog(path, off, "entry length does not match the block size")
            terms.append(term)
            lens.append(length)
            types.append(kind)
            pos.append(data)
            blk.append(off)
        else:
            terms.frombytes(buf[table : table + 8 * count])
            block_lens = array("I")
            block_lens.frombytes(buf[table + 8 * count : table + 12 * count])
            if data + sum(block_lens) != end:
                raise CorruptLog(path, off, "entry lengths do not add up to the block size")
            lens += block_lens
            types += buf[table + 12 * count : data]
            pos.extend(accumulate(block_lens[:-1], initial=data))
            blk.extend(array("q", (off,)) * count)
        prev_first = first
        expected = first + count
        last_block = crc
        off = end
    scan.end, scan.last_block = off, last_block
    return scan
