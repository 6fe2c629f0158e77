"""The KV state machine's snapshot bytes: writing them from a frozen point in time, reading them.

Layout: one format byte (``SNAPSHOT_FORMAT``), then length-prefixed msgpack frames — a header
(revision, item count, sessions, metadata, and a staged restore if one is in progress), then
batches of ``(key, value, create_revision, mod_revision)`` in key order.

``FrozenState`` lets the bytes be produced in a worker thread while the event loop keeps
applying: freezing copies only what is small (revision, sessions, metadata) and the sorted key
list; the store then records the value each frozen key had before its first change
(``remember``), so the worker reads every key as of the freeze without a copy of the data.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

import msgspec
from sortedcontainers import SortedDict

if TYPE_CHECKING:
    from keyval.kv.store import KVStore

SNAPSHOT_FORMAT = 1
_MISSING = object()


@dataclass(slots=True)
class DecodedSnapshot:
    revision: int
    data: SortedDict
    #: client -> [low, [[seq, ok, revision, current_revision, existed, error], ...]]
    sessions: list
    meta: dict[str, str]
    #: a restore being uploaded: [id, size, checksum, bytes so far] (see keyval.kv.restore)
    staged: list | None
    last_restore: str


class FrozenState:
    """A KVStore as of one moment, to serialize while the store moves on.

    Use as a context manager on the thread that applies: entering starts the store's record
    of first changes, leaving stops it. ``chunks()`` may run on any thread in between.
    """

    def __init__(self, kv: KVStore) -> None:
        self._kv = kv
        self._data = kv._data
        self._keys = list(kv._data)  # sorted; C-level, ~25 ms per million keys
        self._before: dict[bytes, Any] = {}
        self.revision = kv.revision
        self.items = len(self._keys)
        self._sessions = [
            [c, low, [[s, r.ok, r.revision, r.current_revision, r.existed, r.error] for s, r in results.items()]]
            for c, (low, results) in kv._sessions.items()
        ]
        self._meta = dict(kv.meta)
        self._staged = None if kv._staged is None else kv._staged.to_snapshot()
        self._last_restore = kv.last_restore
        #: what revision 0 stands for in the data (keys as the last restore left them)
        self._restored_at = kv.restored_at

    def __enter__(self) -> "FrozenState":
        self._kv._frozen = (*self._kv._frozen, self)
        return self

    def __exit__(self, *exc) -> None:
        self._kv._frozen = tuple(f for f in self._kv._frozen if f is not self)

    def remember(self, data: SortedDict, key: bytes, found) -> None:
        """Called by the store before it changes ``key`` in ``data`` (``found``: the value
        before, None if absent). Only the first change counts; a replaced dict is not ours."""
        if data is self._data and key not in self._before:
            self._before[key] = found

    def _value(self, key: bytes):
        # Read the live value first, then the record: the store writes the record before the
        # value, so either the record is seen or the value read was still the frozen one.
        live = dict.get(self._data, key)
        before = self._before.get(key, _MISSING)
        return live if before is _MISSING else before

    def chunks(self, batch: int = 10_000, *, backup: bool = False) -> Iterator[bytes]:
        """The snapshot bytes. ``backup``: just the data (no sessions, no staged restore)."""
        header: dict[str, Any] = {"revision": self.revision, "items": self.items,
                                  "sessions": [] if backup else self._sessions, "meta": self._meta}
        if not backup:
            # Only when present, so a store that never restored writes the bytes it always did.
            if self._staged is not None:
                header["staged"] = self._staged
            if self._last_restore:
                header["last_restore"] = self._last_restore
        yield bytes([SNAPSHOT_FORMAT]) + _frame(msgspec.msgpack.encode(header))
        items = []
        restored_at = self._restored_at
        for key in self._keys:
            value, created, modified = self._value(key)
            items.append((key, value, created or restored_at, modified or restored_at))
            if len(items) >= batch:
                yield _frame(msgspec.msgpack.encode(items))
                items = []
        if items:
            yield _frame(msgspec.msgpack.encode(items))


def decode_snapshot(data: bytes) -> DecodedSnapshot:
    """Parse snapshot bytes completely. Raises ValueError for anything malformed."""
    if not data:
        raise ValueError("empty snapshot")
    if data[0] != SNAPSHOT_FORMAT:
        raise ValueError(f"unknown snapshot format {data[0]}")
    try:
        frames = list(_unframe(memoryview(data)[1:]))
        if not frames:
            raise ValueError("snapshot has no header")
        header = msgspec.msgpack.decode(frames[0])
        new_data = SortedDict()
        for frame in frames[1:]:
            for key, value, created, modified in msgspec.msgpack.decode(frame):
                if not (isinstance(key, bytes) and isinstance(value, bytes)):
                    raise ValueError("snapshot item key and value must be bytes")
                new_data[key] = (value, created, modified)
        if len(new_data) != header["items"]:
            raise ValueError(f"snapshot holds {len(new_data)} items, header says {header['items']}")
        staged = header.get("staged")
        if staged is not None and not (isinstance(staged, list) and len(staged) == 4):
            raise ValueError("malformed staged restore")
        revision = header["revision"]
        if not isinstance(revision, int):
            raise ValueError("snapshot revision must be an integer")
        return DecodedSnapshot(revision, new_data, header["sessions"], dict(header.get("meta", {})),
                               staged, str(header.get("last_restore", "")))
    except (msgspec.DecodeError, KeyError, TypeError, IndexError, RecursionError) as exc:
        # RecursionError: msgpack arrays nested deeper than the interpreter's recursion limit
        raise ValueError(f"malformed snapshot: {exc}") from exc


def _frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


def _unframe(view: memoryview) -> Iterator[memoryview]:
    pos = 0
    while pos < len(view):
        if pos + 4 > len(view):
            raise ValueError("truncated snapshot frame header")
        size = int.from_bytes(view[pos : pos + 4], "big")
        if pos + 4 + size > len(view):
            raise ValueError("truncated snapshot frame")
        yield view[pos + 4 : pos + 4 + size]
        pos += 4 + size
