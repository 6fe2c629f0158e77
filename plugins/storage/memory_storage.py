"""The ``memory`` backend's storage: the whole ``keyval.plugin_api.storage.Storage`` contract in memory.

Built on the core's reference ``MemoryStorage``, which already holds the log, the read view
and its named errors; this adds what the runtime needs beyond it: snapshots kept and listed
the way a disk backend keeps them, snapshot data given as chunks, ``sync`` and ``close``.
"""
from __future__ import annotations

import time
from typing import Iterable

from keyval.raft.storage import MemoryStorage
from keyval.raft.types import Membership, Snapshot, SnapshotMeta
from keyval.plugin_api.storage import SnapshotInfo


class MemoryBackend(MemoryStorage):
    def __init__(self, keep: int = 2) -> None:
        super().__init__()
        if keep < 1:
            raise ValueError(f"snapshots_keep must be at least 1, not {keep}")
        self.keep = keep
        #: (info, snapshot), oldest first; the last one is ``self.snapshot``.
        self._kept: list[tuple[SnapshotInfo, Snapshot]] = []
        self._closed = False

    def sync(self) -> None:
        self._check_open()  # everything is as durable as it will ever be

    def close(self) -> None:
        self._closed = True

    def append(self, entries) -> None:
        self._check_open()
        super().append(entries)

    def set_hard_state(self, hs) -> None:
        self._check_open()
        super().set_hard_state(hs)

    def create_snapshot(self, index: int, membership: Membership, data: bytes | Iterable[bytes]) -> SnapshotMeta:
        self._check_open()
        if index < self.snapshot.meta.index:
            raise ValueError(f"snapshot at {index} is older than the newest one, at {self.snapshot.meta.index}")
        # The term lookup doubles as the "index must be held" check (Compacted / Unavailable).
        meta = SnapshotMeta(index, self.term(index), membership)
        blob = bytes(data) if isinstance(data, (bytes, bytearray, memoryview)) else b"".join(data)
        self._keep(Snapshot(meta, blob))
        return meta

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        self._check_open()
        before = self.snapshot
        super().apply_snapshot(snapshot)
        if self.snapshot is not before:
            self._keep(snapshot)

    def load_snapshot(self) -> Snapshot | None:
        return self._kept[-1][1] if self._kept else None

    def list_snapshots(self) -> list[SnapshotInfo]:
        return [info for info, _ in self._kept]

    def compact(self, index: int) -> None:
        self._check_open()
        super().compact(index)

    def _keep(self, snapshot: Snapshot) -> None:
        meta = snapshot.meta
        self.snapshot = snapshot
        self._kept = [(i, s) for i, s in self._kept if (i.index, i.term) != (meta.index, meta.term)]
        self._kept.append((SnapshotInfo(meta.index, meta.term, len(snapshot.data), time.time()), snapshot))
        del self._kept[: -self.keep]

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("storage is closed")
