"""Snapshot files: the state machine's bytes, zstd-compressed behind a checksummed header.

One file per snapshot, named ``snapshot-<index>-<term>.snap`` (both zero-padded to 20 digits,
so names sort by (index, term)). Layout, integers little-endian:

    magic        8 bytes   b"\\x89KVSNAP\\n"
    version      u16       FORMAT_VERSION; a reader refuses versions newer than its own
    header_len   u32       bytes from the start of the file to the zstd body
    index        u64
    term         u64
    size         u64       uncompressed length of the data
    data_crc     u32       zlib.crc32 of the uncompressed data
    created      f64       seconds since the epoch
    members_len  u32
    membership   bytes     Membership.encode(); empty for a Membership() without voters
    header_crc   u32       zlib.crc32 of every header byte before it
    body                   one zstd frame (with zstd's own content checksum)

The header can be read alone (``newest_meta``), so a node learns its snapshot index without
decompressing anything. The data is only trusted after its length and crc both match.
"""
from __future__ import annotations

import logging
import os
import re
import struct
import tempfile
import time
import zlib
from pathlib import Path
from typing import Iterable

import zstandard

from keyval.errors import CorruptSnapshot
from keyval.raft.types import Membership, Snapshot, SnapshotMeta
from keyval.plugin_api.storage import SnapshotInfo

log = logging.getLogger(__name__)

MAGIC = b"\x89KVSNAP\n"  # the high bit and the newline catch text-mode mangling
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<8sHI")
_FIELDS = struct.Struct("<QQQIdI")
_CRC = struct.Struct("<I")
# A membership of thousands of nodes is a few hundred KiB; anything past this is a bad header.
_MAX_HEADER = 16 << 20
_READ_CHUNK = 256 << 10
#: zstd's largest expansion, output bytes per input byte: an RLE block, 4 bytes for 128 KiB
_MAX_INFLATION = 1 << 15
#: the smallest slice fed to the inflater: it may inflate to 8 MiB past what a header claims
_MIN_FEED = 256

_NAME = re.compile(r"^snapshot-(\d{20})-(\d{20})\.snap$")
_TMP_PREFIX = ".tmp-snapshot-"


class SnapshotTooNew(CorruptSnapshot):
    """The file was written by a newer KeyVal in a format this one cannot read.

    Unlike a damaged file it is not skipped: falling back to an older snapshot would quietly
    run the node on older state than it already had.
    """

    def __init__(self, path: str, version: int) -> None:
        super().__init__(
            path,
            f"format version {version} is newer than this KeyVal reads (up to {FORMAT_VERSION}); "
            f"upgrade KeyVal to use this data dir",
        )
        self.version = version


class SnapshotStore:
    """The snapshots of one node in one directory; keeps the newest ``keep``."""

    def __init__(self, directory: str, keep: int = 2, level: int = 3) -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least 1, not {keep}")
        self.directory = Path(directory)
        self.keep = keep
        self.level = level
        # Files found damaged in this process; files never change once renamed into place.
        self._bad: set[Path] = set()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._remove_temp_files()

    # -- writing ---------------------------------------------------------------------------
    def save(self, meta: SnapshotMeta, data: bytes | Iterable[bytes]) -> SnapshotInfo:
        """Write a snapshot; durable when this returns. Then prune to the newest ``keep``."""
        chunks = [data] if isinstance(data, (bytes, bytearray, memoryview)) else data
        path = self._path(meta.index, meta.term)
        created = time.time()
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as f:
                # Size and crc are known only after streaming: write a placeholder header
                # of the same length, then patch it in before the fsync.
                f.write(_encode_header(meta, 0, 0, created))
                size, crc = _compress(chunks, f, self.level)
                f.seek(0)
                f.write(_encode_header(meta, size, crc, created))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            _unlink(Path(tmp))
            raise
        _fsync_dir(self.directory)
        self._bad.discard(path)
        self._prune()
        return SnapshotInfo(meta.index, meta.term, path.stat().st_size, created)

    # -- reading ---------------------------------------------------------------------------
    def list(self) -> list[SnapshotInfo]:
        """The snapshot files present, oldest first (a damaged one too: ``load`` tells)."""
        infos = []
        for path, index, term in self._files():
            try:
                created = _read_header(path)[1]
            except CorruptSnapshot:
                created = path.stat().st_mtime
            infos.append(SnapshotInfo(index, term, path.stat().st_size, created))
        return infos

    def newest_meta(self) -> SnapshotMeta | None:
        """The metadata of the newest snapshot whose header is sound; reads headers only.

        The body is not checked here (that means decompressing it); ``load_newest`` does.
        """
        for path, _, _ in reversed(self._files()):
            if path in self._bad:
                continue
            try:
                return _read_header(path)[0]
            except SnapshotTooNew:
                raise
            except CorruptSnapshot as exc:
                self._skip(path, exc)
        return None

    def load_newest(self) -> Snapshot | None:
        """The newest snapshot that passes its checks; damaged ones are logged and skipped.

        Raises SnapshotTooNew rather than skip a file from a newer KeyVal.
        """
        for path, _, _ in reversed(self._files()):
            if path in self._bad:
                continue
            try:
                return self.load(path)
            except SnapshotTooNew:
                raise
            except CorruptSnapshot as exc:
                self._skip(path, exc)
        return None

    def load(self, info_or_path: SnapshotInfo | str | os.PathLike) -> Snapshot:
        """Read and verify one snapshot. Raises CorruptSnapshot (or SnapshotTooNew)."""
        if isinstance(info_or_path, SnapshotInfo):
            path = self._path(info_or_path.index, info_or_path.term)
        else:
            path = Path(info_or_path)
        try:
            with open(path, "rb") as f:
                meta, _, size, crc, header_len = _read_header_from(f, str(path))
                named = _NAME.match(path.name)
                if named and (int(named[1]), int(named[2])) != (meta.index, meta.term):
                    raise CorruptSnapshot(str(path), f"header says index {meta.index} term {meta.term}")
                f.seek(header_len)
                data = _decompress(f, size, str(path))
        except FileNotFoundError:
            raise CorruptSnapshot(str(path), "no such file") from None
        if zlib.crc32(data) != crc:
            raise CorruptSnapshot(str(path), "data checksum mismatch")
        return Snapshot(meta, data)

    # -- files -----------------------------------------------------------------------------
    def _path(self, index: int, term: int) -> Path:
        return self.directory / f"snapshot-{index:020d}-{term:020d}.snap"

    def _files(self) -> list[tuple[Path, int, int]]:
        found = []
        for entry in os.scandir(self.directory):
            named = _NAME.match(entry.name)
            if named:
                found.append((int(named[1]), int(named[2]), Path(entry.path)))
        return [(path, index, term) for index, term, path in sorted(found)]

    def _skip(self, path: Path, exc: CorruptSnapshot) -> None:
        self._bad.add(path)
        log.warning("skipping snapshot: %s", exc)

    def _prune(self) -> None:
        files = self._files()
        for path, _, _ in files[: max(0, len(files) - self.keep)]:
            _unlink(path)
            self._bad.discard(path)
        if len(files) > self.keep:
            _fsync_dir(self.directory)

    def _remove_temp_files(self) -> None:
        # Left by a crash during save; the rename never happened, so nothing refers to them.
        for entry in os.scandir(self.directory):
            if entry.name.startswith(_TMP_PREFIX):
                log.info("removing unfinished snapshot %s", entry.path)
                _unlink(Path(entry.path))


def _encode_header(meta: SnapshotMeta, size: int, crc: int, created: float) -> bytes:
    # No voters means "no configuration yet", which Membership.decode refuses: store nothing.
    members = meta.membership.encode() if meta.membership.voters else b""
    header_len = _PREFIX.size + _FIELDS.size + len(members) + _CRC.size
    head = (
        _PREFIX.pack(MAGIC, FORMAT_VERSION, header_len)
        + _FIELDS.pack(meta.index, meta.term, size, crc, created, len(members))
        + members
    )
    return head + _CRC.pack(zlib.crc32(head))


def _read_header(path: Path) -> tuple[SnapshotMeta, float]:
    with open(path, "rb") as f:
        meta, created, *_ = _read_header_from(f, str(path))
    return meta, created


def _read_header_from(f, path: str) -> tuple[SnapshotMeta, float, int, int, int]:
    """(meta, created, size, data crc, header length) from the start of an open file."""
    prefix = f.read(_PREFIX.size)
    if len(prefix) < _PREFIX.size:
        raise CorruptSnapshot(path, "truncated header")
    magic, version, header_len = _PREFIX.unpack(prefix)
    if magic != MAGIC:
        raise CorruptSnapshot(path, "not a KeyVal snapshot (bad magic)")
    if version > FORMAT_VERSION:
        raise SnapshotTooNew(path, version)
    if version < 1 or not _PREFIX.size + _FIELDS.size + _CRC.size <= header_len <= _MAX_HEADER:
        raise CorruptSnapshot(path, f"bad header (version {version}, length {header_len})")
    rest = f.read(header_len - _PREFIX.size)
    if len(rest) < header_len - _PREFIX.size:
        raise CorruptSnapshot(path, "truncated header")
    head, (stored_crc,) = prefix + rest[: -_CRC.size], _CRC.unpack(rest[-_CRC.size :])
    if zlib.crc32(head) != stored_crc:
        raise CorruptSnapshot(path, "header checksum mismatch")
    index, term, size, crc, created, members_len = _FIELDS.unpack_from(head, _PREFIX.size)
    members = head[_PREFIX.size + _FIELDS.size :]
    if len(members) != members_len:
        raise CorruptSnapshot(path, "bad header (membership length)")
    try:
        membership = Membership.decode(members) if members else Membership()
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptSnapshot(path, f"bad membership in header: {exc}") from None
    return SnapshotMeta(index, term, membership), created, size, crc, header_len


def _compress(chunks: Iterable[bytes], f, level: int) -> tuple[int, int]:
    size = crc = 0
    compressor = zstandard.ZstdCompressor(level=level, write_checksum=True)
    with compressor.stream_writer(f, closefd=False) as writer:
        for chunk in chunks:
            crc = zlib.crc32(chunk, crc)
            size += len(chunk)
            writer.write(chunk)
    return size, crc


def _decompress(f, size: int, path: str) -> bytes:
    parts, got = [], 0
    inflater = zstandard.ZstdDecompressor().decompressobj()
    rest = memoryview(b"")  # read from the file, not yet fed to the inflater
    try:
        while got <= size and not inflater.eof:
            if not rest:
                rest = memoryview(f.read(_READ_CHUNK))
                if not rest:
                    break
            # Fed no more at a time than could inflate to what the header still allows (or
            # _MIN_FEED bytes, at most 8 MiB inflated), so a damaged header claiming a tiny size
            # cannot make us inflate gigabytes before noticing.
            step = max(_MIN_FEED, (size + 1 - got) // _MAX_INFLATION)
            part = inflater.decompress(rest[:step])
            rest = rest[step:]
            parts.append(part)
            got += len(part)
    except zstandard.ZstdError as exc:
        raise CorruptSnapshot(path, f"compressed data damaged ({exc})") from None
    if got > size:
        raise CorruptSnapshot(path, f"data longer than its header says ({size} bytes)")
    if not inflater.eof:
        # Also catches a cut inside zstd's trailing checksum, after the last data byte.
        raise CorruptSnapshot(path, f"truncated ({got} of {size} bytes readable)")
    if got != size:
        raise CorruptSnapshot(path, f"data is {got} bytes, header says {size}")
    if inflater.unused_data or rest or f.read(1):
        raise CorruptSnapshot(path, "trailing bytes after the compressed data")
    return b"".join(parts)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
