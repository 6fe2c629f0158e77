"""Conformance checks for the log and the hard state: append, truncate, read, bounds."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from keyval.raft.storage import Compacted, Unavailable, limit_size
from keyval.raft.types import Entry, EntryType, HardState, Membership, SnapshotMeta
from keyval.testing.storage_common import MEMBERS, assert_as_declared, entry, run


class LogChecks:
    """Uses the ``store`` fixture of ``StorageConformance``."""

    # == a fresh store ===================================================================
    def test_has_every_member_of_the_contract(self, store):
        # What `keyval serve` checks before it serves: a backend lacking one is refused.
        from keyval.plugin_api.contracts import missing_members
        from keyval.plugin_api.storage import Storage

        assert missing_members(store, Storage) == [], "keyval serve would refuse this backend"

    def test_fresh_storage_is_empty(self, store):
        assert store.initial_state() == (HardState(), SnapshotMeta())
        assert (store.first_index(), store.last_index()) == (1, 0)
        assert store.term(0) == 0, "term(0) on an empty log is 0: the core asks for it"
        assert store.snapshot_meta() == SnapshotMeta()
        assert store.load_snapshot() is None
        assert store.list_snapshots() == []
        with pytest.raises(Unavailable):
            store.term(1)
        with pytest.raises(Unavailable):
            store.entries(1, 2)

    # == append and read =================================================================
    def test_appended_entries_are_readable_at_once_in_order(self, store):
        batch = [entry(1), Entry(1, 2, EntryType.CONFIG, MEMBERS.encode()), Entry(1, 3), entry(4, 2, 300)]
        store.append(batch)
        assert (store.first_index(), store.last_index()) == (1, 4)
        assert store.entries(1, 5) == batch
        assert [store.term(i) for i in range(0, 5)] == [0, 1, 1, 1, 2]
        assert_as_declared(store.entries(1, 5), "read back at once")
        assert Membership.decode(store.entries(2, 3)[0].data) == MEMBERS

    def test_entries_keep_their_types_after_sync(self, store):
        # A backend may read from its cache before a sync and from disk after it.
        batch = [entry(1), Entry(1, 2, EntryType.CONFIG, MEMBERS.encode()), Entry(2, 3), entry(4, 2, 5000)]
        store.append(batch)
        store.sync()
        assert store.entries(1, 5) == batch
        assert_as_declared(store.entries(1, 5), "read back after sync()")
        assert_as_declared(store.entries(2, 5, max_bytes=1), "read back after sync() with max_bytes")
        assert [type(store.term(i)) for i in range(0, 5)] == [int] * 5
        assert (type(store.first_index()), type(store.last_index())) == (int, int)

    def test_appends_in_batches_join_up(self, store):
        expected = []
        lo = 1
        for size in (1, 5, 2, 40, 1):
            batch = run(lo, lo + size - 1, term=1 + lo // 10)
            store.append(batch)
            expected += batch
            lo += size
        assert store.last_index() == len(expected)
        assert store.entries(1, store.last_index() + 1) == expected
        for lo, hi in [(1, 2), (5, 9), (7, 49), (49, 50)]:
            assert store.entries(lo, hi) == expected[lo - 1 : hi - 1]

    def test_entry_data_round_trips_exactly(self, store):
        blobs = [b"", bytes(range(256)), b"\x00" * 1000, os.urandom(1 << 20), "ünïcode ✓".encode()]
        batch = [Entry(1, i + 1, EntryType.NORMAL, blob) for i, blob in enumerate(blobs)]
        store.append(batch)
        assert store.entries(1, len(batch) + 1) == batch
        store.sync()
        assert store.entries(1, len(batch) + 1) == batch

    def test_empty_append_changes_nothing(self, store):
        store.append(run(1, 3))
        store.append([])
        assert store.entries(1, 4) == run(1, 3)

    def test_a_gap_is_refused(self, store):
        with pytest.raises(ValueError):
            store.append(run(2, 4))
        assert store.last_index() == 0
        store.append(run(1, 5))
        with pytest.raises(ValueError):
            store.append(run(7, 8, term=2))
        assert store.last_index() == 5
        assert store.entries(1, 6) == run(1, 5)

    def test_append_truncates_a_conflicting_suffix(self, store):
        store.append(run(1, 10))
        store.append(run(6, 7, term=2))
        assert store.last_index() == 7
        assert store.entries(1, 8) == run(1, 5) + run(6, 7, term=2)
        with pytest.raises(Unavailable):
            store.term(8)
        with pytest.raises(Unavailable):
            store.entries(1, 9)
        store.append(run(8, 9, term=2))  # and the log goes on from the cut
        assert store.entries(5, 10) == run(5, 5) + run(6, 9, term=2)

    def test_append_at_first_index_replaces_the_whole_log(self, store):
        store.append(run(1, 10))
        store.append(run(1, 2, term=3))
        assert store.last_index() == 2
        assert store.entries(1, 3) == run(1, 2, term=3)

    def test_append_at_last_index_plus_one_truncates_nothing(self, store):
        store.append(run(1, 5))
        store.append(run(6, 6, term=2))
        assert store.entries(1, 7) == run(1, 5) + run(6, 6, term=2)

    def test_rewriting_identical_entries_keeps_them(self, store):
        store.append(run(1, 10))
        store.append(run(4, 6))  # a resent append: everything after it is cut too
        assert store.last_index() == 6
        assert store.entries(1, 7) == run(1, 6)

    def test_truncation_across_a_large_range(self, store):
        store.append(run(1, 3000, size=200))
        store.sync()
        store.append(run(10, 12, term=2, size=200))
        assert store.last_index() == 12
        assert store.entries(1, 13) == run(1, 9, size=200) + run(10, 12, term=2, size=200)
        store.append(run(13, 2000, term=2, size=200))
        store.sync()
        assert store.last_index() == 2000
        assert store.entries(1990, 2001) == run(1990, 2000, term=2, size=200)
        assert store.term(9) == 1 and store.term(10) == 2

    def test_read_errors_at_the_edges(self, store):
        store.append(run(1, 5))
        assert store.entries(1, 6) == run(1, 5)
        assert store.entries(5, 6) == run(5, 5)
        with pytest.raises(Compacted):
            store.entries(0, 3)
        with pytest.raises(Unavailable):
            store.entries(3, 7)
        with pytest.raises(Unavailable):
            store.term(6)
        with pytest.raises(Unavailable):
            store.term(1000)

    def test_max_bytes_cuts_but_returns_at_least_one(self, store):
        sizes = [100, 30, 500, 10, 10, 2000, 1]
        batch = [entry(i + 1, 1, size) for i, size in enumerate(sizes)]
        store.append(batch)
        hi = len(batch) + 1
        # The accounting is the core's own: keyval.raft.storage.limit_size.
        for max_bytes in [None, 0, 1, 124, 125, 178, 700, 1000, 10**9]:
            for lo in (1, 3, 6):
                got = store.entries(lo, hi, max_bytes)
                assert got == limit_size(batch[lo - 1 :], max_bytes), (lo, max_bytes)
                assert len(got) >= 1

    # == hard state ======================================================================
    def test_hard_state_round_trips(self, store):
        for hs in [HardState(1, "", 0), HardState(1, "n2", 0), HardState(4, "n3", 7), HardState(4, "n3", 9),
                   HardState(9, "", 9)]:
            store.set_hard_state(hs)
            assert store.initial_state()[0] == hs

    def test_initial_state_pairs_hard_state_with_the_snapshot(self, store):
        store.append(run(1, 10))
        store.set_hard_state(HardState(3, "n1", 8))
        meta = store.create_snapshot(8, MEMBERS, b"state")
        assert store.initial_state() == (HardState(3, "n1", 8), meta)


    # == threads =========================================================================
    def test_usable_from_a_worker_thread(self, store):
        # The node runtime runs sync, create_snapshot and compact in an executor thread.
        store.append(run(1, 10))
        with ThreadPoolExecutor(1) as pool:
            pool.submit(store.sync).result()
            pool.submit(store.create_snapshot, 5, MEMBERS, b"s").result()
            pool.submit(store.compact, 5).result()
            pool.submit(store.append, run(11, 12)).result()
            assert pool.submit(store.entries, 6, 13).result() == run(6, 12)
        assert store.entries(6, 13) == run(6, 12)

