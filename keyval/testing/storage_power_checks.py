"""Conformance checks for power loss: what was synced survives a power cut, and nothing else
comes back as data.

Unlike the SIGKILL checks, these throw the page cache away (``keyval.testing.power_loss``:
the data dir on a loop-mounted ext4 that is shut down without flushing), so a backend that
skips an fsync it promised — in ``sync()``, ``set_hard_state``, ``create_snapshot``,
``apply_snapshot``, a truncation — fails here. Linux and root only; skipped otherwise.
"""
from __future__ import annotations

import random

from keyval.raft.types import HardState, Snapshot, SnapshotMeta
from keyval.testing.storage_common import MEMBERS, assert_as_declared, entry, run


class PowerLossChecks:
    """Uses the ``power_cut`` fixture and ``cut_power_after`` of ``StorageConformance``."""

    def test_power_loss_keeps_everything_promised_durable(self, power_cut):
        def writer(store, report):
            store.append(run(1, 50))
            store.sync()
            store.set_hard_state(HardState(5, "n2", 40))
            store.create_snapshot(30, MEMBERS, b"state at 30")
            store.compact(30)
            store.append(run(45, 60, term=5))  # replaces 45..50: the truncation is synced too
            store.sync()
            report("synced")
            store.append(run(61, 70, term=5))  # never synced: may or may not survive
            store.set_hard_state(HardState(5, "n2", 60))  # commit alone may be lazy

        assert self.cut_power_after(writer, power_cut) == ["synced"]
        store = power_cut.storages.open()
        hard_state, meta = store.initial_state()
        assert (hard_state.term, hard_state.vote) == (5, "n2"), "term and vote set before the power cut were lost"
        assert hard_state.commit <= 60
        assert meta == SnapshotMeta(30, 1, MEMBERS), "a snapshot created before the power cut was lost"
        assert store.load_snapshot() == Snapshot(meta, b"state at 30")
        assert store.first_index() <= 31, "compaction may be lazy, but never past the snapshot"
        last = store.last_index()
        assert 60 <= last <= 70, f"the log ends at {last} after the power cut: entries 45..60 were synced"
        assert store.entries(31, last + 1) == run(31, 44) + run(45, last, term=5)
        assert_as_declared(store.entries(31, last + 1), "read back after a power cut")

    def test_power_loss_keeps_an_applied_snapshot(self, power_cut):
        def writer(store, report):
            store.append(run(1, 20))
            store.sync()
            store.apply_snapshot(Snapshot(SnapshotMeta(40, 3, MEMBERS), b"installed"))
            report("applied")

        assert self.cut_power_after(writer, power_cut) == ["applied"]
        store = power_cut.storages.open()
        assert store.load_snapshot() == Snapshot(SnapshotMeta(40, 3, MEMBERS), b"installed")
        assert (store.first_index(), store.last_index()) == (41, 40)

    def test_power_loss_mid_stream_loses_nothing_reported_durable(self, power_cut):
        rng = random.Random(4321)
        for _ in range(self.crash_rounds):

            def writer(store, report):
                last = store.last_index()
                term = max(store.initial_state()[0].term, store.term(last), 1)
                while True:
                    if last > 5 and rng.random() < 0.1:
                        term += 1
                        last -= rng.randint(1, 5)  # a new leader cuts a few
                        report(["cut", last + 1])
                    batch = run(last + 1, last + rng.randint(1, 50), term, size=rng.randint(1, 300))
                    store.append(batch)
                    if rng.random() < 0.3:
                        store.set_hard_state(HardState(term, "n1", 0))
                        report(["vote", term])
                    store.sync()
                    last = batch[-1].index
                    report(["synced", last, term])

            reports = self.cut_power_after(writer, power_cut, rng.uniform(0.05, 0.3))
            store = power_cut.storages.open()
            synced = [n for n, r in enumerate(reports) if r[0] == "synced"]
            if synced:
                _, index, term = reports[synced[-1]]
                cuts = [r[1] for r in reports[synced[-1] :] if r[0] == "cut"]
                held = store.last_index()
                if cuts:  # a cut made after the last sync may or may not have reached the disk
                    assert held >= min(cuts) - 1, f"entries up to {min(cuts) - 1} were synced; the log ends at {held}"
                else:
                    assert held >= index, f"entries up to {index} were synced; the log ends at {held}"
                    assert store.term(index) == term
            votes = [r[1] for r in reports if r[0] == "vote"]
            if votes:
                assert store.initial_state()[0].term >= votes[-1], "a term set before the power cut was lost"
            entries = store.entries(1, store.last_index() + 1)
            assert [e.index for e in entries] == list(range(1, store.last_index() + 1))
            damaged = [e.index for e in entries if e != entry(e.index, e.term, len(e.data))]
            assert not damaged, f"entries read back damaged after a power cut: {damaged[:10]}"
            assert [e.term for e in entries] == sorted(e.term for e in entries)
            power_cut.storages.close(store)
