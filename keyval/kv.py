"""The key-value state machine: what every node applies, in log order, identically.

Apply is deterministic and total: whatever bytes an entry holds, every node reaches the same
state and the same result (an unknown or malformed command is an error result, never an
exception). Writes carry (client, seq, acked) so a retried write is applied once: the results
of a client's writes are remembered until the client reports (``acked``: every seq below it
was answered) that it will not retry them (the session scheme of the Raft dissertation, §6.3).

Entry data: one format byte, then a msgpack array (see ``encode_command``). Snapshot data:
one format byte, then msgpack of the whole state.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import msgspec
from sortedcontainers import SortedDict

COMMAND_FORMAT = 1
SNAPSHOT_FORMAT = 1
#: Sessions remembered for deduplication; the least recently written are forgotten first.
MAX_SESSIONS = 10_000

# Command layouts (msgpack arrays), by op code:
PUT = 1  # [PUT, key, value, expect_revision (-1: none, 0: must be absent), client, seq, acked]
DELETE = 2  # [DELETE, key, expect_revision, client, seq, acked]
META = 3  # [META, name, value]: cluster metadata (e.g. members' client addresses), no revision


@dataclass(frozen=True, slots=True)
class Limits:
    max_key_bytes: int = 4096
    max_value_bytes: int = 1 << 20


@dataclass(frozen=True, slots=True)
class WriteResult:
    ok: bool
    #: the store's revision after this write (or the current one if it failed)
    revision: int
    #: for a put/delete refused by its condition: the key's current mod revision (0 = absent)
    current_revision: int = 0
    #: delete: whether the key existed
    existed: bool = False
    error: str = ""


@dataclass(frozen=True, slots=True)
class Item:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int


class CommandError(ValueError):
    """A command is invalid; the message is meant for the client."""


def encode_put(key: bytes, value: bytes, *, expect_revision: int = -1, client: str = "", seq: int = 0, acked: int = 0) -> bytes:
    return bytes([COMMAND_FORMAT]) + msgspec.msgpack.encode([PUT, key, value, expect_revision, client, seq, acked])


def encode_delete(key: bytes, *, expect_revision: int = -1, client: str = "", seq: int = 0, acked: int = 0) -> bytes:
    return bytes([COMMAND_FORMAT]) + msgspec.msgpack.encode([DELETE, key, expect_revision, client, seq, acked])


def encode_meta(name: str, value: str) -> bytes:
    return bytes([COMMAND_FORMAT]) + msgspec.msgpack.encode([META, name, value])


def check_limits(key: bytes, value: bytes | None, limits: Limits) -> None:
    if not key:
        raise CommandError("the key must not be empty")
    if len(key) > limits.max_key_bytes:
        raise CommandError(f"key is {len(key)} bytes; the limit is {limits.max_key_bytes}")
    if value is not None and len(value) > limits.max_value_bytes:
        raise CommandError(f"value is {len(value)} bytes; the limit is {limits.max_value_bytes}")


class KVStore:
    def __init__(self, limits: Limits = Limits()) -> None:
        self.limits = limits
        self.revision = 0
        # key -> (value, create_revision, mod_revision)
        self._data: SortedDict = SortedDict()
        # client -> (acked, {seq: result}); insertion order = least recently written first
        self._sessions: dict[str, tuple[int, dict[int, WriteResult]]] = {}
        #: cluster metadata kept beside the data (not visible to get/scan)
        self.meta: dict[str, str] = {}

    # -- reads (local; the node decides whether they are linearizable) ---------------------
    def get(self, key: bytes) -> Item | None:
        found = self._data.get(key)
        if found is None:
            return None
        return Item(key, found[0], found[1], found[2])

    def scan(self, prefix: bytes = b"", limit: int = 0) -> list[Item]:
        out: list[Item] = []
        for key in self._data.irange(minimum=prefix):
            if not key.startswith(prefix):
                break
            value, created, modified = self._data[key]
            out.append(Item(key, value, created, modified))
            if limit and len(out) >= limit:
                break
        return out

    def __len__(self) -> int:
        return len(self._data)

    # -- apply -----------------------------------------------------------------------------
    def apply(self, data: bytes) -> WriteResult | None:
        """Apply one committed entry's data. None for an empty entry (a leader's no-op)."""
        if not data:
            return None
        try:
            if data[0] != COMMAND_FORMAT:
                raise CommandError(f"unknown command format {data[0]}")
            cmd = msgspec.msgpack.decode(data[1:])
            if not isinstance(cmd, list) or not cmd:
                raise CommandError("a command is a non-empty array")
            op = cmd[0]
            if op == META:
                _, name, value = cmd
                if not (isinstance(name, str) and isinstance(value, str)):
                    raise CommandError("metadata name and value must be strings")
                self.meta[name] = value
                return WriteResult(True, self.revision)
            if op == PUT:
                _, key, value, expect, client, seq, acked = cmd
                _check_types(key, value, expect, client, seq, acked)
            elif op == DELETE:
                _, key, expect, client, seq, acked = cmd
                value = None
                _check_types(key, b"", expect, client, seq, acked)
            else:
                raise CommandError(f"unknown command {op!r}")
            check_limits(key, value, self.limits)
        except (CommandError, msgspec.DecodeError, ValueError, TypeError, IndexError, KeyError) as exc:
            return WriteResult(ok=False, revision=self.revision, error=f"invalid command: {exc}")

        session = self._sessions.pop(client, None) if client else None
        if session is not None:
            low, results = session
            if seq in results:
                self._sessions[client] = session
                return results[seq]  # a retry: the same answer, applied once
            if seq < low:
                self._sessions[client] = session
                return WriteResult(False, self.revision, error=f"request {seq} of {client} was already answered")
        result = self._put(key, value, expect) if op == PUT else self._delete(key, expect)
        if client:
            low, results = session if session is not None else (0, {})
            if acked > low:
                low = acked
                results = {s: r for s, r in results.items() if s >= low}
            results[seq] = result
            self._sessions[client] = (low, results)
            if len(self._sessions) > MAX_SESSIONS:
                del self._sessions[next(iter(self._sessions))]
        return result

    def _current(self, key: bytes) -> int:
        found = self._data.get(key)
        return found[2] if found is not None else 0

    def _put(self, key: bytes, value: bytes, expect: int) -> WriteResult:
        current = self._current(key)
        if expect >= 0 and expect != current:
            return WriteResult(False, self.revision, current_revision=current, error="revision mismatch")
        self.revision += 1
        found = self._data.get(key)
        created = found[1] if found is not None else self.revision
        self._data[key] = (value, created, self.revision)
        return WriteResult(True, self.revision, existed=found is not None)

    def _delete(self, key: bytes, expect: int) -> WriteResult:
        current = self._current(key)
        if expect >= 0 and expect != current:
            return WriteResult(False, self.revision, current_revision=current, error="revision mismatch")
        if current == 0:
            return WriteResult(True, self.revision, existed=False)
        self.revision += 1
        del self._data[key]
        return WriteResult(True, self.revision, existed=True)

    # -- snapshots -------------------------------------------------------------------------
    def snapshot_chunks(self, batch: int = 10_000) -> Iterator[bytes]:
        """The whole state as a stream of bytes (format byte, header, then item batches)."""
        sessions = [
            [c, low, [[s, r.ok, r.revision, r.current_revision, r.existed, r.error] for s, r in results.items()]]
            for c, (low, results) in self._sessions.items()
        ]
        header = {"revision": self.revision, "items": len(self._data), "sessions": sessions, "meta": self.meta}
        yield bytes([SNAPSHOT_FORMAT]) + _frame(msgspec.msgpack.encode(header))
        items = []
        for key, (value, created, modified) in self._data.items():
            items.append((key, value, created, modified))
            if len(items) >= batch:
                yield _frame(msgspec.msgpack.encode(items))
                items = []
        if items:
            yield _frame(msgspec.msgpack.encode(items))

    def snapshot(self) -> bytes:
        return b"".join(self.snapshot_chunks())

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a snapshot's. Raises ValueError on bad data and then
        leaves the current state untouched."""
        if not data:
            fresh = KVStore(self.limits)
            self.revision, self._data, self._sessions, self.meta = fresh.revision, fresh._data, fresh._sessions, {}
            return
        if data[0] != SNAPSHOT_FORMAT:
            raise ValueError(f"unknown snapshot format {data[0]}")
        view = memoryview(data)[1:]
        try:
            frames = list(_unframe(view))
            header = msgspec.msgpack.decode(frames[0])
            new_data = SortedDict()
            for frame in frames[1:]:
                for key, value, created, modified in msgspec.msgpack.decode(frame):
                    new_data[key] = (value, created, modified)
            if len(new_data) != header["items"]:
                raise ValueError(f"snapshot holds {len(new_data)} items, header says {header['items']}")
            sessions = {
                c: (low, {s: WriteResult(ok, rev, cur, ex, err) for s, ok, rev, cur, ex, err in results})
                for c, low, results in header["sessions"]
            }
            meta = dict(header.get("meta", {}))
        except (msgspec.DecodeError, KeyError, TypeError, IndexError) as exc:
            raise ValueError(f"malformed snapshot: {exc}") from exc
        self.revision, self._data, self._sessions, self.meta = header["revision"], new_data, sessions, meta


def _check_types(key, value, expect, client, seq, acked) -> None:
    if not (isinstance(key, bytes) and isinstance(value, bytes) and isinstance(client, str)):
        raise CommandError("key and value must be bytes, client a string")
    if not all(isinstance(n, int) for n in (expect, seq, acked)) or expect < -1 or seq < 0 or acked < 0:
        raise CommandError("expect_revision, seq and acked must be integers")


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
