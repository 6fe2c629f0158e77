"""Conformance check for threads: the storage used from three threads at once, as a node does.

What runs where in a node (``keyval/runtime/driver.py``, ``snapshots.py``, ``node.py``):

* the event loop thread appends, sets the hard state, reads (the core's ``entries``,
  ``term``, ``last_index``) and compacts;
* the node's sync thread (``keyval/runtime/sync_thread.py``) runs ``sync()`` — the leader's
  fsync — while the loop goes on reading and compacting;
* an executor thread runs ``create_snapshot`` while the loop appends and the sync thread syncs.

The loop waits for each sync before its next append (one Ready at a time). A backend that
shares unguarded state between those calls loses, mixes up or half-writes entries here;
the check reads everything back at the end, and again after a reopen.
"""
from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor

from keyval.raft.storage import Compacted
from keyval.raft.types import HardState
from keyval.testing.storage_common import MEMBERS, assert_as_declared, run

class ConcurrencyChecks:
    """Uses ``storages``, ``persistent`` and ``concurrency_rounds`` of ``StorageConformance``."""

    def test_loop_sync_thread_and_snapshot_thread_at_once(self, storages):
        rng = random.Random(16)
        store = storages.open()
        model: list = []  # what the log must hold: entries 1..len(model)
        term, commit, errors = 1, 0, []
        newest_snapshot = [0]
        stop = threading.Event()

        def snapshotter() -> None:
            # The runtime snapshots at its applied index, only when that is past the newest.
            try:
                while not stop.is_set():
                    index = commit
                    if index > newest_snapshot[0]:
                        store.create_snapshot(index, MEMBERS, iter([b"state at ", str(index).encode()]))
                        newest_snapshot[0] = index
                    stop.wait(0.0002)
            except BaseException as exc:  # reported by the loop thread, which fails the check
                errors.append(exc)
                stop.set()

        snapshots = threading.Thread(target=snapshotter, name="conformance-snapshots")
        doing = "append() on the loop thread"
        with ThreadPoolExecutor(1, thread_name_prefix="conformance-sync") as sync_thread:
            snapshots.start()
            try:
                for _ in range(self.concurrency_rounds):
                    if stop.is_set():
                        break
                    last = len(model)
                    if last - commit > 3 and rng.random() < 0.1:
                        term += 1  # a new leader replaces an uncommitted suffix
                        last = rng.randint(commit + 1, last - 1)
                    batch = run(last + 1, last + rng.randint(1, 20), term, size=rng.randint(0, 400))
                    doing = "append() on the loop thread"
                    store.append(batch)
                    model[last:] = batch
                    doing = "set_hard_state() on the loop thread"
                    store.set_hard_state(HardState(term, "n1", commit))
                    syncing = sync_thread.submit(store.sync)
                    while not syncing.done():  # the loop reads on meanwhile, and compacts
                        doing = "a read on the loop thread while sync() ran"
                        self._read_while_syncing(store, model, rng)
                        if rng.random() < 0.05 and newest_snapshot[0] > store.first_index():
                            doing = "compact() on the loop thread while sync() ran"
                            store.compact(rng.randint(store.first_index(), newest_snapshot[0]))
                    doing = "sync() on the sync thread"
                    syncing.result()
                    commit = max(commit, len(model) - 3)
            except AssertionError:
                raise
            except Exception as exc:
                raise AssertionError(f"{doing} failed, with create_snapshot() running on another thread: "
                                     f"{exc!r}") from exc
            finally:
                stop.set()
                snapshots.join()
        assert not errors, (f"create_snapshot() failed, with append() and sync() running on another thread: "
                            f"{errors[0]!r}")
        self._check_holds(store, model, "after the threads stopped")
        if self.persistent:
            store = storages.reopen(store)
            self._check_holds(store, model, "after a reopen")

    @staticmethod
    def _read_while_syncing(store, model: list, rng: random.Random) -> None:
        last = store.last_index()
        assert last == len(model), f"last_index() is {last} while a sync runs; {len(model)} entries were appended"
        lo = max(store.first_index(), last - rng.randint(1, 40))
        try:
            got = store.entries(lo, last + 1)
        except Compacted:  # compacted between the two calls: fine, try again
            return
        assert got == model[lo - 1 : last], f"entries {lo}..{last} read while a sync runs differ from those appended"
        assert store.term(last) == model[-1].term

    @staticmethod
    def _check_holds(store, model: list, when: str) -> None:
        first, last = store.first_index(), store.last_index()
        assert last == len(model), f"{when}: the log ends at {last}, but {len(model)} entries were appended and synced"
        got = store.entries(first, last + 1)
        wrong = [e.index for e in got if e != model[e.index - 1]]
        assert not wrong, f"{when}: entries lost, mixed up or reordered at indexes {wrong[:10]}"
        assert_as_declared(got, when)
