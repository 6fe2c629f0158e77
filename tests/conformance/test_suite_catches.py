"""The conformance suite fails a storage with one injected bug, each in the check meant for
it, with a message that says what went wrong (values shown: KeyVal's pytest plugin has the
checks' asserts rewritten). Each runs the one check in a pytest of its own (pytester), on a
storage from broken_storages.py."""
from __future__ import annotations

import textwrap

import pytest

pytest_plugins = ["pytester"]

SUITE = """
from pathlib import Path

import broken_storages
from keyval.testing.storage_conformance import StorageConformance
from keyval.testing.storage_damage_checks import flip_a_byte_of_entry


class TestInjectedBug(StorageConformance):
    snapshot_retention = 2
    crash_rounds = 2
    concurrency_rounds = 2000  # the race shows within ~100 rounds; this makes a miss unheard of

    def open_storage(self, data_dir):
        return {opener}

    def corrupt_log(self, data_dir):
        flip_a_byte_of_entry(sorted(Path(data_dir, "log").glob("*.seg")))
"""

BUGS = {
    # name: (how the broken storage is opened, the check that must fail, what its report must say)
    "sqlite with fsync off": (
        "broken_storages.SqliteWithoutFsync(data_dir)", "test_power_loss_keeps_everything_promised_durable",
        ["term and vote set before the power cut were lost", "assert (0, '') == (5, 'n2')"]),
    "segment without the log's fdatasync": (
        "broken_storages.SegmentWithoutLogFsync(data_dir)", "test_power_loss_mid_stream_loses_nothing_reported_durable",
        ["were synced; the log ends at"]),
    "int entry types after a reopen": (
        "broken_storages.SqliteReadingRawRows(data_dir, as_int=True, as_view=False)",
        "test_everything_survives_close_and_reopen",
        ["read back after a reopen: entry 21 has (term, index, type, data) of types ('int', 'int', 'int', 'bytes')"]),
    "memoryview data after a reopen": (
        "broken_storages.SqliteReadingRawRows(data_dir, as_int=False, as_view=True)",
        "test_everything_survives_close_and_reopen", ["of types ('int', 'int', 'EntryType', 'memoryview')"]),
    "a data race (no lock)": (
        "broken_storages.SqliteWithoutLock(data_dir)", "test_loop_sync_thread_and_snapshot_thread_at_once",
        ["failed, with", "running on another thread"]),
    "a stale snapshot applied": (
        "broken_storages.SqliteApplyingStaleSnapshots(data_dir)",
        "test_apply_snapshot_not_newer_than_the_newest_changes_nothing",
        ["apply_snapshot of SnapshotMeta(index=10", "changed the storage"]),
    "an older snapshot created over a newer one": (
        "broken_storages.MemoryReplacingNewerSnapshots()", "test_create_snapshot_below_the_newest_is_refused",
        ["DID NOT RAISE ValueError"]),
    "a damaged log cut without a word": (
        "broken_storages.SegmentForgettingLoss(data_dir)", "test_a_damaged_log_is_refused_or_cut_never_read_back",
        ["the node would not know it lost entries"]),
}


@pytest.mark.parametrize("bug", list(BUGS))
def test_the_suite_fails_an_injected_bug(pytester, bug):
    opener, check, says = BUGS[bug]
    pytester.makepyfile(test_injected=textwrap.dedent(SUITE).format(opener=opener))
    ran = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-k", check)
    ran.assert_outcomes(failed=1)
    report = ran.stdout.str()
    missing = [s for s in says if s not in report]
    assert not missing, f"the report of {check} does not say {missing}:\n{report[-3000:]}"
