"""Storages with one bug each, injected into the built-ins and the example: what a real
plugin gets wrong. The conformance suite must fail every one (test_suite_catches.py).

Each is opened by ``open_<name>(data_dir)``, the way a suite's ``open_storage`` would.
"""
from __future__ import annotations

import contextlib

from keyval.raft.types import Entry, Snapshot, SnapshotMeta
from keyval_sqlite.storage import SqliteStorage
from keyval_plugins.storage.memory_storage import MemoryBackend
from keyval_plugins.storage.segment.storage import SegmentStorage


class SqliteWithoutFsync(SqliteStorage):
    """fsync turned off: every COMMIT returns before anything reaches the disk."""

    def __init__(self, data_dir: str) -> None:
        super().__init__(data_dir)
        self._db.execute("PRAGMA synchronous=OFF")


class SqliteReadingRawRows(SqliteStorage):
    """Gives back what it appended as appended, but what it reads from disk (after a reopen)
    as the raw row: ``type`` an int, ``data`` a memoryview (``as_int`` / ``as_view``)."""

    def __init__(self, data_dir: str, as_int: bool, as_view: bool) -> None:
        super().__init__(data_dir)
        self._appended: dict[int, Entry] = {}
        self._as_int, self._as_view = as_int, as_view

    def append(self, entries) -> None:
        super().append(entries)
        if entries:
            self._appended = {i: e for i, e in self._appended.items() if i < entries[0].index}
            self._appended.update((e.index, e) for e in entries)

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        return [self._appended.get(e.index) or self._raw(e) for e in super().entries(lo, hi, max_bytes)]

    def _raw(self, e: Entry) -> Entry:
        return Entry(e.term, e.index, int(e.type) if self._as_int else e.type,
                     memoryview(e.data) if self._as_view else e.data)


class SqliteWithoutLock(SqliteStorage):
    """The data race: no lock, so the snapshot thread's transaction, the loop's and the sync
    thread's COMMIT interleave on the one connection."""

    def __init__(self, data_dir: str) -> None:
        super().__init__(data_dir)
        self._lock = contextlib.nullcontext()


class SqliteApplyingStaleSnapshots(SqliteStorage):
    """Installs any snapshot it is given, even one older than its own: its guard sees none."""

    _installing = False

    def snapshot_meta(self) -> SnapshotMeta:
        return SnapshotMeta() if self._installing else super().snapshot_meta()

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        self._installing = True
        try:
            super().apply_snapshot(snapshot)
        finally:
            self._installing = False


class MemoryReplacingNewerSnapshots(MemoryBackend):
    """Takes a snapshot below its newest and makes that the newest: its guard sees none."""

    def create_snapshot(self, index, membership, data) -> SnapshotMeta:
        newest, self.snapshot = self.snapshot, Snapshot(SnapshotMeta())
        try:
            return super().create_snapshot(index, membership, data)
        except BaseException:
            self.snapshot = newest
            raise


class SegmentWithoutLogFsync(SegmentStorage):
    """Syncs the hard state and snapshots but never fdatasyncs the log."""

    def sync(self) -> None:
        self._log.dirty = False  # what the fdatasync would have left behind, without it
        super().sync()


class SegmentForgettingLoss(SegmentStorage):
    """Cuts a damaged log as it should, but says nothing was lost: no watermark above it."""

    def durable_watermark(self) -> tuple[int, int]:
        last = self.last_index()
        return last, self.term(last)

