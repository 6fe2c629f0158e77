"""The key-value state machine: what every node applies, in log order, identically.

Apply is deterministic and total: whatever bytes an entry holds, every node reaches the same
state and the same result (an unknown or malformed command is an error result, never an
exception). Writes carry (client, seq, acked) so a retried write is applied once: the results
of a client's writes are remembered until the client reports (``acked``: every seq below it
was answered) that it will not retry them (the session scheme of the Raft dissertation, §6.3).

A restore replaces the data through the log itself, so every member — followers, learners,
a node replaying its log after a restart — ends with exactly the same state: RESTORE_BEGIN
stages an upload beside the live data (dropping any earlier, abandoned one), RESTORE_CHUNKs
fill it in order, RESTORE_COMMIT checks it (``keyval.kv.restore``) and swaps it in as one
write. The staged bytes are part of the state (and of snapshots), so a node that installs a
snapshot taken mid-upload can still commit it.

Entry data: one format byte, then a msgpack array (see the ``encode_*`` functions). Snapshot
data: see ``keyval.kv.snapshot``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import msgspec
from sortedcontainers import SortedDict

from keyval.kv.restore import StagedRestore
from keyval.kv.snapshot import FrozenState, decode_snapshot

COMMAND_FORMAT = 1
#: Sessions remembered for deduplication; the least recently written are forgotten first.
MAX_SESSIONS = 10_000

# Command layouts (msgpack arrays), by op code:
PUT = 1  # [PUT, key, value, expect_revision (-1: none, 0: must be absent), client, seq, acked]
DELETE = 2  # [DELETE, key, expect_revision, client, seq, acked]
META = 3  # [META, name, value]: cluster metadata (e.g. members' client addresses), no revision
RESTORE_BEGIN = 4  # [RESTORE_BEGIN, id, size, sha256 hex]: stage a restore (dropping any other)
RESTORE_CHUNK = 5  # [RESTORE_CHUNK, id, offset, bytes]: the staged restore's bytes, in order
RESTORE_COMMIT = 6  # [RESTORE_COMMIT, id]: verify the staged bytes and make them the data
RESTORE_ABORT = 7  # [RESTORE_ABORT, id]: drop the staged restore
RESTORE_OPS = (RESTORE_BEGIN, RESTORE_CHUNK, RESTORE_COMMIT, RESTORE_ABORT)


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


def encode_restore_begin(restore_id: str, size: int, checksum: str) -> bytes:
    return bytes([COMMAND_FORMAT]) + msgspec.msgpack.encode([RESTORE_BEGIN, restore_id, size, checksum])


def encode_restore_chunk(restore_id: str, offset: int, data: bytes) -> bytes:
    return bytes([COMMAND_FORMAT]) + msgspec.msgpack.encode([RESTORE_CHUNK, restore_id, offset, data])


def encode_restore_commit(restore_id: str) -> bytes:
    return bytes([COMMAND_FORMAT]) + msgspec.msgpack.encode([RESTORE_COMMIT, restore_id])


def encode_restore_abort(restore_id: str) -> bytes:
    return bytes([COMMAND_FORMAT]) + msgspec.msgpack.encode([RESTORE_ABORT, restore_id])


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
        #: the restore being uploaded, if any
        self._staged: StagedRestore | None = None
        #: id of the last committed restore, so a retried commit is answered, not refused
        self.last_restore = ""
        #: the revision of the last restore: a key the restore wrote and nothing changed
        #: since holds 0 for its revisions, standing for this (so the commit is O(1))
        self.restored_at = 0
        #: frozen views being serialized; each learns a key's value before its first change
        self._frozen: tuple[FrozenState, ...] = ()

    # -- reads (local; the node decides whether they are linearizable) ---------------------
    def get(self, key: bytes) -> Item | None:
        found = self._data.get(key)
        if found is None:
            return None
        return Item(key, found[0], found[1] or self.restored_at, found[2] or self.restored_at)

    def scan(self, prefix: bytes = b"", limit: int = 0) -> list[Item]:
        out: list[Item] = []
        for key in self._data.irange(minimum=prefix):
            if not key.startswith(prefix):
                break
            value, created, modified = self._data[key]
            out.append(Item(key, value, created or self.restored_at, modified or self.restored_at))
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
            if op in RESTORE_OPS:
                return self._restore_command(op, cmd[1:])
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
        return (found[2] or self.restored_at) if found is not None else 0

    def _put(self, key: bytes, value: bytes, expect: int) -> WriteResult:
        current = self._current(key)
        if expect >= 0 and expect != current:
            return WriteResult(False, self.revision, current_revision=current, error="revision mismatch")
        found = self._data.get(key)
        for frozen in self._frozen:
            frozen.remember(self._data, key, found)
        self.revision += 1
        created = (found[1] or self.restored_at) if found is not None else self.revision
        self._data[key] = (value, created, self.revision)
        return WriteResult(True, self.revision, existed=found is not None)

    def _delete(self, key: bytes, expect: int) -> WriteResult:
        current = self._current(key)
        if expect >= 0 and expect != current:
            return WriteResult(False, self.revision, current_revision=current, error="revision mismatch")
        if current == 0:
            return WriteResult(True, self.revision, existed=False)
        for frozen in self._frozen:
            frozen.remember(self._data, key, self._data[key])
        self.revision += 1
        del self._data[key]
        return WriteResult(True, self.revision, existed=True)

    # -- staged restore --------------------------------------------------------------------
    def _restore_command(self, op: int, args: list) -> WriteResult:
        """Every outcome depends only on the state and the command: each node agrees."""
        restore_id = args[0]
        if not isinstance(restore_id, str) or not restore_id:
            raise CommandError("a restore id is a non-empty string")
        staged = self._staged
        if op == RESTORE_BEGIN:
            _, size, checksum = args
            if not (isinstance(size, int) and size > 0 and isinstance(checksum, str) and len(checksum) == 64):
                raise CommandError("restore size must be positive and the checksum a sha256 hex digest")
            if staged is None or staged.id != restore_id:  # a retried BEGIN keeps what is staged
                self._staged = StagedRestore(restore_id, size, checksum)
            return self._ok()
        if op == RESTORE_COMMIT and restore_id == self.last_restore and (staged is None or staged.id != restore_id):
            return self._ok()  # a retried commit
        if staged is None or staged.id != restore_id:
            return self._refused(f"no restore {restore_id} is staged (it was committed, aborted or replaced by another)")
        if op == RESTORE_ABORT:
            self._staged = None
            return self._ok()
        if op == RESTORE_CHUNK:
            return self._stage(staged, *args[1:])
        self._staged = None  # committed or refused, the staging is used up
        problem = staged.problem()
        if problem:
            return self._refused(f"restore {restore_id} not committed, nothing changed: {problem}")
        # One write at a new revision: every restored key gets it (as 0, see restored_at), so
        # no revision a client saw before the restore matches a key afterwards.
        self.revision += 1
        self.restored_at = self.revision
        self._data = staged.items
        self.last_restore = restore_id
        return self._ok()

    def _stage(self, staged: StagedRestore, offset, chunk) -> WriteResult:
        if not (isinstance(offset, int) and isinstance(chunk, bytes) and offset >= 0):
            raise CommandError("a restore chunk is an offset and bytes")
        have = len(staged.raw)
        if offset < have:  # a retried chunk: fine if it is the same bytes
            if offset + len(chunk) <= have and staged.raw[offset : offset + len(chunk)] == chunk:
                return self._ok()
            return self._refused(f"restore chunk at {offset} overlaps different staged bytes")
        if offset > have:
            return self._refused(f"restore chunk at {offset}, but {have} bytes are staged")
        if have + len(chunk) > staged.size:
            return self._refused(f"restore chunk goes past the announced size of {staged.size} bytes")
        staged.feed(chunk)
        return self._ok()

    def staged_restore(self) -> tuple[str, int, int] | None:
        """(id, bytes staged, size) of the restore being uploaded, if any."""
        staged = self._staged
        return None if staged is None else (staged.id, len(staged.raw), staged.size)

    def _ok(self) -> WriteResult:
        return WriteResult(True, self.revision)

    def _refused(self, why: str) -> WriteResult:
        return WriteResult(False, self.revision, error=why)

    # -- snapshots -------------------------------------------------------------------------
    def freeze(self) -> FrozenState:
        """A point-in-time view to serialize on another thread: ``with kv.freeze() as f:``
        on the applying thread, ``f.chunks()`` anywhere until the block ends."""
        return FrozenState(self)

    def snapshot_chunks(self, batch: int = 10_000) -> Iterator[bytes]:
        """The whole state as a stream of bytes (format byte, header, then item batches)."""
        with self.freeze() as frozen:
            yield from frozen.chunks(batch)

    def snapshot(self) -> bytes:
        return b"".join(self.snapshot_chunks())

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a snapshot's. Raises ValueError on bad data and then
        leaves the current state untouched."""
        if not data:
            fresh = KVStore(self.limits)
            self.revision, self._data, self._sessions, self.meta = fresh.revision, fresh._data, fresh._sessions, {}
            self._staged, self.last_restore, self.restored_at = None, "", 0
            return
        decoded = decode_snapshot(data)
        try:
            sessions = {
                c: (low, {s: WriteResult(ok, rev, cur, ex, err) for s, ok, rev, cur, ex, err in results})
                for c, low, results in decoded.sessions
            }
        except (TypeError, ValueError) as exc:
            raise ValueError(f"malformed snapshot sessions: {exc}") from exc
        try:
            staged = None if decoded.staged is None else StagedRestore.from_snapshot(decoded.staged)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"malformed staged restore in snapshot: {exc}") from exc
        self.revision, self._data, self._sessions, self.meta = decoded.revision, decoded.data, sessions, decoded.meta
        # Snapshots hold real revisions (a 0 is written as what it stands for).
        self._staged, self.last_restore, self.restored_at = staged, decoded.last_restore, 0


def _check_types(key, value, expect, client, seq, acked) -> None:
    # Every node runs this for every write: plain type() tests, no generator.
    if not (type(key) is bytes and type(value) is bytes and type(client) is str):
        raise CommandError("key and value must be bytes, client a string")
    if not (type(expect) is int and type(seq) is int and type(acked) is int) or expect < -1 or seq < 0 or acked < 0:
        raise CommandError("expect_revision, seq and acked must be integers")

