"""The core's view of the log: what storage holds, plus an unstable tail not yet persisted.

Indexes: ``first_index()..last_index()`` are readable; the entry at ``first_index() - 1`` is
represented by the snapshot (its term is still known).

Invariants:
  applied <= committed <= last_index()
  every entry at or below ``committed`` is never truncated (a violation raises).
"""
from __future__ import annotations

from .storage import Compacted, LogStorage, Unavailable, limit_size
from .types import Entry, Snapshot


class InvariantViolation(AssertionError):
    """The core reached a state Raft forbids: a bug, never bad input."""


class RaftLog:
    def __init__(self, storage: LogStorage, applied: int = 0) -> None:
        self.storage = storage
        hard_state, snap = storage.initial_state()
        #: entries not yet persisted; unstable[0].index == unstable_offset
        self.unstable: list[Entry] = []
        self.unstable_offset = storage.last_index() + 1
        #: a snapshot received from the leader, not yet persisted
        self.pending_snapshot: Snapshot | None = None
        self.committed = max(hard_state.commit, snap.index)
        self.applied = max(snap.index, min(applied, self.committed))

    # -- reading --------------------------------------------------------------------------
    def first_index(self) -> int:
        if self.pending_snapshot is not None:
            return self.pending_snapshot.meta.index + 1
        return self.storage.first_index()

    def last_index(self) -> int:
        if self.unstable:
            return self.unstable[-1].index
        if self.pending_snapshot is not None:
            return self.pending_snapshot.meta.index
        return self.storage.last_index()

    def persisted_index(self) -> int:
        """The last index known durable: everything before the unstable tail."""
        return self.unstable_offset - 1 if self.unstable else self.last_index()

    def last_term(self) -> int:
        return self.term(self.last_index())

    def term(self, index: int) -> int:
        """Raises Compacted or Unavailable, like storage."""
        if self.unstable and index >= self.unstable_offset:
            if index > self.unstable[-1].index:
                raise Unavailable(index)
            return self.unstable[index - self.unstable_offset].term
        snap = self.pending_snapshot
        if snap is not None:
            if index == snap.meta.index:
                return snap.meta.term
            if index < snap.meta.index:
                raise Compacted(index)
            raise Unavailable(index)
        return self.storage.term(index)

    def term_or_none(self, index: int) -> int | None:
        try:
            return self.term(index)
        except (Compacted, Unavailable):
            return None

    def match_term(self, index: int, term: int) -> bool:
        return self.term_or_none(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Is a log ending at (last_index, last_term) at least as up to date as ours? (§5.4.1)"""
        my_term = self.last_term()
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index())

    def slice(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries [lo, hi), cut to max_bytes (at least one). Raises Compacted below first index."""
        if lo >= hi:
            return []
        if lo < self.first_index():
            raise Compacted(lo)
        if hi > self.last_index() + 1:
            raise Unavailable(hi)
        out: list[Entry] = []
        if lo < self.unstable_offset:
            out = self.storage.entries(lo, min(hi, self.unstable_offset), max_bytes)
            if len(out) < min(hi, self.unstable_offset) - lo:
                return out  # cut by size
        if hi > self.unstable_offset:
            start = max(lo, self.unstable_offset) - self.unstable_offset
            out = out + self.unstable[start : hi - self.unstable_offset]
        return limit_size(out, max_bytes)

    def find_conflict_by_term(self, index: int, term: int) -> int:
        """The last index <= ``index`` whose term is <= ``term`` (fast backtracking hint)."""
        while index > 0:
            t = self.term_or_none(index)
            if t is None or t <= term:
                return index
            index -= 1
        return 0

    # -- writing --------------------------------------------------------------------------
    def append(self, entries: list[Entry] | tuple[Entry, ...]) -> None:
        """Append after truncating anything at or beyond entries[0].index."""
        if not entries:
            return
        after = entries[0].index
        if after <= self.committed:
            raise InvariantViolation(f"truncating committed entry {after} (committed {self.committed})")
        if after == self.unstable_offset + len(self.unstable):
            self.unstable.extend(entries)
        elif after <= self.unstable_offset:
            # The replaced entries may be in storage already; the next Ready makes storage
            # truncate them (its append truncates from entries[0].index).
            self.unstable_offset = after
            self.unstable = list(entries)
        else:
            del self.unstable[after - self.unstable_offset :]
            self.unstable.extend(entries)

    def maybe_append(
        self, prev_index: int, prev_term: int, commit: int, entries: tuple[Entry, ...]
    ) -> tuple[int, int] | None:
        """AppendEntries on a follower. Returns (last new index, first appended index or 0),
        or None when the log does not contain (prev_index, prev_term)."""
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        conflict = 0
        for entry in entries:
            if not self.match_term(entry.index, entry.term):
                conflict = entry.index
                break
        if conflict:
            if conflict <= self.committed:
                raise InvariantViolation(f"conflict at committed index {conflict}")
            self.append(entries[conflict - prev_index - 1 :])
        self.commit_to(min(commit, last_new))
        return last_new, conflict

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            if index > self.last_index():
                raise InvariantViolation(f"commit {index} beyond last index {self.last_index()}")
            self.committed = index

    def maybe_commit(self, index: int, term: int) -> bool:
        """Advance commit to ``index`` only if that entry is from ``term`` (§5.4.2)."""
        if index > self.committed and self.term_or_none(index) == term:
            self.commit_to(index)
            return True
        return False

    def restore(self, snapshot: Snapshot) -> None:
        self.committed = snapshot.meta.index
        self.pending_snapshot = snapshot
        self.unstable = []
        self.unstable_offset = snapshot.meta.index + 1

    # -- handing out work ------------------------------------------------------------------
    def next_committed_entries(self, max_bytes: int | None) -> list[Entry]:
        if self.pending_snapshot is not None:
            return []  # the snapshot must be applied first
        lo = max(self.applied + 1, self.first_index())
        if lo > self.committed:
            return []
        return self.slice(lo, self.committed + 1, max_bytes)

    def has_next_committed_entries(self) -> bool:
        return self.pending_snapshot is None and self.committed > self.applied

    def stable_to(self, index: int, term: int) -> None:
        if not self.unstable or index < self.unstable_offset:
            return
        if self.term_or_none(index) != term:
            return  # replaced meanwhile by a newer leader's entries
        del self.unstable[: index + 1 - self.unstable_offset]
        self.unstable_offset = index + 1

    def stable_snapshot_to(self, index: int) -> None:
        if self.pending_snapshot is not None and self.pending_snapshot.meta.index == index:
            self.pending_snapshot = None

    def applied_to(self, index: int) -> None:
        if index > self.committed or index < self.applied:
            raise InvariantViolation(f"applied {index} outside [{self.applied}, {self.committed}]")
        self.applied = index
