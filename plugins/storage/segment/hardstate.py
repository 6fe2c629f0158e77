"""The hard state file ``DATA_DIR/hardstate``: term, vote and commit, replaced atomically.

Format (little-endian): magic "KVHS" | format version u32 | term u64 | commit u64 |
vote length u32 | vote (UTF-8) | crc32 u32 of everything before it.

A save writes ``hardstate.tmp``, fsyncs it, renames it over ``hardstate`` and fsyncs the
directory: a crash leaves the old file or the new one, never a mix. A leftover temp file is
the trace of a crash before the rename and is ignored (and removed on the next save).
"""
from __future__ import annotations

import os
import struct
import zlib

from keyval.errors import CorruptLog
from keyval.raft.types import HardState
from keyval.wire_bounds import MAX_STORED_INT

from .format import FORMAT_VERSION, UnsupportedFormat
from .fsutil import fsync_dir, write_file_durably

MAGIC = b"KVHS"
HEAD = struct.Struct("<4sIQQI")
CRC = struct.Struct("<I")


def encode(hs: HardState) -> bytes:
    vote = hs.vote.encode()
    body = HEAD.pack(MAGIC, FORMAT_VERSION, hs.term, hs.commit, len(vote)) + vote
    return body + CRC.pack(zlib.crc32(body))


def decode(path: str, raw: bytes) -> HardState:
    if len(raw) < 8 or raw[:4] != MAGIC:
        raise CorruptLog(path, 0, "not a KeyVal hard state file (bad magic)")
    (version,) = struct.unpack_from("<I", raw, 4)
    if version > FORMAT_VERSION:
        raise UnsupportedFormat(path, version)
    if len(raw) < HEAD.size + CRC.size:
        raise CorruptLog(path, 0, f"hard state file is only {len(raw)} bytes")
    _magic, _version, term, commit, vote_len = HEAD.unpack_from(raw, 0)
    end = HEAD.size + vote_len
    if end + CRC.size != len(raw) or zlib.crc32(raw[:end]) != CRC.unpack_from(raw, end)[0]:
        raise CorruptLog(path, 0, "hard state checksum mismatch")
    if max(term, commit) > MAX_STORED_INT:
        # Only a forged file gets here (the checksum matched): its term could never grow.
        raise CorruptLog(path, 8, f"term {term} or commit {commit} beyond what the log can hold")
    try:
        vote = raw[HEAD.size : end].decode()
    except UnicodeDecodeError:
        raise CorruptLog(path, HEAD.size, "the vote is not a UTF-8 node id") from None
    return HardState(term=term, vote=vote, commit=commit)


class HardStateFile:
    def __init__(self, data_dir: str) -> None:
        self.directory = data_dir
        self.path = os.path.join(data_dir, "hardstate")

    def load(self) -> HardState:
        """The last saved hard state (the initial one if none was ever saved)."""
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return HardState()
        return decode(self.path, raw)

    def save(self, hs: HardState) -> None:
        """Durable and atomic when this returns."""
        write_file_durably(self.path, encode(hs))
        fsync_dir(self.directory)
