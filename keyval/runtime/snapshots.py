"""Snapshots of a node's state machine, and compaction of its log behind them.

A snapshot runs as its own task beside the Ready loop, so the loop keeps persisting, sending
(heartbeats) and applying while the snapshot is written: the state machine is frozen between
two applies (``KVStore.freeze``) and serialized, compressed and written in a worker thread.
One runs at a time, and never while the Ready loop installs a snapshot received from the
leader (``lock``): a storage backend takes snapshot writes one at a time.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from keyval.errors import NodeUnavailable

if TYPE_CHECKING:
    from keyval.runtime.node import Node
    from keyval.plugin_api.storage import Storage

log = logging.getLogger("keyval.node")


@dataclass(frozen=True)
class SnapshotOutcome:
    index: int
    term: int
    #: False when the newest snapshot already covered the applied index
    taken: bool
    first_index_before: int
    first_index_after: int
    keys: int
    seconds: float
    #: the log's last index once compacted
    last_index: int


class NodeSnapshots:
    def __init__(self, node: Node) -> None:
        self.node = node
        #: the node's storage, given when the node opens it
        self.storage: Storage | None = None
        self.lock = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()

    def busy(self) -> bool:
        return self.lock.locked()

    def start(self, full_compaction: bool) -> asyncio.Task:
        task = asyncio.create_task(self._take(full_compaction), name=f"{self.node.id}-snapshot")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    async def now(self, full_compaction: bool = False) -> SnapshotOutcome:
        """Snapshot at the applied index now (after any snapshot in progress). The work goes
        on if the caller gives up waiting: a half-written snapshot is never left."""
        node = self.node
        if not node.started() or not (node.membership.members or node.applied_membership.members):
            raise NodeUnavailable(f"{node.id} is not a member of a cluster yet: nothing to snapshot")
        return await asyncio.shield(self.start(full_compaction))

    async def wait(self) -> None:
        """Let snapshots in progress finish: their threads cannot be cancelled."""
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("node %s term %d: snapshot failed: %s", self.node.id, self.node.term, task.exception())

    async def _take(self, full_compaction: bool) -> SnapshotOutcome:
        """Snapshot at the applied index and compact the log behind it: up to the snapshot
        itself (``full_compaction``), else keeping the last ``snapshot_catchup_entries`` so a
        briefly slow follower needs no snapshot."""
        node = self.node
        storage = self.storage
        async with self.lock:
            started = time.monotonic()
            index, membership = node.applied_index, node.applied_membership
            first_before = storage.first_index()
            taken = index > storage.snapshot_meta().index
            if taken:
                with node.freeze() as frozen:  # as of `index`; later entries apply meanwhile
                    keys = frozen.items
                    await asyncio.get_running_loop().run_in_executor(
                        None, storage.create_snapshot, index, membership, frozen.chunks())
            else:
                keys = node.key_count
            meta = storage.snapshot_meta()
            keep = node.timing.snapshot_catchup_entries
            compact_to = meta.index if full_compaction else min(meta.index, index - keep)
            if compact_to >= first_before:
                # On the loop, not in a thread: the core reads the log between awaits, and a
                # backend's read view must not change under a read in progress.
                storage.compact(compact_to)
            outcome = SnapshotOutcome(meta.index, meta.term, taken, first_before, storage.first_index(),
                                      keys, time.monotonic() - started, storage.last_index())
        if taken:
            log.info("node %s term %d: snapshot at index %d (%d keys) in %.2fs; log now starts at %d",
                     node.id, node.term, meta.index, keys, outcome.seconds, outcome.first_index_after)
        elif outcome.first_index_after != first_before:
            log.info("node %s term %d: log compacted to start at %d (snapshot at index %d)",
                     node.id, node.term, outcome.first_index_after, meta.index)
        return outcome
