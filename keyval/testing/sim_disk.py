"""A simulated disk: what a node's storage has made durable, and what a crash takes away.

``SimDisk`` holds the durable state (a ``memory`` backend that only ever sees synced
writes); each incarnation of the node opens a ``SimStorage`` over it, a full
``keyval.plugin_api.storage.Storage`` whose reads see everything written through it and whose writes
become durable exactly as the storage contract promises — no sooner:

- ``append``: at the next ``sync``;
- ``set_hard_state``: term and vote at once when they change, the commit index at the next
  ``sync`` (a stale commit is what the contract allows);
- ``apply_snapshot``, ``create_snapshot``, ``compact``: at once.

A crash (``SimDisk.crash``) drops every write not yet durable; the dead handle raises
``SimulatedCrash`` at any later write. A crash may also damage the disk: ``lose_synced``
takes the last synced batch of entries with it (a bad block, a cut tail, a truncated file),
while the durable watermark — kept apart, as the segment storage keeps it — remembers them. Faults are armed on the handle by the simulator and
fire at the next matching call: a crash before a write takes effect ("before-persist"),
during a sync (nothing of it durable) or right after one ("after-persist").
"""
from __future__ import annotations

import copy
from typing import Any, Iterable, Protocol, Sequence

from keyval.raft import Compacted, Entry, HardState, Membership, Snapshot, SnapshotMeta, Unavailable
from keyval.plugin_api.storage import SnapshotInfo
from keyval_plugins.storage.memory_storage import MemoryBackend

from .sim_loop import SimulatedCrash


class DiskObserver(Protocol):
    """The simulator's view of one node's disk (checks, trace, faults)."""

    def disk_fault(self, call: str) -> str | None:
        """The fault due at this call ("append", "hard-state", "snapshot", "sync"), if any."""

    def before_append(self, entries: Sequence[Entry]) -> None: ...

    def appended(self, entries: Sequence[Entry]) -> None: ...

    def made_durable(self, durable: MemoryBackend) -> None: ...

    def crashed(self, where: str) -> None:
        """A fault of this disk crashed the node (called before ``SimulatedCrash`` is raised)."""


class SimDisk:
    def __init__(self, keep: int = 2) -> None:
        self.durable = MemoryBackend(keep=keep)
        self.handle: SimStorage | None = None
        #: (index, term) of the last entry ever durable here and not discarded on purpose (a
        #: truncated conflicting suffix, a log replaced by a snapshot): ``durable_watermark``
        self.watermark = (0, 0)
        #: (first, last) of the entries the last sync made durable, if it wrote any
        self.last_batch: tuple[int, int] | None = None

    def open(self, observer: DiskObserver) -> "SimStorage":
        """A new incarnation's storage: it starts from what is durable."""
        self.handle = SimStorage(self, copy.deepcopy(self.durable), observer)
        return self.handle

    def crash(self) -> None:
        """Power off: unsynced writes are gone; the open handle is dead."""
        if self.handle is not None:
            self.handle.dead = True
            self.handle.pending.clear()
            self.handle = None

    def discard_from(self, index: int | None) -> None:
        """Entries ``index ..`` are replaced on purpose (a conflicting suffix; a log an
        installed snapshot replaces): the watermark comes down with them."""
        # While entries are missing, the watermark stays until the log is back above it: a
        # replaced entry received since the damage proves nothing about the lost ones.
        if index is not None and index <= self.watermark[0] and not self.lost():
            self.watermark = (index - 1, _term_or_none(self.durable, index - 1) or 0)

    def lost(self) -> bool:
        """Synced entries are missing that the node has not fetched again."""
        return self.watermark[0] > self.durable.last_index()

    def lose_last_batch(self) -> tuple[int, int] | None:
        """Damage: the entries of the last synced batch (those the snapshot does not cover)
        are gone from the log; the commit index falls to what is left, as the segment storage
        lowers it on open. The watermark is untouched. Returns the range lost, if any."""
        durable, batch = self.durable, self.last_batch
        if batch is None:
            return None
        # Never the bootstrap configuration (index 1) with no snapshot behind it: a node that
        # knows no member at all waits to be replaced, a different story from losing entries.
        first = max(batch[0], durable.snapshot_meta().index + 1, 2)
        last = durable.last_index()
        if first > last:
            return None
        durable.truncate_from(first)
        hs = durable.hard_state
        if hs.commit > first - 1:
            durable.set_hard_state(HardState(hs.term, hs.vote, first - 1))
        self.last_batch = None
        return first, last


class SimStorage:
    def __init__(self, disk: SimDisk, live: MemoryBackend, observer: DiskObserver) -> None:
        self.disk = disk
        self.live = live
        self.observer = observer
        #: writes not yet durable, replayed onto the durable state by ``sync``
        self.pending: list[tuple[str, Any]] = []
        self.dead = False

    # -- reads: the live view ---------------------------------------------------------------
    def initial_state(self):
        return self.live.initial_state()

    def first_index(self) -> int:
        return self.live.first_index()

    def last_index(self) -> int:
        return self.live.last_index()

    def term(self, index: int) -> int:
        return self.live.term(index)

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        return self.live.entries(lo, hi, max_bytes)

    def snapshot_meta(self) -> SnapshotMeta:
        return self.live.snapshot_meta()

    def durable_watermark(self) -> tuple[int, int]:
        return self.disk.watermark

    def snapshot_chunk(self, index: int, offset: int, size: int) -> bytes:
        return self.live.snapshot_chunk(index, offset, size)

    def load_snapshot(self) -> Snapshot | None:
        return self.live.load_snapshot()

    def list_snapshots(self) -> list[SnapshotInfo]:
        return self.live.list_snapshots()

    def __getattr__(self, name: str):
        # A read the storage contract gains later reads the live view too.
        return getattr(self.live, name)

    # -- writes -----------------------------------------------------------------------------
    def append(self, entries: Sequence[Entry]) -> None:
        self._enter("append")
        self.observer.before_append(entries)
        self.live.append(entries)
        self.pending.append(("append", tuple(entries)))
        self.observer.appended(entries)

    def set_hard_state(self, hard_state: HardState) -> None:
        self._enter("hard-state")
        self.live.set_hard_state(hard_state)
        durable = self.disk.durable.hard_state
        if (hard_state.term, hard_state.vote) != (durable.term, durable.vote):
            self._durably(lambda d: d.set_hard_state(HardState(hard_state.term, hard_state.vote, durable.commit)))
        self.pending.append(("hard-state", hard_state))

    def sync(self) -> None:
        fault = self._enter("sync")
        if fault == "during-sync":
            self._crash("during a sync (its writes lost)")
        self._flush()
        if fault == "after-persist":
            self._crash("after a sync")

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        self._enter("snapshot")
        self.live.apply_snapshot(snapshot)
        self.pending.append(("apply-snapshot", snapshot))
        self._flush()

    def create_snapshot(self, index: int, membership: Membership, data: bytes | Iterable[bytes]) -> SnapshotMeta:
        self._check_alive()
        blob = bytes(data) if isinstance(data, (bytes, bytearray, memoryview)) else b"".join(data)
        meta = self.live.create_snapshot(index, membership, blob)
        self._durably(lambda d: d.create_snapshot(index, membership, blob))
        return meta

    def compact(self, index: int) -> None:
        self._check_alive()
        self.live.compact(index)
        self._durably(lambda d: d.compact(index))

    def close(self) -> None:
        pass  # a crashed incarnation's shutdown, or the end of the run: nothing to release

    # -- internals --------------------------------------------------------------------------
    def _check_alive(self) -> None:
        if self.dead:
            raise SimulatedCrash("the node crashed; its disk is gone")

    def _enter(self, call: str) -> str | None:
        self._check_alive()
        fault = self.observer.disk_fault(call)
        if fault == "before-persist":
            self._crash(f"before persisting ({call})")
        return fault

    def _crash(self, where: str) -> None:
        self.observer.crashed(where)  # the simulator kills the incarnation: disk, network, tasks
        raise SimulatedCrash(where)

    def _durably(self, write) -> None:
        write(self.disk.durable)
        self.observer.made_durable(self.disk.durable)

    def _flush(self) -> None:
        disk = self.disk
        durable = disk.durable
        first = None
        for kind, arg in self.pending:
            if kind == "append":
                if arg:
                    disk.discard_from(_first_conflict(durable, arg))
                    first = arg[0].index if first is None else min(first, arg[0].index)
                durable.append(arg)
            elif kind == "hard-state":
                durable.set_hard_state(arg)
            else:
                meta = arg.meta
                if meta.index <= durable.last_index() and _term_or_none(durable, meta.index) != meta.term:
                    disk.discard_from(meta.index + 1)
                durable.apply_snapshot(arg)
        self.pending.clear()
        if first is not None:
            disk.last_batch = (first, durable.last_index())
        if durable.last_index() > disk.watermark[0]:
            disk.watermark = (durable.last_index(), durable.term(durable.last_index()))
        self.observer.made_durable(durable)


def _term_or_none(log: MemoryBackend, index: int) -> int | None:
    try:
        return log.term(index)
    except (Compacted, Unavailable):
        return None


def _first_conflict(log: MemoryBackend, entries: Sequence[Entry]) -> int | None:
    """The first index where ``entries`` replace a different entry the log holds."""
    for entry in entries:
        if entry.index > log.last_index():
            return None
        held = _term_or_none(log, entry.index)
        if held is not None and held != entry.term:
            return entry.index
    return None
