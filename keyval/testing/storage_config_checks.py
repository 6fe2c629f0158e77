"""Conformance checks for ``config_indexes()``: the configuration entries a store holds.

The core reads only these entries at startup to rebuild its configuration history, so a
store that reports one too few starts a node under the wrong membership. Every check here
compares the answer with the slow truth, a read of every entry held.
"""
from __future__ import annotations

from keyval.raft.types import Entry, EntryType, HardState, Snapshot, SnapshotMeta
from keyval.testing.storage_common import MEMBERS, OTHER_MEMBERS, entry, run


def config(index: int, term: int = 1) -> Entry:
    return Entry(term, index, EntryType.CONFIG, MEMBERS.encode())


def log_with_configs(lo: int, hi: int, configs: set[int], term: int = 1) -> list[Entry]:
    """Entries ``lo..hi``, configuration entries at the indexes in ``configs``."""
    return [config(i, term) if i in configs else entry(i, term) for i in range(lo, hi + 1)]


def configs_read_back(store) -> list[int]:
    first, last = store.first_index(), store.last_index()
    if first > last:
        return []
    return [e.index for e in store.entries(first, last + 1) if e.type is EntryType.CONFIG]


def assert_configs(store, expected: list[int]) -> None:
    assert configs_read_back(store) == expected, "the test's own arithmetic is off"
    assert store.config_indexes() == expected


class ConfigChecks:
    """Uses ``store``, ``storages``, ``require_persistent`` and ``crash_after`` of
    ``StorageConformance``."""

    def test_fresh_store_holds_no_configuration(self, store):
        assert store.config_indexes() == []

    def test_appends_report_their_configuration_entries(self, store):
        store.append(log_with_configs(1, 10, {1, 4}))
        assert_configs(store, [1, 4])
        store.append(log_with_configs(11, 20, {11, 20}))
        assert_configs(store, [1, 4, 11, 20])

    def test_a_truncated_suffix_takes_its_configurations_along(self, store):
        store.append(log_with_configs(1, 20, {2, 8, 15}, term=1))
        store.append(run(8, 12, term=2))  # replaces 8.. : the ones at 8 and 15 are gone
        assert_configs(store, [2])
        store.append(log_with_configs(10, 11, {11}, term=3))
        assert_configs(store, [2, 11])

    def test_compaction_drops_the_configurations_it_covers(self, store):
        store.append(log_with_configs(1, 300, {1, 50, 150, 299}))
        store.create_snapshot(150, MEMBERS, b"state at 150")
        store.compact(150)
        # A backend may keep compacted entries a while; it must not report them.
        assert_configs(store, [299])

    def test_a_snapshot_that_continues_the_log_keeps_later_configurations(self, store):
        store.append(log_with_configs(1, 30, {3, 10, 25}))
        store.apply_snapshot(Snapshot(SnapshotMeta(20, 1, OTHER_MEMBERS), b"state at 20"))
        assert_configs(store, [25])

    def test_a_snapshot_that_replaces_the_log_drops_every_configuration(self, store):
        store.append(log_with_configs(1, 30, {3, 10, 25}))
        store.apply_snapshot(Snapshot(SnapshotMeta(20, 4, OTHER_MEMBERS), b"state at 20"))
        assert_configs(store, [])
        store.append(log_with_configs(21, 22, {22}, term=4))
        assert_configs(store, [22])

    def test_configurations_survive_reopen(self, storages):
        self.require_persistent()
        store = storages.open()
        store.append(log_with_configs(1, 2000, {1, 700, 1500, 1990}))
        store.create_snapshot(800, MEMBERS, b"state at 800")
        store.compact(800)
        store.append(log_with_configs(1995, 2001, {1999}, term=2))  # cuts 1995..2000
        store.set_hard_state(HardState(2, "n1", 1000))
        store = storages.reopen(store)
        held = configs_read_back(store)  # compaction need not be durable: 700 may be back
        assert held[-3:] == [1500, 1990, 1999] and set(held) <= {1, 700, 1500, 1990, 1999}
        assert store.config_indexes() == held

    def test_configurations_after_a_crash_match_the_log_it_recovered(self, storages):
        self.require_persistent()

        def writer(store, report):
            store.append(log_with_configs(1, 500, {1, 100, 400}))
            store.sync()
            store.append(log_with_configs(300, 600, {350, 550}, term=2))
            store.sync()
            store.append(log_with_configs(601, 900, {650, 899}, term=2))  # never synced

        self.crash_after(writer, storages.data_dir)
        store = storages.open()
        held = configs_read_back(store)
        assert held[:4] == [1, 100, 350, 550] and store.last_index() >= 600
        assert store.config_indexes() == held
