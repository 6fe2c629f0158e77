"""``SegmentStorage``: the ``segment`` backend's ``keyval.plugin_api.storage.Storage``.

It composes three durable pieces in one data dir::

    DATA_DIR/log/         the Raft log in segment files (log.py, format.py)
    DATA_DIR/hardstate    term, vote and commit, replaced atomically (hardstate.py)
    DATA_DIR/watermark    the last entry ever made durable (watermark.py)
    DATA_DIR/snapshots/   zstd snapshots (plugins/storage/snapshots.py)

and keeps the read view's one extra fact, the compaction point (``offset``): entries
``offset + 1 .. last`` are readable, ``term(offset)`` is known. On open the compaction point
is the newest valid snapshot's index — compaction itself is not persisted; segment files
that a crash kept are deleted again.

Threads: the node runtime runs sync, snapshots and compaction in an executor thread while
its event loop keeps reading. Writes must come one at a time (the runtime's Ready loop
guarantees it); reads may overlap a write. ``_lock`` guards the read view; slow I/O
(fsync, snapshot files) runs outside it so reads are not held up behind a disk flush.
"""
from __future__ import annotations

import dataclasses
import errno
import logging
import os
import threading
import time
from typing import Iterable, Sequence

from keyval.errors import StorageError
from keyval.raft.storage import ENTRY_OVERHEAD, Compacted, SnapshotUnavailable, Unavailable
from keyval.raft.types import Entry, HardState, Membership, Snapshot, SnapshotMeta
from keyval.plugin_api.storage import SnapshotInfo

from .fsutil import make_dirs_durably
from .hardstate import HardStateFile
from .log import SegmentLog
from .options import SegmentOptions
from .watermark import DAMAGED, WatermarkFile

log = logging.getLogger(__name__)

#: A changed commit index alone is written at most this often (on sync); a stale commit is
#: safe — the leader tells it again — so this only bounds replay after a restart.
COMMIT_WRITE_INTERVAL = 1.0
#: errors of a write that say space or descriptors ran out (keyval.runtime.space retries them)
_OUT_OF_RESOURCES = (errno.ENOSPC, errno.EDQUOT, errno.EMFILE, errno.ENFILE)


class SegmentStorage:
    def __init__(self, data_dir: str, options: SegmentOptions | None = None, snapshots=None) -> None:
        """Open (creating if needed) the storage in ``data_dir`` and recover it.

        ``snapshots`` replaces the ``SnapshotStore`` (tests only).
        """
        self.options = options = options or SegmentOptions()
        self.data_dir = data_dir
        make_dirs_durably(data_dir)
        if snapshots is None:
            from keyval_plugins.storage.snapshots import SnapshotStore

            make_dirs_durably(os.path.join(data_dir, "snapshots"))
            snapshots = SnapshotStore(os.path.join(data_dir, "snapshots"), options.snapshots_keep, options.snapshot_level)
        self._snapshots = snapshots
        self._lock = threading.Lock()
        self._closed = False
        self._hs_file = HardStateFile(data_dir)
        self._hs = self._hs_file.load()
        # The hard state as on disk, and when it was written (for the lazy commit).
        self._hs_saved = self._hs
        self._hs_saved_at = time.monotonic()
        self._log = SegmentLog(os.path.join(data_dir, "log"), options.segment_size, options.cache_bytes)
        snapshot = self._snapshots.load_newest()
        self._snap_meta = snapshot.meta if snapshot is not None else SnapshotMeta()
        #: the newest snapshot, decompressed: loaded here to find the newest *valid* one and
        #: handed to the first load_snapshot(); later loaded again for a send (snapshot_chunk)
        self._sent: Snapshot | None = snapshot
        self._offset = self._snap_meta.index
        self._offset_term = self._snap_meta.term
        self._reconcile()
        last = max(self._log.last_index(), self._offset)
        if self._hs.commit > last:
            log.warning("%s: the saved commit index %d is beyond the log, which ends at %d: lowered to %d "
                        "(entries %d..%d are fetched again from the leader)",
                        data_dir, self._hs.commit, last, last, last + 1, self._hs.commit)
            self._hs = dataclasses.replace(self._hs, commit=last)
        self._wm_file = WatermarkFile(data_dir)
        self._wm = self._open_watermark(last)
        #: entries are missing that were durable: the watermark waits for the log to pass it
        self._lost_since_open = self._wm[0] > last
        if self._lost_since_open and self._hs.commit > self._snap_meta.index:
            # Damage may have taken a block that superseded entries the log still holds (a
            # truncated conflicting suffix comes back when its replacement is lost): none of
            # the log is trusted as committed until the leader has matched it again.
            log.warning("%s: entries were lost to damage: trusting no commit index beyond the snapshot (%d, "
                        "was %d); the leader confirms the rest", data_dir, self._snap_meta.index, self._hs.commit)
            self._hs = dataclasses.replace(self._hs, commit=self._snap_meta.index)

    def _open_watermark(self, last: int) -> tuple[int, int]:
        """The watermark as found, checked against the log; a missing file is written now."""
        found = self._wm_file.load()
        held = (last, self._term(last) if last else 0)
        if found is None and not self._log.damaged:  # a data dir from before the watermark
            self._wm_file.save(*held)
            return held
        if found is None or found == DAMAGED:
            # Assume the worst that the hard state allows: something past the log was
            # durable, of a term up to the saved one. The node re-checks with its leader.
            log.error("%s is %s and the log was cut: assuming entries after index %d were lost; this node "
                      "re-fetches them from the leader before it votes as usual", self._wm_file.path,
                      "missing" if found is None else "damaged", last)
            return last + 1, self._hs.term
        index, term = found
        if index > last:
            # The node says what follows (keyval.runtime.node); the damage itself was logged.
            log.debug("%s: the log ends at index %d but entries up to %d (term %d) were durable",
                      self.data_dir, last, index, term)
            return index, term
        return held  # a crash between a log sync and the watermark write leaves it behind

    def _reconcile(self) -> None:
        """Fit the log found on disk to the newest valid snapshot (index S, term T)."""
        lg, index, term = self._log, self._snap_meta.index, self._snap_meta.term
        first, last = lg.base, lg.last_index()
        if first > index + 1:
            raise StorageError(
                f"the Raft log in {lg.directory} starts at index {first} but the newest usable snapshot "
                f"ends at index {index}: entries {index + 1}..{first - 1} are missing; refusing to start "
                f"(restore this node from a backup or replace it with a new member)"
            )
        if index > last or (index >= first and lg.terms[index - first] != term):
            # A crash while installing the snapshot, after saving it: finish the job.
            if last >= first:
                log.warning("discarding log entries %d..%d in %s: they do not continue the snapshot at "
                            "index %d term %d", first, last, lg.directory, index, term)
            lg.reset(index + 1)
        elif index >= first:
            lg.drop_through(index)

    # -- the read view (LogStorage) ---------------------------------------------------------
    def initial_state(self) -> tuple[HardState, SnapshotMeta]:
        return self._hs, self._snap_meta

    def first_index(self) -> int:
        return self._offset + 1

    def last_index(self) -> int:
        with self._lock:
            return self._log.last_index()

    def term(self, index: int) -> int:
        with self._lock:
            return self._term(index)

    def _term(self, index: int) -> int:
        if index <= self._offset:
            if index == self._offset:
                return self._offset_term
            raise Compacted(index)
        lg = self._log
        if index > lg.last_index():
            raise Unavailable(index)
        return lg.terms[index - lg.base]

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        with self._lock:
            lg = self._log
            if lo <= self._offset:
                raise Compacted(lo)
            if hi > lg.last_index() + 1:
                raise Unavailable(hi)
            if hi <= lo:
                return []
            if max_bytes is not None:
                hi = self._fit(lo, hi, max_bytes)
            return lg.read(lo, hi)

    def _fit(self, lo: int, hi: int, max_bytes: int) -> int:
        """The end of the longest run from ``lo`` within ``max_bytes`` (at least one entry),
        counted like ``keyval.raft.storage.limit_size``."""
        lens, base = self._log.lens, self._log.base
        total = 0
        for index in range(lo, hi):
            total += lens[index - base] + ENTRY_OVERHEAD
            if total > max_bytes and index > lo:
                return index
        return hi

    def snapshot_meta(self) -> SnapshotMeta:
        return self._snap_meta

    def durable_watermark(self) -> tuple[int, int]:
        with self._lock:
            return self._wm

    def _advance_watermark(self) -> None:
        """After a sync: the watermark follows the durable log, up, and down after a
        truncation — except while entries are missing, when only a log back above it moves
        it (an entry replaced since the damage proves nothing about the lost ones)."""
        durable = max(self._log.durable_last, self._snap_meta.index)
        if durable < self._wm[0] and self._lost_since_open:
            return
        with self._lock:
            mark = (durable, self._term(durable) if durable else 0)
        if mark == self._wm:
            return
        self._wm_file.save(*mark)
        self._wm = mark
        self._lost_since_open = False

    def config_indexes(self) -> list[int]:
        with self._lock:
            # The log may still hold compacted entries (a segment goes only when all of it can).
            return self._log.config_indexes(self._offset + 1)

    def snapshot_chunk(self, index: int, offset: int, size: int) -> bytes:
        """From the decompressed newest snapshot, loaded once for all the chunks of a send."""
        sent = self._sent
        if index != self._snap_meta.index:
            raise SnapshotUnavailable(index)
        if index == 0:
            return b""
        if sent is None or sent.meta.index != index:
            sent = self._snapshots.load_newest()
            if sent is None or sent.meta.index != index:
                raise SnapshotUnavailable(index)  # the newest one turned out damaged
            self._sent = sent
        return sent.data[offset : offset + size]

    # -- writes -----------------------------------------------------------------------------
    def append(self, entries: Sequence[Entry]) -> None:
        self._check_open()
        if not entries:
            return
        with self._lock:
            if entries[0].index <= self._offset:
                entries = [e for e in entries if e.index > self._offset]
                if not entries:
                    return
            first, last = entries[0].index, self._log.last_index()
            if first > last + 1:
                raise ValueError(f"gap: appending {first} after last index {last}")
            if entries[-1].index != first + len(entries) - 1:
                raise ValueError(f"entries {first}..{entries[-1].index} are not contiguous ({len(entries)} of them)")
            self._log.append(entries)

    def set_hard_state(self, hard_state: HardState) -> None:
        self._check_open()
        saved = self._hs_saved
        if hard_state.term != saved.term or hard_state.vote != saved.vote:
            self._save_hard_state(hard_state)
        self._hs = hard_state

    def _save_hard_state(self, hs: HardState) -> None:
        # Never record a commit beyond what this node holds durably: after a crash the core
        # would find a commit index pointing past its own log.
        durable = max(self._log.durable_last, self._snap_meta.index)
        saved = dataclasses.replace(hs, commit=min(hs.commit, durable))
        self._hs_file.save(saved)
        self._hs_saved, self._hs_saved_at = saved, time.monotonic()

    def sync(self) -> None:
        self._check_open()
        self._log.sync()
        # Before sync returns, hence before anything it made durable is acknowledged.
        self._advance_watermark()
        if self._hs.commit != self._hs_saved.commit and time.monotonic() - self._hs_saved_at >= COMMIT_WRITE_INTERVAL:
            try:
                self._save_hard_state(self._hs)
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    raise
                # Not needed for what this sync promises (a stale commit is safe): a full
                # disk or a lack of descriptors must not hold up the entries. Tried again
                # at the next sync.
                log.debug("%s: commit index %d not saved yet: %s", self.data_dir, self._hs.commit, exc)

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        self._check_open()
        meta = snapshot.meta
        if meta.index <= self._snap_meta.index:
            return
        self._snapshots.save(meta, snapshot.data)
        with self._lock:
            try:
                keep = self._term(meta.index) == meta.term
            except (Compacted, Unavailable):
                keep = False
            # The log first: if that fails (a full disk), the snapshot is not yet in force
            # and the runtime's retry of this call does it all again.
            if keep:
                self._log.drop_through(meta.index)
            else:
                self._log.reset(meta.index + 1)
            # Not kept: the runtime restores its state machine from it, a follower rarely
            # sends it on — snapshot_chunk loads it again if it does.
            self._snap_meta, self._sent = meta, None
            self._offset, self._offset_term = meta.index, meta.term
        if meta.index >= self._wm[0] or not self._lost_since_open:
            self._lost_since_open = False
            self._advance_watermark()

    def create_snapshot(self, index: int, membership: Membership, data: bytes | Iterable[bytes]) -> SnapshotMeta:
        self._check_open()
        term = self.term(index)  # Compacted / Unavailable unless the index is held
        if index < self._snap_meta.index:
            raise ValueError(f"snapshot at {index} is older than the newest one, at {self._snap_meta.index}")
        if index == self._snap_meta.index:
            return self._snap_meta  # the same state: the one on disk will do
        meta = SnapshotMeta(index=index, term=term, membership=membership)
        self._snapshots.save(meta, data)
        self._snap_meta, self._sent = meta, None
        return meta

    def load_snapshot(self) -> Snapshot | None:
        sent = self._sent
        if sent is not None and sent.meta.index == self._snap_meta.index:
            self._sent = None  # handed over; two copies of the state would be one too many
            return sent
        return self._snapshots.load_newest()

    def list_snapshots(self) -> list[SnapshotInfo]:
        return self._snapshots.list()

    def compact(self, index: int) -> None:
        self._check_open()
        with self._lock:
            if index <= self._offset:
                return
            if index > self._snap_meta.index:
                raise ValueError(f"compact {index} beyond the newest snapshot (index {self._snap_meta.index})")
            self._offset_term = self._term(index)
            self._offset = index
            self._log.drop_through(index)

    def close(self) -> None:
        if self._closed:
            return
        self._log.close()
        self._advance_watermark()
        self._wm_file.close()
        if self._hs != self._hs_saved:
            self._save_hard_state(self._hs)
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"segment storage in {self.data_dir} is closed")
