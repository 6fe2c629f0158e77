"""The durable watermark file ``DATA_DIR/watermark``: the last log entry ever made durable.

It is what lets a node tell damage from a clean end (``Storage.durable_watermark``): a bad
block, a cut tail or a truncated segment leaves the log shorter than the watermark, and the
entries in between are ones the node may have acknowledged. It is kept apart from the log
files so that damage to them cannot take it along.

Format: two slots of ``SLOT`` bytes, each written in place (no rename, no new size, so an
fdatasync of one slot is one small write) and taken in turn; a torn write damages at most
the slot being written, and the other still holds the previous value. A slot is::

    magic "KVWM" | format version u32 | sequence u64 | index u64 | term u64 | crc32 u32

Reading takes the valid slot with the higher sequence. Both invalid is reported as damage
(``load`` returns ``DAMAGED``): the caller must then assume the worst.
"""
from __future__ import annotations

import os
import struct
import zlib

from keyval.errors import StorageError

from .fsutil import datasync, fsync_dir, pwrite_all, write_file_durably

MAGIC = b"KVWM"
VERSION = 1
BODY = struct.Struct("<4sIQQQ")
CRC = struct.Struct("<I")
#: a sector each, so that one slot's torn write cannot reach the other
SLOT = 512
#: what ``load`` returns when the file exists but neither slot is valid
DAMAGED = "damaged"


def _encode(seq: int, index: int, term: int) -> bytes:
    body = BODY.pack(MAGIC, VERSION, seq, index, term)
    return body + CRC.pack(zlib.crc32(body))


def _decode(raw: bytes) -> tuple[int, int, int] | None:
    """(sequence, index, term) of a valid slot, else None."""
    size = BODY.size + CRC.size
    if len(raw) < size:
        return None
    magic, version, seq, index, term = BODY.unpack_from(raw, 0)
    if magic != MAGIC or version != VERSION or zlib.crc32(raw[: BODY.size]) != CRC.unpack_from(raw, BODY.size)[0]:
        return None
    return seq, index, term


class WatermarkFile:
    def __init__(self, data_dir: str) -> None:
        self.directory = data_dir
        self.path = os.path.join(data_dir, "watermark")
        self._fd = -1
        self._seq = 0

    def load(self) -> tuple[int, int] | str | None:
        """(index, term) last saved; None if there is no file (a data dir older than it);
        ``DAMAGED`` if neither slot is valid."""
        try:
            with open(self.path, "rb") as f:
                raw = f.read(2 * SLOT)
        except FileNotFoundError:
            return None
        slots = [s for s in (_decode(raw[:SLOT]), _decode(raw[SLOT : 2 * SLOT])) if s is not None]
        if not slots:
            return DAMAGED
        seq, index, term = max(slots)
        self._seq = seq
        return index, term

    def save(self, index: int, term: int) -> None:
        """Durable when this returns. A failed save (a full disk) changes neither slot's
        last valid value but the one being written, and is retried into the same slot."""
        seq = self._seq + 1
        record, at = _encode(seq, index, term), (seq % 2) * SLOT
        try:
            if self._fd < 0:
                self._open(record, at)
            else:
                pwrite_all(self._fd, record, at)
                datasync(self._fd)
        except OSError as exc:
            raise StorageError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        self._seq = seq

    def _open(self, record: bytes, at: int) -> None:
        """Open the file, writing ``record`` at ``at`` in it. A missing (or short) file is
        created whole, the record already in it, and renamed into place: a slot write never
        has to extend it, and no crash leaves a file without a valid slot."""
        if not os.path.exists(self.path) or os.path.getsize(self.path) < 2 * SLOT:
            content = bytearray(2 * SLOT)
            content[at : at + len(record)] = record
            write_file_durably(self.path, bytes(content))
            fsync_dir(self.directory)
            self._fd = os.open(self.path, os.O_RDWR)
            return
        fd = os.open(self.path, os.O_RDWR)
        try:
            pwrite_all(fd, record, at)
            datasync(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
