"""Conformance checks for damaged data: a bad block in a snapshot or in the log.

Each check writes, closes the storage, damages the stored bytes through a hook the plugin
author provides (``corrupt_newest_snapshot``, ``corrupt_log``: only the author knows the
layout), and opens the data dir again. A damaged snapshot is skipped and logged, never
loaded. Damaged log entries are never read back as data: the storage either refuses to
open with ``keyval.errors.CorruptLog`` (naming the file and the byte offset), or opens with
the log cut before the damage and says so through ``durable_watermark()``, whose index then
lies above ``last_index()`` (the node re-fetches the lost entries from its leader before it
votes as usual).
"""
from __future__ import annotations

import logging

from keyval.errors import CorruptLog
from keyval.raft.types import HardState, Snapshot, SnapshotMeta
from keyval.testing.storage_common import MEMBERS, assert_as_declared, entry, run

#: The log ``corrupt_log`` is handed: entries 1..DAMAGE_LOG_LAST of DAMAGE_ENTRY_SIZE bytes,
#: all synced, no snapshot. Damage one in the middle: not the tail, which a crash may tear.
DAMAGE_LOG_LAST = 2000
DAMAGE_ENTRY_SIZE = 200


class DamageChecks:
    """Uses ``storages``, ``require_persistent``, ``corrupt_newest_snapshot``, ``corrupt_log``
    and ``snapshot_retention`` of ``StorageConformance``."""

    def test_a_corrupt_snapshot_is_skipped_never_loaded(self, storages, caplog):
        self.require_persistent()
        store = storages.open()
        store.append(run(1, 20))
        store.create_snapshot(10, MEMBERS, b"older, intact")
        store.create_snapshot(20, MEMBERS, b"newer, to be damaged")
        storages.close(store)
        self.corrupt_newest_snapshot(storages.data_dir)
        with caplog.at_level(logging.WARNING):
            store = storages.open()
            loaded = store.load_snapshot()
        assert loaded is None or loaded.data != b"newer, to be damaged", "a damaged snapshot was loaded"
        if (self.snapshot_retention or 0) >= 2:
            assert loaded == Snapshot(SnapshotMeta(10, 1, MEMBERS), b"older, intact")
        assert any(r.levelno >= logging.WARNING for r in caplog.records), "the skipped snapshot was not logged"

    def test_a_damaged_log_is_refused_or_cut_never_read_back(self, storages):
        self.require_persistent()
        store = storages.open()
        store.append(run(1, DAMAGE_LOG_LAST, size=DAMAGE_ENTRY_SIZE))
        store.sync()
        store.set_hard_state(HardState(1, "n1", DAMAGE_LOG_LAST))
        storages.close(store)
        self.corrupt_log(storages.data_dir)
        try:
            store = storages.open()
            last = store.last_index()
            held = store.entries(store.first_index(), last + 1)
        except CorruptLog as refused:
            assert refused.path and refused.reason, f"CorruptLog should name the file and the damage: {refused}"
            return
        damaged = [e.index for e in held if e != entry(e.index, 1, DAMAGE_ENTRY_SIZE)]
        assert not damaged, f"damaged entries read back as data (and would be applied): {damaged[:10]}"
        assert_as_declared(held, "read back after damage")
        assert [e.index for e in held] == list(range(store.first_index(), last + 1))
        if last < DAMAGE_LOG_LAST:
            mark = store.durable_watermark()
            assert mark[0] > last, (
                f"the log was cut to {last} of {DAMAGE_LOG_LAST} synced entries, but durable_watermark() "
                f"is {mark}: the node would not know it lost entries it may have acknowledged "
                f"(raise CorruptLog, or keep the watermark apart from the log)")
            assert store.initial_state()[0].commit <= last, "the commit index points past the log that is left"


def flip_a_byte_of_entry(files, index: int = DAMAGE_LOG_LAST // 2, term: int = 1):
    """A ``corrupt_log`` for a backend that stores entry data as is (uncompressed): flip a
    byte of entry ``index``'s data in the first of ``files`` (paths) that holds it, as a bad
    block would. The checks' entries spell out their own index and term, so they can be
    found without knowing the format. Returns the file damaged."""
    label = f"{index}/{term};".encode()
    for path in files:
        with open(path, "r+b") as f:
            raw = f.read()
            at = raw.find(label)
            if at >= 0:
                f.seek(at + 1)
                f.write(bytes([raw[at + 1] ^ 0xFF]))
                return path
    raise AssertionError(f"entry {index} (term {term}) is in none of {list(files)}")
