"""Conformance checks for durability: clean reopen, and reopen after a real crash (SIGKILL).

Each crash check runs a writer in a forked child (``keyval.testing.crash``), lets it die
without closing anything, and opens the same data dir again: what was promised durable —
synced entries, a hard state once ``set_hard_state`` returned, a snapshot once created or
applied — must be there, and nothing may come back half-written or mixed.
"""
from __future__ import annotations

import random

from keyval.raft.types import HardState, Snapshot, SnapshotMeta
from keyval.testing.storage_common import MEMBERS, assert_as_declared, entry, run


class DurabilityChecks:
    """Uses ``storages``, ``require_persistent``, ``crash_after`` and ``kill_during`` of
    ``StorageConformance``; skipped when ``persistent`` is False."""

    # == reopening =======================================================================
    def test_everything_survives_close_and_reopen(self, storages):
        self.require_persistent()
        store = storages.open()
        store.append(run(1, 10) + run(11, 30, term=2))
        store.set_hard_state(HardState(2, "n2", 25))
        meta = store.create_snapshot(20, MEMBERS, b"state at 20")
        store.compact(20)
        store.append(run(29, 31, term=3))  # a truncation, not synced: close syncs
        store = storages.reopen(store)
        assert store.initial_state() == (HardState(2, "n2", 25), meta)
        assert store.load_snapshot() == Snapshot(meta, b"state at 20")
        assert [(i.index, i.term) for i in store.list_snapshots()] == [(20, 2)]
        # Compaction need not be durable: a stale first index is safe, a later one is not.
        first = store.first_index()
        assert first <= 21 and store.last_index() == 31
        expected = run(1, 10) + run(11, 28, term=2) + run(29, 31, term=3)
        assert store.entries(first, 32) == expected[first - 1 :]
        assert_as_declared(store.entries(first, 32), "read back after a reopen")
        assert type(store.load_snapshot().data) is bytes, "snapshot data read back after a reopen is not bytes"
        assert store.term(20) == 2
        store.append(run(32, 33, term=3))  # and it carries on
        assert store.entries(31, 34) == run(31, 33, term=3)

    def test_synced_state_survives_a_crash(self, storages):
        self.require_persistent()

        def writer(store, report):
            store.append(run(1, 50))
            store.sync()
            store.set_hard_state(HardState(5, "n2", 40))
            store.create_snapshot(30, MEMBERS, b"state at 30")
            store.compact(30)
            store.append(run(45, 60, term=5))
            store.sync()
            store.append(run(61, 70, term=5))  # never synced: may or may not survive

        self.crash_after(writer, storages.data_dir)
        store = storages.open()
        hard_state, meta = store.initial_state()
        assert (hard_state.term, hard_state.vote) == (5, "n2")
        assert hard_state.commit <= 40
        assert meta == SnapshotMeta(30, 1, MEMBERS)
        assert store.load_snapshot() == Snapshot(meta, b"state at 30")
        assert store.first_index() <= 31, "compaction may be lazy, but never past the snapshot"
        assert 60 <= store.last_index() <= 70
        last = store.last_index()
        assert store.entries(31, last + 1) == run(31, 44) + run(45, last, term=5)
        assert_as_declared(store.entries(31, last + 1), "read back after a crash")

    def test_a_truncation_survives_a_crash(self, storages):
        self.require_persistent()

        def writer(store, report):
            store.append(run(1, 200, size=100))
            store.sync()
            store.append(run(50, 52, term=2, size=100))
            store.sync()

        self.crash_after(writer, storages.data_dir)
        store = storages.open()
        assert store.last_index() == 52, "entries cut by a synced truncation came back"
        assert store.entries(1, 53) == run(1, 49, size=100) + run(50, 52, term=2, size=100)

    def test_hard_state_is_durable_without_sync(self, storages):
        self.require_persistent()

        def writer(store, report):
            store.set_hard_state(HardState(7, "n3", 0))

        self.crash_after(writer, storages.data_dir)
        store = storages.open()
        assert store.initial_state()[0] == HardState(7, "n3", 0)

    def test_a_created_snapshot_is_durable_without_sync(self, storages):
        self.require_persistent()

        def writer(store, report):
            store.append(run(1, 20))
            store.sync()
            store.create_snapshot(10, MEMBERS, b"created")

        self.crash_after(writer, storages.data_dir)
        store = storages.open()
        assert store.load_snapshot() == Snapshot(SnapshotMeta(10, 1, MEMBERS), b"created")
        assert store.snapshot_meta() == SnapshotMeta(10, 1, MEMBERS)
        assert [(i.index, i.term) for i in store.list_snapshots()] == [(10, 1)]
        assert store.entries(11, 21) == run(11, 20)

    def test_an_applied_snapshot_is_durable_without_sync(self, storages):
        self.require_persistent()

        def writer(store, report):
            store.append(run(1, 20))
            store.sync()
            store.apply_snapshot(Snapshot(SnapshotMeta(40, 3, MEMBERS), b"installed"))

        self.crash_after(writer, storages.data_dir)
        store = storages.open()
        assert store.load_snapshot() == Snapshot(SnapshotMeta(40, 3, MEMBERS), b"installed")
        assert store.initial_state()[1] == SnapshotMeta(40, 3, MEMBERS)
        assert (store.first_index(), store.last_index()) == (41, 40)
        assert store.term(40) == 3
        assert [(i.index, i.term) for i in store.list_snapshots()][-1] == (40, 3)

    def test_kill_mid_append_loses_nothing_reported_durable(self, storages):
        self.require_persistent()
        rng = random.Random(1234)
        for _ in range(self.crash_rounds):

            def writer(store, report):
                last = store.last_index()
                term = max(store.initial_state()[0].term, store.term(last), 1)
                while True:
                    if last > 5 and rng.random() < 0.1:
                        term += 1
                        last -= rng.randint(1, 5)  # truncate a few, as a new leader would
                        report(["cut", last + 1])
                    batch = run(last + 1, last + rng.randint(1, 50), term, size=rng.randint(1, 300))
                    store.append(batch)
                    if rng.random() < 0.3:
                        store.set_hard_state(HardState(term, "n1", 0))
                    store.sync()
                    last = batch[-1].index
                    report(["synced", last, term])

            reports = self.kill_during(writer, storages.data_dir, rng.uniform(0.05, 0.3))
            store = storages.open()
            synced = [n for n, r in enumerate(reports) if r[0] == "synced"]
            if synced:
                _, index, term = reports[synced[-1]]
                # A cut made after the last sync may or may not have reached the disk.
                cuts = [r[1] for r in reports[synced[-1] :] if r[0] == "cut"]
                if cuts:
                    assert store.last_index() >= min(cuts) - 1, "an entry reported durable is gone"
                else:
                    assert store.last_index() >= index, "an entry reported durable is gone"
                    assert store.term(index) == term
            entries = store.entries(1, store.last_index() + 1)
            assert [e.index for e in entries] == list(range(1, store.last_index() + 1))
            for e in entries:
                assert e == entry(e.index, e.term, len(e.data)), f"entry {e.index} is damaged"
            assert [e.term for e in entries] == sorted(e.term for e in entries)
            storages.close(store)

    def test_kill_mid_hard_state_leaves_an_old_or_new_pair(self, storages):
        self.require_persistent()
        rng = random.Random(99)
        # A mixed pair shows only if the kill lands inside the write: many short rounds.
        for _ in range(3 * self.crash_rounds):

            def writer(store, report):
                term = store.initial_state()[0].term
                while True:
                    term += 1
                    store.set_hard_state(HardState(term, "", term - 1))
                    store.set_hard_state(HardState(term, f"n{term}", term))
                    report(term)

            done = self.kill_during(writer, storages.data_dir, rng.uniform(0.01, 0.06))
            store = storages.open()
            hard_state = store.initial_state()[0]
            if done:
                assert hard_state.term >= done[-1]
            assert hard_state.vote in ("", f"n{hard_state.term}"), f"term and vote mixed: {hard_state}"
            assert hard_state.commit <= hard_state.term
            storages.close(store)

