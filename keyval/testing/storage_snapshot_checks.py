"""Conformance checks for snapshots: create, load, list, chunks, compaction, apply."""
from __future__ import annotations

import os
import time

import pytest

from keyval.raft.storage import Compacted, SnapshotUnavailable, Unavailable
from keyval.raft.types import Snapshot, SnapshotMeta
from keyval.testing.storage_common import BAD_INDEX, MEMBERS, OTHER_MEMBERS, chunks_of, run


class SnapshotChecks:
    """Uses the ``store`` fixture and ``snapshot_retention`` of ``StorageConformance``."""

    # == snapshots =======================================================================
    def test_create_snapshot_round_trips(self, store):
        store.append(run(1, 10) + run(11, 20, term=2))
        data = os.urandom(5000) + b"z" * 50_000
        before = time.time()
        meta = store.create_snapshot(15, MEMBERS, chunks_of(data))
        assert meta == SnapshotMeta(15, 2, MEMBERS)
        assert store.snapshot_meta() == meta
        assert store.load_snapshot() == Snapshot(meta, data)
        [info] = store.list_snapshots()
        assert (info.index, info.term) == (15, 2)
        assert info.size > 0
        assert before - 1 <= info.created <= time.time() + 1
        # It does not compact: the log is untouched.
        assert (store.first_index(), store.last_index()) == (1, 20)
        assert store.entries(1, 21) == run(1, 10) + run(11, 20, term=2)

    def test_create_snapshot_takes_bytes_or_chunks(self, store):
        store.append(run(1, 5))
        store.create_snapshot(3, MEMBERS, b"as bytes")
        assert store.load_snapshot().data == b"as bytes"
        store.create_snapshot(4, MEMBERS, iter([b"as ", b"", b"chunks"]))
        assert store.load_snapshot() == Snapshot(SnapshotMeta(4, 1, MEMBERS), b"as chunks")
        store.create_snapshot(5, OTHER_MEMBERS, [])
        assert store.load_snapshot() == Snapshot(SnapshotMeta(5, 1, OTHER_MEMBERS), b"")

    def test_snapshot_chunks_read_the_newest_snapshot(self, store):
        store.append(run(1, 20))
        data = bytes(range(256)) * 40
        store.create_snapshot(12, MEMBERS, data)
        assert store.snapshot_chunk(12, 0, 100) == data[:100]
        assert store.snapshot_chunk(12, 5000, 1000) == data[5000:6000]
        assert store.snapshot_chunk(12, len(data) - 10, 1000) == data[-10:]
        assert store.snapshot_chunk(12, len(data), 1000) == b""
        assert b"".join(store.snapshot_chunk(12, off, 777) for off in range(0, len(data), 777)) == data

    def test_snapshot_chunk_of_a_replaced_snapshot_is_unavailable(self, store):
        with pytest.raises(SnapshotUnavailable):
            store.snapshot_chunk(5, 0, 10)
        store.append(run(1, 20))
        store.create_snapshot(10, MEMBERS, b"ten")
        store.create_snapshot(15, MEMBERS, b"fifteen")
        with pytest.raises(SnapshotUnavailable):
            store.snapshot_chunk(10, 0, 10)
        assert store.snapshot_chunk(15, 0, 100) == b"fifteen"

    def test_snapshots_are_listed_oldest_first_and_pruned(self, store):
        store.append(run(1, 50))
        for index in (10, 20, 30, 40, 50):
            store.create_snapshot(index, MEMBERS, f"state at {index}".encode())
        listed = [(i.index, i.term) for i in store.list_snapshots()]
        assert listed == sorted(listed) and listed[-1] == (50, 1)
        if self.snapshot_retention is not None:
            assert listed == [(i, 1) for i in (10, 20, 30, 40, 50)][-self.snapshot_retention :]
        assert store.load_snapshot().data == b"state at 50"

    def test_create_snapshot_needs_a_held_index(self, store):
        store.append(run(1, 10))
        with pytest.raises(BAD_INDEX):
            store.create_snapshot(11, MEMBERS, b"from the future")
        assert store.snapshot_meta() == SnapshotMeta() and store.list_snapshots() == []
        store.create_snapshot(8, MEMBERS, b"eight")
        store.compact(8)
        with pytest.raises(BAD_INDEX):
            store.create_snapshot(3, MEMBERS, b"compacted away")
        assert store.snapshot_meta().index == 8
        assert store.load_snapshot().data == b"eight"

    def test_create_snapshot_below_the_newest_is_refused(self, store):
        # A snapshot of an older state must never become the newest: a node restarting from
        # it would apply entries it had already applied. The runtime never asks; a caller
        # that does gets ValueError and nothing changes.
        store.append(run(1, 30))
        newest = store.create_snapshot(20, MEMBERS, b"state at 20")
        with pytest.raises(ValueError):
            store.create_snapshot(10, OTHER_MEMBERS, b"state at 10")
        assert store.snapshot_meta() == newest
        assert store.load_snapshot() == Snapshot(newest, b"state at 20")
        assert [(i.index, i.term) for i in store.list_snapshots()][-1] == (20, 1)
        assert store.snapshot_chunk(20, 0, 100) == b"state at 20"
        # At the newest index itself: the same state again, so either copy will do.
        again = store.create_snapshot(20, MEMBERS, b"state at 20")
        assert again == newest and store.load_snapshot() == Snapshot(newest, b"state at 20")

    def test_apply_snapshot_not_newer_than_the_newest_changes_nothing(self, store):
        # A leader's snapshot that arrives late (ours is already past it) is ignored: the
        # log, the snapshots and the compaction point stay as they are.
        store.append(run(1, 30))
        newest = store.create_snapshot(20, MEMBERS, b"state at 20")
        store.compact(15)
        before = (store.first_index(), store.last_index(), store.snapshot_meta(), store.list_snapshots(),
                  store.config_indexes())
        for stale in (Snapshot(SnapshotMeta(10, 1, OTHER_MEMBERS), b"state at 10"),
                      Snapshot(SnapshotMeta(20, 1, OTHER_MEMBERS), b"state at 20, resent"),
                      Snapshot(SnapshotMeta(12, 7, OTHER_MEMBERS), b"state at 12, another term")):
            store.apply_snapshot(stale)
            after = (store.first_index(), store.last_index(), store.snapshot_meta(), store.list_snapshots(),
                     store.config_indexes())
            assert after == before, f"apply_snapshot of {stale.meta} (not newer than {newest}) changed the storage"
        assert store.load_snapshot() == Snapshot(newest, b"state at 20")
        first = store.first_index()
        assert store.entries(first, 31) == run(first, 30)

    # == compaction ======================================================================
    def test_compact_up_to_the_snapshot(self, store):
        store.append(run(1, 10) + run(11, 20, term=2))
        store.create_snapshot(15, MEMBERS, b"s")
        store.compact(15)
        assert store.first_index() == 16
        assert store.last_index() == 20
        assert store.term(15) == 2, "the term at the compaction point stays readable"
        assert store.entries(16, 21) == run(16, 20, term=2)
        with pytest.raises(Compacted):
            store.entries(15, 21)
        with pytest.raises(Compacted):
            store.term(14)
        with pytest.raises(Compacted):
            store.term(1)

    def test_compact_below_the_snapshot(self, store):
        store.append(run(1, 100))
        store.create_snapshot(90, MEMBERS, b"s")
        store.compact(60)
        first = store.first_index()
        assert 60 < first <= 91, "compact(60) leaves first_index() above 60"
        assert store.term(first - 1) == 1
        assert store.entries(first, 101) == run(first, 100)
        with pytest.raises(Compacted):
            store.entries(first - 1, 101)
        with pytest.raises(Compacted):
            store.entries(60, 61)

    def test_compact_beyond_the_newest_snapshot_is_refused(self, store):
        store.append(run(1, 20))
        with pytest.raises(ValueError):
            store.compact(5)  # no snapshot at all
        store.create_snapshot(10, MEMBERS, b"s")
        with pytest.raises(ValueError):
            store.compact(11)
        assert (store.first_index(), store.last_index()) == (1, 20)
        assert store.entries(1, 21) == run(1, 20)

    def test_compacting_again_lower_is_harmless(self, store):
        store.append(run(1, 20))
        store.create_snapshot(10, MEMBERS, b"s")
        store.compact(10)
        store.compact(5)
        store.compact(10)
        assert store.first_index() == 11
        assert store.entries(11, 21) == run(11, 20)

    def test_append_skips_entries_covered_by_the_snapshot(self, store):
        store.append(run(1, 20))
        store.create_snapshot(15, MEMBERS, b"s")
        store.compact(15)
        store.append(run(10, 15))  # all old: nothing happens
        assert (store.first_index(), store.last_index()) == (16, 20)
        store.append(run(13, 17) + run(18, 18, term=2))
        assert store.last_index() == 18
        assert store.entries(16, 19) == run(16, 17) + run(18, 18, term=2)

    # == apply_snapshot ==================================================================
    def test_apply_snapshot_on_an_empty_store(self, store):
        snap = Snapshot(SnapshotMeta(50, 4, MEMBERS), b"leader state")
        store.apply_snapshot(snap)
        self._check_installed(store, snap)
        assert store.last_index() == 50
        store.append(run(51, 52, term=4))
        assert store.entries(51, 53) == run(51, 52, term=4)

    def test_apply_snapshot_keeps_or_drops_a_matching_suffix(self, store):
        store.append(run(1, 10) + run(11, 20, term=2))
        snap = Snapshot(SnapshotMeta(15, 2, MEMBERS), b"leader state")
        store.apply_snapshot(snap)
        self._check_installed(store, snap)
        # The contract lets a backend keep the suffix; if it does, it must be intact.
        assert store.last_index() in (15, 20)
        assert store.entries(16, store.last_index() + 1) == run(16, store.last_index(), term=2)

    def test_apply_snapshot_replaces_a_log_that_does_not_match(self, store):
        store.append(run(1, 20))
        snap = Snapshot(SnapshotMeta(15, 3, MEMBERS), b"leader state")
        store.apply_snapshot(snap)
        self._check_installed(store, snap)
        assert store.last_index() == 15
        with pytest.raises(Unavailable):
            store.term(16)
        store.append(run(16, 17, term=3))
        assert store.entries(16, 18) == run(16, 17, term=3)

    def test_apply_snapshot_beyond_the_log(self, store):
        store.append(run(1, 5))
        snap = Snapshot(SnapshotMeta(100, 2, MEMBERS), os.urandom(3000))
        store.apply_snapshot(snap)
        self._check_installed(store, snap)
        assert store.last_index() == 100
        store.append(run(99, 101, term=2))  # 99 and 100 are covered by the snapshot
        assert store.entries(101, 102) == run(101, 101, term=2)

    def _check_installed(self, store, snap: Snapshot) -> None:
        meta = snap.meta
        assert store.snapshot_meta() == meta
        assert store.initial_state()[1] == meta
        assert store.load_snapshot() == snap
        assert (store.list_snapshots()[-1].index, store.list_snapshots()[-1].term) == (meta.index, meta.term)
        assert store.first_index() == meta.index + 1
        assert store.term(meta.index) == meta.term
        assert store.snapshot_chunk(meta.index, 0, len(snap.data) + 1) == snap.data
        with pytest.raises(Compacted):
            store.entries(meta.index, meta.index + 1)
        if meta.index > 1:
            with pytest.raises(Compacted):
                store.term(meta.index - 1)

