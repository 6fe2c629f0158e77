"""The Raft log as append-only segment files, with an in-memory index of every live entry.

Files live in ``DATA_DIR/log/``; the format is in ``format.py``. This class knows nothing of
snapshots or compaction rules: ``SegmentStorage`` decides which indexes may be read.
"""
from __future__ import annotations

import errno
import logging
import os
from array import array
from bisect import bisect_right
from itertools import accumulate
from typing import Sequence

from keyval.errors import CorruptLog, StorageError
from keyval.raft.storage import ENTRY_OVERHEAD
from keyval.raft.types import Entry, EntryType

from .format import BLOCK_HEADER, ENTRY_TABLE, SEGMENT_HEADER, SegmentScan, encode_block, encode_segment_header, scan_segment
from .fsutil import datasync, fsync_dir, make_dirs_durably, pwrite_all, remove_if_present, write_file_durably

log = logging.getLogger(__name__)

_TYPES = {int(t): t for t in EntryType}
#: zeros written ahead of the blocks of the active segment at a time: small enough that the
#: one fdatasync which also flushes them stays short, large enough that few fdatasyncs do
PREALLOC_CHUNK = 1 << 20



class Segment:
    __slots__ = ("first", "path")

    def __init__(self, first: int, path: str) -> None:
        self.first = first
        self.path = path


class SegmentLog:
    """Entries ``base .. last_index()`` in segment files; appends are durable after ``sync``.

    Invariants:
      * ``segments`` are in index order; ``segments[-1]`` is the active one, the only one
        written; ``segments[k + 1].first`` is one past the last live entry of ``segments[k]``;
      * every segment but the active one was fdatasync'ed in full before its successor was
        created (so a torn write can only be at the tail of the last segment);
      * ``base == segments[0].first`` when there are segments; ``terms``, ``lens``, ``types``,
        ``pos`` (data offset in its file) and ``blk`` (its block's offset) have one item per
        live entry ``base .. last_index()``;
      * ``synced_end <= size``: the active segment's bytes known durable; ``durable_last`` is
        the last index known durable;
      * ``size <= allocated``: the active file is ``allocated`` bytes long, zeros after
        ``size``. Blocks overwrite zeros already on disk, so the fdatasync that makes them
        durable has no new file size to commit to the journal (on ext4 about half the time of
        an fdatasync after an append, as etcd's preallocated WAL); every other segment is cut
        to its last block before the next one is created;
      * ``cache`` holds the most recent entries, ``last_index() - len(cache) + 1 .. last``.
    """

    def __init__(self, directory: str, segment_size: int, cache_bytes: int) -> None:
        self.directory = directory
        self.segment_size = segment_size
        self.cache_limit = cache_bytes
        self.segments: list[Segment] = []
        self.firsts: list[int] = []
        self.base = 1
        self.terms = array("q")
        self.lens = array("I")
        self.types = bytearray()
        self.pos = array("q")
        self.blk = array("q")
        self.fd = -1
        self.size = 0
        self.allocated = 0
        #: how far ahead of the blocks the active file is extended with zeros at a time
        self.prealloc = min(PREALLOC_CHUNK, segment_size)
        self._zeros = b""
        self.synced_end = 0
        self.dirty = False
        self.durable_last = 0
        self.cache: list[Entry] = []
        self.cached_bytes = 0
        #: opening found damage (not a torn tail) and cut the log before it
        self.damaged = False
        make_dirs_durably(directory)
        self._recover()

    def last_index(self) -> int:
        return self.base + len(self.terms) - 1

    def config_indexes(self, lo: int) -> list[int]:
        """Indexes of the CONFIG entries from ``lo`` to the last, found in ``types``: a byte
        per live entry that opening rebuilds from the entry tables it reads anyway, and that
        append, truncate, drop and reset keep in step. No entry is read or decoded."""
        types, base, kind = self.types, self.base, int(EntryType.CONFIG)
        found, j = [], max(lo - base, 0)
        while (j := types.find(kind, j)) >= 0:
            found.append(base + j)
            j += 1
        return found

    # -- opening ----------------------------------------------------------------------------
    def _recover(self) -> None:
        found = []
        for name in os.listdir(self.directory):
            if name.endswith(".tmp"):
                # A segment creation that crashed before its rename: never held entries.
                os.remove(os.path.join(self.directory, name))
            elif name.endswith(".seg") and name[:-4].isdigit():
                found.append((int(name[:-4]), os.path.join(self.directory, name)))
        found.sort()
        before = None  # the previous segment's scan
        for k, (first, path) in enumerate(found):
            with open(path, "rb") as f:
                raw = f.read()
            try:
                scan = scan_segment(path, raw, last=k == len(found) - 1)
                if scan.first != first:
                    raise CorruptLog(path, 0, f"header says first index {scan.first}, the file name {first}")
                if self.segments and first != self.last_index() + 1:
                    raise CorruptLog(path, 0, f"starts at index {first} but the log before it ends at {self.last_index()}")
                if self.segments and scan.previous_block is not None and scan.previous_block != before.last_block:
                    raise CorruptLog(path, 0, f"records another last block for {os.path.basename(self.segments[-1].path)}: "
                                              f"the blocks at its end were lost")
            except CorruptLog as damage:
                scan = self._set_aside(found[k:], raw, damage)
                if scan is None:
                    break
                found = found[: k + 1]
            if not self.segments:
                self.base = first
            before = scan
            self.segments.append(Segment(first, path))
            self.firsts.append(first)
            self.terms += scan.terms
            self.lens += scan.lens
            self.types += scan.types
            self.pos += scan.pos
            self.blk += scan.blk
            self.size = scan.end
            if scan.torn:
                cut = len(raw) - scan.end
                log.warning("cut a torn tail of %d bytes off %s at byte %d (%s)", cut, path, scan.end, scan.torn)
            del raw
            if k == len(found) - 1:
                break
        if self.segments:
            self.fd = os.open(self.segments[-1].path, os.O_RDWR)
            os.ftruncate(self.fd, self.size)  # a torn tail, or preallocated zeros
            self.allocated = self.size
            # What a killed process left in the page cache is part of the log from now on:
            # make it durable before any later block claims it was.
            datasync(self.fd)
        self.synced_end = self.size
        self.durable_last = self.last_index()

    def _set_aside(self, damaged: list[tuple[int, str]], raw: bytes, damage: CorruptLog) -> "SegmentScan | None":
        """Damage in ``damaged[0]`` (at ``damage.offset``): the log ends before it. The
        damaged file is copied aside whole (``.damaged``) and cut at the damage; every later
        segment is renamed aside. Nothing is deleted: an operator may still want the bytes.
        The scan of what is kept of the first file, or None if nothing of it is."""
        first, path = damaged[0]
        keep = None
        if damage.offset >= SEGMENT_HEADER.size:
            keep = scan_segment(path, raw[: damage.offset], last=True)
            if keep.first != first or (self.segments and first != self.last_index() + 1):
                keep = None
        kept_to = (keep.first + len(keep.terms) - 1) if keep is not None else (self.last_index() if self.segments else first - 1)
        if keep is not None:
            write_file_durably(path + ".damaged", raw)
            with open(path, "r+b") as f:
                f.truncate(keep.end)
                os.fsync(f.fileno())
        else:
            os.replace(path, path + ".damaged")
        for _later, later_path in damaged[1:]:
            os.replace(later_path, later_path + ".damaged")
        fsync_dir(self.directory)
        self.damaged = True
        log.error("the Raft log is damaged: %s at byte %d: %s; kept the log up to index %d and set %d segment "
                  "file(s) aside as *.damaged", path, damage.offset, damage.reason, kept_to, len(damaged))
        return keep

    # -- writing ----------------------------------------------------------------------------
    def append(self, entries: Sequence[Entry]) -> None:
        """Write ``entries`` (contiguous, ``base <= entries[0].index <= last + 1``) as one block."""
        first = entries[0].index
        if first <= self.last_index():
            # No rotation right after a truncation: the block may supersede part of the
            # last block, and a superseding block must follow it in the same file.
            self.truncate(first)
        elif not self.segments or self.size >= self.segment_size:
            self._rotate(first)
        buf, lens = encode_block(entries, self.synced_end)
        start = self.size
        try:
            pwrite_all(self.fd, buf, start)
            if start + len(buf) > self.allocated:
                self._preallocate(start + len(buf))
        except BaseException:
            # Never leave half a block before the next one: that would read as corruption.
            os.ftruncate(self.fd, start)
            self.allocated = start
            raise
        self.size += len(buf)
        self.dirty = True
        n = len(entries)
        table = BLOCK_HEADER.size
        self.terms.frombytes(memoryview(buf)[table : table + 8 * n])
        self.lens += lens
        self.types += memoryview(buf)[table + 12 * n : table + ENTRY_TABLE * n]
        data = start + table + ENTRY_TABLE * n
        if n == 1:
            self.pos.append(data)
            self.blk.append(start)
        else:
            self.pos.extend(accumulate(lens[:-1], initial=data))
            self.blk.extend(array("q", (start,)) * n)
        if self.cache_limit:
            self.cache.extend(entries)
            self.cached_bytes += len(buf) - table - ENTRY_TABLE * n + ENTRY_OVERHEAD * n
            if self.cached_bytes > self.cache_limit:
                self._trim_cache(len(self.cache) // 2 or 1)

    def _preallocate(self, end: int) -> None:
        """Zeros from ``end`` to one chunk past it (the next fdatasync commits the new size).
        Only a speed-up: on a disk too full for them the file ends at ``end`` instead."""
        target = end + self.prealloc
        if len(self._zeros) != self.prealloc:
            self._zeros = bytes(self.prealloc)
        zeros = self._zeros
        offset = end
        try:
            while offset < target:
                pwrite_all(self.fd, zeros[: target - offset], offset)
                offset += min(len(zeros), target - offset)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            os.ftruncate(self.fd, end)
            target = end
        self.allocated = target

    def sync(self) -> None:
        """One fdatasync for everything appended since the last one."""
        if self.dirty:
            datasync(self.fd)
            self.synced_end = self.size
            self.dirty = False
        self.durable_last = self.last_index()

    def truncate(self, index: int) -> None:
        """Discard entries ``index ..`` (``base <= index <= last``); durable on return.

        Only bytes holding entries above ``index`` are ever cut: the block holding ``index``
        is kept whole unless ``index`` is its first entry, and the next block written starts
        at ``index`` and supersedes the rest of it. So a crash here can never lose an entry
        below ``index`` — which may be committed — whatever the filesystem reorders.
        """
        k = bisect_right(self.firsts, index) - 1
        seg = self.segments[k]
        j = index - self.base
        block = self.blk[j]
        if index == seg.first or self.blk[j - 1] != block:
            cut = block
        else:
            head = self._pread(seg, BLOCK_HEADER.size, block)
            cut = block + BLOCK_HEADER.size + BLOCK_HEADER.unpack(head)[2]
        if k < len(self.segments) - 1:
            # Opened first: out of descriptors, nothing has changed yet. Every step after
            # it may be redone by a retry (a removal of a file already gone is no error).
            fd = os.open(seg.path, os.O_RDWR)
            os.close(self.fd)
            self.fd = fd
            # Newest first: a crash part-way leaves a contiguous log.
            for later in reversed(self.segments[k + 1 :]):
                remove_if_present(later.path)
            fsync_dir(self.directory)
            del self.segments[k + 1 :], self.firsts[k + 1 :]
        os.ftruncate(self.fd, cut)
        datasync(self.fd)
        self.size = self.synced_end = self.allocated = cut
        self.dirty = False
        self._cut_cache(index)
        del self.terms[j:], self.lens[j:], self.types[j:], self.pos[j:], self.blk[j:]
        self.durable_last = index - 1
        log.info("truncated the log from index %d (in %s)", index, seg.path)

    def _rotate(self, first: int) -> None:
        # Retried after a failure (a full disk, no descriptor left): each step may be redone,
        # and the active segment stays open and current until the new one is.
        previous_block = None
        if self.segments:
            if self.last_index() >= self.segments[-1].first:
                # The block of the last entry is the file's last block (a truncation cuts the
                # blocks after it): the new header records its crc, for the next open to check.
                at = self.blk[-1] + 4
                previous_block = int.from_bytes(self._pread(self.segments[-1], 4, at), "little")
            if self.allocated > self.size:
                # Only the last segment may end in zeros (the recovery scan's rule).
                os.ftruncate(self.fd, self.size)
                self.allocated = self.size
                self.dirty = True
            if self.dirty:
                datasync(self.fd)
                self.dirty = False
        else:
            self.base = first
        path = os.path.join(self.directory, f"{first:020d}.seg")
        write_file_durably(path, encode_segment_header(first, previous_block))
        fsync_dir(self.directory)
        fd = os.open(path, os.O_RDWR)
        if self.segments:
            os.close(self.fd)
        self.segments.append(Segment(first, path))
        self.firsts.append(first)
        self.fd = fd
        self.size = self.synced_end = self.allocated = os.fstat(self.fd).st_size
        self.dirty = False
        self.durable_last = first - 1

    def drop_through(self, index: int) -> None:
        """Delete the segments whose entries are all at or below ``index`` (never the active
        one). Not fsynced: a deletion a crash undoes is redone on the next open."""
        stale = index + 1 - (self.last_index() + 1 - len(self.cache))
        if stale > 0:
            self._trim_cache(stale)
        n = 0
        while n < len(self.segments) - 1 and self.firsts[n + 1] - 1 <= index:
            n += 1
        for seg in self.segments[:n]:  # oldest first: a crash part-way leaves a contiguous log
            remove_if_present(seg.path)
            log.info("deleted log segment %s (compacted through index %d)", seg.path, index)
        if n:
            cut = self.firsts[n] - self.base
            del self.terms[:cut], self.lens[:cut], self.types[:cut], self.pos[:cut], self.blk[:cut]
            del self.segments[:n], self.firsts[:n]
            self.base = self.firsts[0]

    def reset(self, first: int) -> None:
        """Delete every segment; the next entry appended will be ``first``. Durable on return."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.segments:
            for seg in reversed(self.segments):
                remove_if_present(seg.path)  # a retry finds some gone
            fsync_dir(self.directory)
        self.segments.clear()
        self.firsts.clear()
        self.base = first
        for column in (self.terms, self.lens, self.types, self.pos, self.blk):
            del column[:]
        self.cache.clear()
        self.cached_bytes = 0
        self.size = self.synced_end = self.allocated = 0
        self.dirty = False
        self.durable_last = first - 1

    def close(self) -> None:
        if self.fd >= 0:
            self.sync()
            if self.allocated > self.size:
                os.ftruncate(self.fd, self.size)  # tidy; the next open would cut the zeros too
                self.allocated = self.size
            os.close(self.fd)
            self.fd = -1

    # -- the cache ----------------------------------------------------------------------------
    def _trim_cache(self, n: int) -> None:
        """Forget the ``n`` oldest cached entries."""
        n = min(n, len(self.cache))
        first = self.last_index() + 1 - len(self.cache) - self.base
        self.cached_bytes -= sum(self.lens[first : first + n]) + ENTRY_OVERHEAD * n
        del self.cache[:n]

    def _cut_cache(self, index: int) -> None:
        """Forget cached entries ``index ..`` (called before the index columns are cut)."""
        cache_first = self.last_index() + 1 - len(self.cache)
        keep = max(0, index - cache_first)
        gone = self.cache[keep:]
        self.cached_bytes -= sum(len(e.data) for e in gone) + ENTRY_OVERHEAD * len(gone)
        del self.cache[keep:]

    # -- reading ----------------------------------------------------------------------------
    def read(self, lo: int, hi: int) -> list[Entry]:
        """Entries ``[lo, hi)``, ``base <= lo <= hi <= last + 1``: from the cache, else the files."""
        cache_first = self.last_index() + 1 - len(self.cache)
        if lo >= cache_first:
            return self.cache[lo - cache_first : hi - cache_first]
        out = self._read_files(lo, min(hi, cache_first))
        if hi > cache_first:
            out += self.cache[: hi - cache_first]
        return out

    def _read_files(self, lo: int, hi: int) -> list[Entry]:
        out: list[Entry] = []
        terms, lens, types, pos, base = self.terms, self.lens, self.types, self.pos, self.base
        while lo < hi:
            k = bisect_right(self.firsts, lo) - 1
            end = min(hi, self.firsts[k + 1]) if k + 1 < len(self.firsts) else hi
            a, b = lo - base, end - base
            start = pos[a]
            raw = self._pread(self.segments[k], pos[b - 1] + lens[b - 1] - start, start)
            for j in range(a, b):
                p = pos[j] - start
                kind = _TYPES.get(types[j])
                if kind is None:
                    raise StorageError(f"{self.segments[k].path}: unknown entry type {types[j]} at index {base + j}")
                out.append(Entry(terms[j], base + j, kind, raw[p : p + lens[j]]))
            lo = end
        return out

    def _pread(self, seg: Segment, size: int, offset: int) -> bytes:
        if seg is self.segments[-1]:
            return _pread_all(self.fd, size, offset)
        fd = os.open(seg.path, os.O_RDONLY)
        try:
            return _pread_all(fd, size, offset)
        finally:
            os.close(fd)


def _pread_all(fd: int, size: int, offset: int) -> bytes:
    chunks = []
    while size > 0:
        chunk = os.pread(fd, size, offset)
        if not chunk:
            raise StorageError(f"log segment ended early: wanted {size} more bytes at byte {offset}")
        chunks.append(chunk)
        size -= len(chunk)
        offset += len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
