"""Maintenance operations a node serves to kvctl: snapshots, compaction, backup and restore.

Snapshots and compaction are node-local: each node snapshots its own state machine and
compacts its own log, so kvctl asks every member in turn (``kvctl snapshot create``,
``kvctl compact``) and reports each node's answer. A replicated "snapshot now" entry would
make each node snapshot at the same index, but also again on every replay of the log, and
a node that is down would not be told.

A backup is served by the leader: a ReadIndex barrier (so it holds every write acknowledged
before it began), then the state machine frozen at the applied index and serialized in a
worker thread. The bytes are held here for a while and fetched in chunks (client frames
are limited to 8 MiB).

A restore goes through the log (``keyval.kv``: RESTORE_BEGIN, RESTORE_CHUNK, RESTORE_COMMIT),
so every member, and every node that replays the log later, ends with the same data.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from keyval.ops.admin import AdminOperations, OperationRefused
from keyval.kv import encode_restore_abort, encode_restore_begin, encode_restore_chunk, encode_restore_commit
from keyval.errors import NodeUnavailable
from keyval.runtime.node import Node

log = logging.getLogger("keyval.maintenance")

#: Bytes per backup_chunk answer: well inside the client protocol's 8 MiB frames.
BACKUP_CHUNK = 4 << 20
#: A served backup is dropped this long after its last request (a client that went away).
BACKUP_TTL = 120.0
#: Backups held at once; starting another drops the oldest.
MAX_HELD = 2
#: Bytes per restore chunk: one Raft entry each, so keep them near the append batch size.
RESTORE_CHUNK = 1 << 20
OPERATION_TIMEOUT = 30.0


@dataclass
class _Held:
    data: bytes
    expiry: asyncio.TimerHandle


class Maintenance:
    def __init__(self, node: Node) -> None:
        self.node = node
        self._held: dict[str, _Held] = {}

    def register(self, admin: AdminOperations) -> "Maintenance":
        for op, handler in {
            "snapshot_create": self.snapshot_create, "snapshot_list": self.snapshot_list, "compact": self.compact,
            "backup_begin": self.backup_begin, "backup_chunk": self.backup_chunk, "backup_end": self.backup_end,
            "restore_begin": self.restore_begin, "restore_chunk": self.restore_chunk,
            "restore_commit": self.restore_commit, "restore_abort": self.restore_abort,
        }.items():
            admin.register(op, handler)
        return self

    def close(self) -> None:
        for held in self._held.values():
            held.expiry.cancel()
        self._held.clear()

    # -- snapshots and compaction (node-local) -------------------------------------------
    async def snapshot_create(self, args: dict[str, Any]) -> dict[str, Any]:
        outcome = await self._snapshot(full_compaction=False)
        info = self._snapshot_info(outcome.index)
        return {"node": self.node.id, "index": outcome.index, "term": outcome.term, "taken": outcome.taken,
                "keys": outcome.keys, "size": info.size if info else None, "created": info.created if info else None,
                "seconds": round(outcome.seconds, 3), "first_index": outcome.first_index_after}

    async def compact(self, args: dict[str, Any]) -> dict[str, Any]:
        outcome = await self._snapshot(full_compaction=True)
        return {"node": self.node.id, "snapshot_index": outcome.index, "term": outcome.term, "taken": outcome.taken,
                "first_index_before": outcome.first_index_before, "first_index_after": outcome.first_index_after,
                "last_index": outcome.last_index, "seconds": round(outcome.seconds, 3)}

    async def snapshot_list(self, args: dict[str, Any]) -> dict[str, Any]:
        node = self.node
        status = node.status()
        try:
            snapshots = await asyncio.get_running_loop().run_in_executor(None, node.list_snapshots)
        except OSError as exc:
            raise OperationRefused(f"{node.id} cannot list its snapshots: {exc}") from None
        return {"node": node.id, "role": status.role.value, "term": status.term, "first_index": status.first_index,
                "last_index": status.last_index, "applied_index": status.applied,
                "snapshots": [{"index": s.index, "term": s.term, "size": s.size, "created": s.created}
                              for s in snapshots]}

    async def _snapshot(self, full_compaction: bool):
        try:
            return await self.node.snapshot_now(full_compaction)
        except NodeUnavailable as exc:
            raise OperationRefused(str(exc)) from None
        except Exception as exc:  # disk full, a backend's error: the operator must hear of it
            raise OperationRefused(f"the snapshot on {self.node.id} failed: {type(exc).__name__}: {exc}") from None

    def _snapshot_info(self, index: int):
        try:
            return next((s for s in reversed(self.node.list_snapshots()) if s.index == index), None)
        except OSError:  # the size is a nicety; the snapshot itself was taken
            return None

    # -- backup (leader) -----------------------------------------------------------------
    async def backup_begin(self, args: dict[str, Any]) -> dict[str, Any]:
        node = self.node
        await node.linearizable_barrier(OPERATION_TIMEOUT)
        index = node.applied_index
        term = node.term_at(index) or 0
        created = time.time()
        started = time.monotonic()
        with node.freeze() as frozen:  # as of `index`; serialized in a thread meanwhile
            data, checksum = await asyncio.get_running_loop().run_in_executor(None, _serialize, frozen)
            keys, revision = frozen.items, frozen.revision
        backup_id = uuid.uuid4().hex
        while len(self._held) >= MAX_HELD:
            self._drop(next(iter(self._held)), "replaced by a newer backup")
        self._held[backup_id] = _Held(data, self._expire_later(backup_id))
        log.info("node %s term %d: backup %s at index %d: %d keys, %d bytes serialized in %.2fs",
                 node.id, node.term, backup_id, index, keys, len(data), time.monotonic() - started)
        return {"id": backup_id, "node": node.id, "cluster_id": node.cluster_id, "index": index, "term": term,
                "revision": revision, "keys": keys, "size": len(data), "checksum": checksum, "created": created,
                "chunk_size": BACKUP_CHUNK}

    async def backup_chunk(self, args: dict[str, Any]) -> dict[str, Any]:
        backup_id, offset = args.get("id"), args.get("offset")
        held = self._held.get(backup_id) if isinstance(backup_id, str) else None
        if held is None:
            raise OperationRefused(f"{self.node.id} holds no backup {backup_id!r} (it expired after "
                                   f"{BACKUP_TTL:g}s unused, or was replaced); start the backup again")
        if not isinstance(offset, int) or not 0 <= offset <= len(held.data):
            raise OperationRefused(f"offset must be between 0 and {len(held.data)}")
        held.expiry.cancel()
        held.expiry = self._expire_later(backup_id)
        data = held.data[offset : offset + BACKUP_CHUNK]
        return {"offset": offset, "data": data, "eof": offset + len(data) >= len(held.data)}

    async def backup_end(self, args: dict[str, Any]) -> dict[str, Any]:
        backup_id = args.get("id")
        if isinstance(backup_id, str) and backup_id in self._held:
            self._drop(backup_id, "fetched")
        return {}

    def _expire_later(self, backup_id: str) -> asyncio.TimerHandle:
        return asyncio.get_running_loop().call_later(BACKUP_TTL, self._drop, backup_id, "unused for too long")

    def _drop(self, backup_id: str, why: str) -> None:
        held = self._held.pop(backup_id, None)
        if held is not None:
            held.expiry.cancel()
            log.info("node %s term %d: backup %s dropped (%s)", self.node.id, self.node.term, backup_id, why)

    # -- restore (through the log, on the leader) ------------------------------------------
    async def restore_begin(self, args: dict[str, Any]) -> dict[str, Any]:
        restore_id, size, checksum = _arg(args, "id", str), _arg(args, "size", int), _arg(args, "checksum", str)
        await self._propose(encode_restore_begin(restore_id, size, checksum))
        log.info("node %s term %d: restore %s begins: %d bytes to stage", self.node.id, self.node.term,
                 restore_id, size)
        return {"id": restore_id, "chunk_size": RESTORE_CHUNK}

    async def restore_chunk(self, args: dict[str, Any]) -> dict[str, Any]:
        restore_id, offset, data = _arg(args, "id", str), _arg(args, "offset", int), _arg(args, "data", bytes)
        await self._propose(encode_restore_chunk(restore_id, offset, data))
        return {"staged": offset + len(data)}

    async def restore_commit(self, args: dict[str, Any]) -> dict[str, Any]:
        restore_id = _arg(args, "id", str)
        result = await self._propose(encode_restore_commit(restore_id))
        log.info("node %s term %d: restore %s committed at revision %d", self.node.id, self.node.term,
                 restore_id, result.revision)
        return {"id": restore_id, "revision": result.revision, "keys": self.node.key_count}

    async def restore_abort(self, args: dict[str, Any]) -> dict[str, Any]:
        restore_id = _arg(args, "id", str)
        await self._propose(encode_restore_abort(restore_id))
        log.info("node %s term %d: restore %s aborted", self.node.id, self.node.term, restore_id)
        return {"id": restore_id}

    async def _propose(self, data: bytes):
        result = await self.node.propose(data, OPERATION_TIMEOUT)
        if result is None or not result.ok:
            raise OperationRefused(result.error if result is not None else "the restore command had no result")
        return result


def _serialize(frozen) -> tuple[bytes, str]:
    data = b"".join(frozen.chunks(backup=True))
    return data, hashlib.sha256(data).hexdigest()


def _arg(args: dict[str, Any], name: str, kind: type):
    value = args.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise OperationRefused(f"argument {name!r} must be a {kind.__name__}")
    return value
