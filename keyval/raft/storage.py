"""The narrow, read-only view the core has of persisted state, and an in-memory reference.

The core only *reads* storage; all writes happen in the runtime, following a ``Ready``. A
storage plugin (see ``keyval/hookspecs.py``) adapts to this interface.
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import Protocol

from .storage_errors import Compacted, SnapshotUnavailable, StorageError, Unavailable  # noqa: F401 - re-exported
from .types import Entry, EntryType, HardState, Snapshot, SnapshotMeta


#: Bytes counted per entry on top of its data, for batching by size.
ENTRY_OVERHEAD = 24


def entry_size(entry: Entry) -> int:
    return len(entry.data) + ENTRY_OVERHEAD


def limit_size(entries: list[Entry], max_bytes: int | None) -> list[Entry]:
    """The longest prefix within ``max_bytes`` — but always at least one entry."""
    if max_bytes is None or not entries:
        return entries
    total = 0
    for n, entry in enumerate(entries):
        total += entry_size(entry)
        if total > max_bytes and n > 0:
            return entries[:n]
    return entries


class LogStorage(Protocol):
    """What the core reads of persisted state; ``keyval.plugin_api.storage.Storage`` adds the writes."""

    def initial_state(self) -> tuple[HardState, SnapshotMeta]:
        """The persisted hard state and the metadata of the newest snapshot."""

    def first_index(self) -> int:
        """Index of the first entry held (snapshot index + 1)."""

    def last_index(self) -> int:
        """Index of the last entry held (the snapshot index when the log is empty)."""

    def term(self, index: int) -> int:
        """Term of the entry at ``index``; the snapshot's term at the snapshot index.

        Raises Compacted below the snapshot index and Unavailable beyond the last index.
        """

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries ``[lo, hi)``, cut to ``max_bytes`` but at least one.

        Raises Compacted if ``lo`` < first index and Unavailable if ``hi`` > last index + 1.
        """

    def snapshot_meta(self) -> SnapshotMeta:
        """Metadata of the newest snapshot (index 0 when there is none)."""

    def config_indexes(self) -> list[int]:
        """Indexes of the configuration entries (``EntryType.CONFIG``) held, ascending: every
        one in ``first_index()..last_index()`` and none outside.

        The core reads these few entries at startup instead of the whole log to rebuild its
        configuration history (as etcd's ``InitialState`` hands over a ConfState). So they
        follow the log exactly: an append that truncates a suffix drops that suffix's indexes,
        compaction and a snapshot install drop those they cover, and after a reopen they
        describe the log the reopen recovered (a torn tail cut off drops its indexes too).
        """

    def snapshot_chunk(self, index: int, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes of the newest snapshot's data from ``offset``.

        Raises SnapshotUnavailable if the newest snapshot is no longer at ``index``.
        """

    def durable_watermark(self) -> tuple[int, int]:
        """(index, term) of the last entry this storage ever reported durable (a ``sync()``
        returned with it in the log, or a snapshot covered it) and did not discard on purpose
        since (a conflicting suffix that an append replaced, a log that an installed
        snapshot replaced). Kept durably apart from the log, so that damage to the log
        cannot take it along: after a bad block, a cut tail or a truncated file the index is
        above ``last_index()``, and entries ``last_index() + 1 ..`` it are entries this node
        may have acknowledged and no longer holds. The core then re-fetches them, and votes
        as that lost log would, until it holds them (``RaftCore.recovering_to``). A backend
        that cannot tell returns ``(last_index(), term(last_index()))``: nothing known lost.
        """


class MemoryStorage:
    """An in-memory LogStorage with the write side the runtime would drive.

    Used by the simulator and by tests; it loses everything a real crash would lose only if
    the caller forgets to apply a Ready — which is exactly what the simulator relies on.
    Not a storage plugin, nor a model of one: its ``create_snapshot`` takes bytes and
    returns the ``Snapshot`` (the core's tests want the data back), ignores an index at or
    below its snapshot, and keeps one snapshot. The plugin contract is
    ``keyval.plugin_api.storage.Storage``; the ``memory`` backend
    (``plugins/storage/memory_storage.py``) implements it on top of this class.
    """

    def __init__(self) -> None:
        self.hard_state = HardState()
        self.snapshot = Snapshot(SnapshotMeta())
        # entries[0] is a dummy standing for the snapshot (index, term).
        self._entries: list[Entry] = [Entry(term=0, index=0)]
        # Invariant: the indexes of the CONFIG entries in _entries[1:], ascending; every
        # change to _entries below changes it alike.
        self._config_indexes: list[int] = []

    # -- read side (LogStorage) -----------------------------------------------------------
    def initial_state(self) -> tuple[HardState, SnapshotMeta]:
        return self.hard_state, self.snapshot.meta

    def first_index(self) -> int:
        return self._entries[0].index + 1

    def last_index(self) -> int:
        return self._entries[0].index + len(self._entries) - 1

    def term(self, index: int) -> int:
        offset = self._entries[0].index
        if index < offset:
            raise Compacted(index)
        if index - offset >= len(self._entries):
            raise Unavailable(index)
        return self._entries[index - offset].term

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        offset = self._entries[0].index
        if lo <= offset:
            raise Compacted(lo)
        if hi > self.last_index() + 1:
            raise Unavailable(hi)
        return limit_size(self._entries[lo - offset : hi - offset], max_bytes)

    def snapshot_meta(self) -> SnapshotMeta:
        return self.snapshot.meta

    def config_indexes(self) -> list[int]:
        return list(self._config_indexes)

    def snapshot_chunk(self, index: int, offset: int, size: int) -> bytes:
        if self.snapshot.meta.index != index:
            raise SnapshotUnavailable(index)
        return self.snapshot.data[offset : offset + size]

    def durable_watermark(self) -> tuple[int, int]:
        # Memory loses nothing it holds, and holds nothing after a restart.
        return self.last_index(), self._entries[-1].term

    # -- write side (driven by the runtime from a Ready) ----------------------------------
    def set_hard_state(self, hs: HardState) -> None:
        self.hard_state = hs

    def append(self, entries: tuple[Entry, ...] | list[Entry]) -> None:
        """Append, first truncating any suffix at or after ``entries[0].index``."""
        if not entries:
            return
        offset = self._entries[0].index
        first = entries[0].index
        if first <= offset:
            # Entries already covered by the snapshot are skipped.
            entries = [e for e in entries if e.index > offset]
            if not entries:
                return
            first = entries[0].index
        if first > self.last_index() + 1:
            raise ValueError(f"gap: appending {first} after last index {self.last_index()}")
        del self._entries[first - offset :]
        self._entries.extend(entries)
        del self._config_indexes[bisect_left(self._config_indexes, first) :]
        self._config_indexes += [e.index for e in entries if e.type is EntryType.CONFIG]

    def truncate_from(self, index: int) -> None:
        """Drop entries ``index ..`` (above the snapshot): what damage does, for simulations."""
        offset = self._entries[0].index
        del self._entries[max(index - offset, 1) :]
        del self._config_indexes[bisect_left(self._config_indexes, index) :]

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """Replace the log with a received snapshot (keeps a matching suffix, like etcd)."""
        meta = snapshot.meta
        if meta.index <= self.snapshot.meta.index:
            return
        try:
            keep = self.term(meta.index) == meta.term
        except (Compacted, Unavailable):
            keep = False
        offset = self._entries[0].index
        tail = self._entries[meta.index - offset + 1 :] if keep else []
        self.snapshot = snapshot
        self._entries = [Entry(term=meta.term, index=meta.index), *tail]
        self._config_indexes = [i for i in self._config_indexes if i > meta.index] if keep else []

    def create_snapshot(self, index: int, membership, data: bytes) -> Snapshot:
        """Record a snapshot of the state machine at ``index`` (which must be applied)."""
        if index <= self.snapshot.meta.index:
            return self.snapshot
        snap = Snapshot(SnapshotMeta(index=index, term=self.term(index), membership=membership), data)
        self.snapshot = snap
        return snap

    def compact(self, index: int) -> None:
        """Discard entries up to ``index`` (which must be covered by the snapshot)."""
        offset = self._entries[0].index
        if index <= offset:
            return
        if index > self.snapshot.meta.index:
            raise ValueError(f"compact {index} beyond snapshot {self.snapshot.meta.index}")
        self._entries = [Entry(term=self.term(index), index=index), *self._entries[index - offset + 1 :]]
        del self._config_indexes[: bisect_right(self._config_indexes, index)]
