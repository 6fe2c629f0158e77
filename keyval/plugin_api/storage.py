"""What a storage backend provides: the contract every storage plugin implements.

The Raft core reads the log through the narrow read-only view ``keyval.raft.storage.LogStorage``
(``initial_state``, ``first_index``, ``last_index``, ``term``, ``entries``, ``snapshot_meta``,
``config_indexes``, ``snapshot_chunk``, ``durable_watermark``, with the named errors
``Compacted``, ``Unavailable``, ``SnapshotUnavailable``). The node runtime adds the writes
below, following each ``Ready``: persist (snapshot, entries, hard state, then ``sync``),
send, apply, advance.

Opening one is the plugin's factory, ``factory(data_dir, options)`` (``keyval.plugin_api.backends``):
``data_dir`` is None for a backend that keeps nothing on disk. Opening recovers from a crash
— a process killed or the power lost — by cutting a torn tail (unsynced writes, which may
or may not have reached the disk). Damage to data that was synced, and so may have been
acknowledged (a bad block, a flipped bit), is never read back as data: either opening
raises ``keyval.errors.CorruptLog(path, offset, reason)`` (the node refuses to start and
says where), or the log is cut before the damage and ``durable_watermark()`` stays above
``last_index()`` (the node re-fetches the lost entries from its leader). Every failure a
storage reports on purpose is a ``StorageError`` (the one class, ``keyval.errors.StorageError``).

Snapshot data is the state machine's own bytes (backend-independent, so nodes with different
backends can send each other snapshots); a backend may compress it on disk.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Protocol, Sequence

from keyval.raft.storage import LogStorage
from keyval.raft.types import Entry, HardState, Membership, Snapshot, SnapshotMeta


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    index: int
    term: int
    #: bytes on disk (compressed where the backend compresses)
    size: int
    #: creation time, seconds since the epoch
    created: float


class Storage(LogStorage, Protocol):
    """The whole storage contract: the core's read view (``LogStorage``: ``initial_state``,
    ``first_index``, ``last_index``, ``term``, ``entries``, ``snapshot_meta``,
    ``config_indexes``, ``snapshot_chunk``, ``durable_watermark``) and the writes below, 18
    members in all. ``keyval serve`` checks every member before it serves;
    ``keyval.testing.storage_conformance`` checks every promise.

    Threads: the event loop thread appends, sets the hard state, reads and compacts; the
    node's sync thread runs ``sync`` (the loop reads and compacts meanwhile, but waits for
    it before its next append); an executor thread runs ``create_snapshot`` at any moment,
    beside all of those, and ``apply_snapshot`` while the loop waits. A backend serialises
    what must not interleave (a lock around each call is the simple way).

    A write failing for want of space or descriptors (``OSError`` ENOSPC, EDQUOT, EMFILE,
    ENFILE, or a ``StorageError`` raised from one) is retried: the runtime makes the same
    calls again until they succeed. Such a failure leaves the backend as before the call or
    as after it — nothing half-written that reads back as data.
    """

    def append(self, entries: Sequence[Entry]) -> None:
        """Append contiguous ``entries``, first discarding every held entry at or after
        ``entries[0].index`` (a conflicting suffix, possibly spanning segments).

        Readable at once; durable only after the next ``sync()`` returns. Requires
        ``first_index() <= entries[0].index <= last_index() + 1`` (entries at or below the
        snapshot index are skipped). Raises ValueError on a gap.
        """

    def set_hard_state(self, hard_state: HardState) -> None:
        """Record term, vote and commit.

        If term or vote changed, both are durable together when this returns (an atomic
        replace: a crash leaves the old pair or the new pair, never a mix). Commit may become
        durable lazily: a stale commit index is safe, it is learned again from the leader.
        """

    def sync(self) -> None:
        """Make everything appended so far durable: one fsync for many appends (group commit).

        An entry is reported durable — and may be acknowledged — only after this returns.
        """

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """Install a snapshot received from the leader; durable when this returns.

        The log is replaced by it: entries up to its index are discarded; a held suffix
        whose entry at the snapshot index has the snapshot's term may be kept.

        A snapshot not newer than the newest held (its index at or below that one's) is
        ignored: nothing changes — the log, the snapshots, the compaction point. (A leader's
        snapshot can arrive after this node has passed it; installing it would roll back.)
        """

    def create_snapshot(self, index: int, membership: Membership, data: bytes | Iterable[bytes]) -> SnapshotMeta:
        """Save a snapshot of the state machine as of applied ``index`` (which must be held:
        else ``Compacted``, ``Unavailable`` or ``ValueError``); durable when this returns.
        Older snapshots beyond the backend's retention are deleted. Does not compact the log:
        call ``compact`` for that. Returns the new snapshot's ``SnapshotMeta``.

        Below the newest snapshot's index it raises ``ValueError`` and changes nothing: an
        older state must never become the newest (a restart from it would apply entries
        twice). At the newest snapshot's index, the same state again, it may keep either copy.
        """

    def load_snapshot(self) -> Snapshot | None:
        """The newest snapshot that passes its checksum, or None. A corrupt one is skipped
        (and logged), never loaded."""

    def list_snapshots(self) -> list[SnapshotInfo]:
        """Snapshots held, oldest first."""

    def compact(self, index: int) -> None:
        """Allow entries up to ``index`` to be discarded; ``index`` must not exceed the newest
        snapshot's. A backend may keep some (e.g. until a whole segment can go); the read
        view then still reports ``first_index() > index`` consistently."""

    def close(self) -> None:
        """Sync and release files. The object is unusable afterwards."""
