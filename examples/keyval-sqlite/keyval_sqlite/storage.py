"""``SqliteStorage``: the whole ``keyval.plugin_api.storage.Storage`` contract on one SQLite database.

Durability comes from SQLite itself: WAL mode with ``synchronous=FULL`` fsyncs the WAL on
every COMMIT. Writes collect in one open transaction and ``sync()`` commits it, so many
appends cost one fsync (group commit); a crash rolls back whatever was not yet committed,
which is exactly what the contract allows to be lost.
"""
from __future__ import annotations

import functools
import logging
import os
import sqlite3
import threading
import time
import zlib
from typing import Iterable, Sequence

from keyval.errors import CorruptLog
from keyval.raft.storage import Compacted, SnapshotUnavailable, Unavailable, limit_size
from keyval.raft.types import Entry, EntryType, HardState, Membership, Snapshot, SnapshotMeta
from keyval.plugin_api.storage import SnapshotInfo

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS log (
    idx INTEGER PRIMARY KEY, term INTEGER NOT NULL, type INTEGER NOT NULL, data BLOB NOT NULL);
-- The configuration entries, for config_indexes() without a scan of the log. Kept by SQLite
-- in the same transactions as the log, so it always matches it; a database from before it
-- existed gets it built here on open.
CREATE INDEX IF NOT EXISTS log_config ON log (idx) WHERE type = 1;
-- One row: the hard state, and the (index, term) the log was compacted up to.
CREATE TABLE IF NOT EXISTS state (
    id INTEGER PRIMARY KEY CHECK (id = 0), term INTEGER NOT NULL, vote TEXT NOT NULL,
    commit_index INTEGER NOT NULL, base_index INTEGER NOT NULL, base_term INTEGER NOT NULL);
INSERT OR IGNORE INTO state VALUES (0, 0, '', 0, 0, 0);
CREATE TABLE IF NOT EXISTS snapshots (
    idx INTEGER NOT NULL, term INTEGER NOT NULL, membership BLOB NOT NULL, data BLOB NOT NULL,
    crc INTEGER NOT NULL, created REAL NOT NULL, PRIMARY KEY (idx, term));
"""


def locked(method):
    """The node runtime calls some methods from a worker thread: one caller at a time."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper


class SqliteStorage:
    def __init__(self, data_dir: str, snapshots_keep: int = 2) -> None:
        if snapshots_keep < 1:
            raise ValueError(f"snapshots_keep must be at least 1, not {snapshots_keep}")
        self.snapshots_keep = snapshots_keep
        self._lock = threading.RLock()
        os.makedirs(data_dir, exist_ok=True)
        path = os.path.join(data_dir, "keyval.sqlite3")
        try:
            # isolation_level=None: we say BEGIN and COMMIT ourselves, so sync() decides when.
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
            # A damaged page (a bad block) found now stops the node with where it is, rather
            # than failing a read mid-run; SQLite checks page structure, not our bytes.
            (verdict,) = self._db.execute("PRAGMA quick_check(1)").fetchone()
        except sqlite3.DatabaseError as exc:
            raise CorruptLog(path, 0, f"SQLite cannot read it: {exc}") from exc
        if verdict != "ok":
            raise CorruptLog(path, 0, f"SQLite quick_check: {verdict}")
        # Cached, since every read checks them; the database stays the source of truth.
        self._base_index, self._base_term = self._db.execute("SELECT base_index, base_term FROM state").fetchone()
        (last,) = self._db.execute("SELECT max(idx) FROM log").fetchone()
        self._last = last if last is not None else self._base_index

    # -- read side (keyval.raft.storage.LogStorage) ----------------------------------------
    @locked
    def initial_state(self) -> tuple[HardState, SnapshotMeta]:
        term, vote, commit = self._db.execute("SELECT term, vote, commit_index FROM state").fetchone()
        return HardState(term, vote, commit), self.snapshot_meta()

    @locked
    def first_index(self) -> int:
        return self._base_index + 1

    @locked
    def last_index(self) -> int:
        return self._last

    @locked
    def term(self, index: int) -> int:
        if index < self._base_index:
            raise Compacted(index)
        if index > self._last:
            raise Unavailable(index)
        if index == self._base_index:
            return self._base_term
        return self._db.execute("SELECT term FROM log WHERE idx = ?", (index,)).fetchone()[0]

    @locked
    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        if lo <= self._base_index:
            raise Compacted(lo)
        if hi > self._last + 1:
            raise Unavailable(hi)
        rows = self._db.execute("SELECT term, idx, type, data FROM log WHERE idx >= ? AND idx < ? ORDER BY idx",
                                (lo, hi))
        return limit_size([Entry(term, idx, EntryType(kind), bytes(data)) for term, idx, kind, data in rows],
                          max_bytes)

    @locked
    def snapshot_meta(self) -> SnapshotMeta:
        row = self._db.execute("SELECT idx, term, membership FROM snapshots ORDER BY idx DESC, term DESC LIMIT 1"
                               ).fetchone()
        if row is None:
            return SnapshotMeta()
        return SnapshotMeta(row[0], row[1], Membership.decode(row[2]))

    def durable_watermark(self) -> tuple[int, int]:
        # This example keeps no watermark apart from its database: it cannot tell whether
        # damage took entries, and says so the way the contract allows (nothing known lost).
        last = self._last
        return last, self.term(last)

    @locked
    def config_indexes(self) -> list[int]:
        # type = 1 is EntryType.CONFIG, spelled as in the partial index so SQLite uses it.
        rows = self._db.execute("SELECT idx FROM log WHERE type = 1 AND idx > ? ORDER BY idx", (self._base_index,))
        return [idx for (idx,) in rows]

    @locked
    def snapshot_chunk(self, index: int, offset: int, size: int) -> bytes:
        meta = self.snapshot_meta()
        if meta.index != index or index == 0:
            raise SnapshotUnavailable(index)
        (chunk,) = self._db.execute("SELECT substr(data, ?, ?) FROM snapshots WHERE idx = ? AND term = ?",
                                    (offset + 1, size, meta.index, meta.term)).fetchone()
        return bytes(chunk)

    # -- write side (keyval.plugin_api.storage.Storage) -----------------------------------------------
    @locked
    def append(self, entries: Sequence[Entry]) -> None:
        entries = [e for e in entries if e.index > self._base_index]  # covered by the snapshot
        if not entries:
            return
        first = entries[0].index
        if first > self._last + 1:
            raise ValueError(f"gap: appending {first} after last index {self._last}")
        self._begin()
        self._db.execute("DELETE FROM log WHERE idx >= ?", (first,))
        self._db.executemany("INSERT INTO log VALUES (?, ?, ?, ?)",
                             [(e.index, e.term, int(e.type), e.data) for e in entries])
        self._last = entries[-1].index

    @locked
    def set_hard_state(self, hard_state: HardState) -> None:
        term, vote = self._db.execute("SELECT term, vote FROM state").fetchone()
        self._begin()
        self._db.execute("UPDATE state SET term = ?, vote = ?, commit_index = ?",
                         (hard_state.term, hard_state.vote, hard_state.commit))
        if (term, vote) != (hard_state.term, hard_state.vote):
            self._commit()  # term and vote must be durable on return; commit may wait

    @locked
    def sync(self) -> None:
        self._commit()

    @locked
    def apply_snapshot(self, snapshot: Snapshot) -> None:
        meta = snapshot.meta
        if meta.index <= self.snapshot_meta().index:
            return  # not newer than what we have
        keep = self._base_index <= meta.index <= self._last and self.term(meta.index) == meta.term
        self._begin()
        if keep:  # our log agrees with the leader's up to the snapshot: keep what follows
            self._db.execute("DELETE FROM log WHERE idx <= ?", (meta.index,))
        else:
            self._db.execute("DELETE FROM log")
            self._last = meta.index
        self._set_base(meta.index, meta.term)
        self._save_snapshot(meta, snapshot.data)
        self._commit()

    @locked
    def create_snapshot(self, index: int, membership: Membership, data: bytes | Iterable[bytes]) -> SnapshotMeta:
        if index < self.snapshot_meta().index:
            raise ValueError(f"snapshot at {index} is older than the newest one")
        meta = SnapshotMeta(index, self.term(index), membership)  # term() refuses an index not held
        blob = bytes(data) if isinstance(data, (bytes, bytearray, memoryview)) else b"".join(data)
        self._begin()
        self._save_snapshot(meta, blob)
        self._commit()
        return meta

    @locked
    def load_snapshot(self) -> Snapshot | None:
        rows = self._db.execute("SELECT idx, term, membership, data, crc FROM snapshots ORDER BY idx DESC, term DESC")
        for index, term, membership, data, crc in rows.fetchall():
            if zlib.crc32(data) == crc:
                return Snapshot(SnapshotMeta(index, term, Membership.decode(membership)), bytes(data))
            log.warning("skipping corrupt snapshot at index %d term %d: checksum mismatch", index, term)
        return None

    @locked
    def list_snapshots(self) -> list[SnapshotInfo]:
        rows = self._db.execute("SELECT idx, term, length(data), created FROM snapshots ORDER BY idx, term")
        return [SnapshotInfo(*row) for row in rows]

    @locked
    def compact(self, index: int) -> None:
        if index <= self._base_index:
            return
        newest = self.snapshot_meta().index
        if index > newest:
            raise ValueError(f"compact {index} beyond the newest snapshot, at {newest}")
        term = self.term(index)
        self._begin()
        self._db.execute("DELETE FROM log WHERE idx <= ?", (index,))
        self._set_base(index, term)  # made durable by the next commit: a stale base is safe

    @locked
    def close(self) -> None:
        self._commit()
        self._db.close()

    # -- helpers ---------------------------------------------------------------------------
    def _begin(self) -> None:
        if not self._db.in_transaction:
            self._db.execute("BEGIN IMMEDIATE")

    def _commit(self) -> None:
        if self._db.in_transaction:
            self._db.execute("COMMIT")  # with synchronous=FULL: fsynced when this returns

    def _set_base(self, index: int, term: int) -> None:
        self._db.execute("UPDATE state SET base_index = ?, base_term = ?", (index, term))
        self._base_index, self._base_term = index, term

    def _save_snapshot(self, meta: SnapshotMeta, data: bytes) -> None:
        self._db.execute("INSERT OR REPLACE INTO snapshots VALUES (?, ?, ?, ?, ?, ?)",
                         (meta.index, meta.term, meta.membership.encode(), data, zlib.crc32(data), time.time()))
        self._db.execute("DELETE FROM snapshots WHERE rowid NOT IN "
                         "(SELECT rowid FROM snapshots ORDER BY idx DESC, term DESC LIMIT ?)",
                         (self.snapshots_keep,))
