"""Random operations against segment storage and MemoryStorage side by side: same answers.

MemoryStorage (keyval/raft/storage.py) is the reference semantics. Tiny segments make the
random truncations and compactions cross segment files; a clean reopen now and then checks
that the files say what memory said (after a reopen the log starts at the snapshot, so the
model is compacted to it too).
"""
from __future__ import annotations

import os
import random

import pytest

from keyval.raft.storage import MemoryStorage
from keyval.raft.types import Entry, EntryType, Membership, Snapshot, SnapshotMeta
from keyval_plugins.storage.segment.options import SegmentOptions
from keyval_plugins.storage.segment.storage import SegmentStorage

MEMBERS = Membership(frozenset({"a", "b"}))
#: more for a longer standalone run: SEGMENT_MODEL_SEEDS=100 pytest ...
SEEDS = int(os.environ.get("SEGMENT_MODEL_SEEDS", "4"))


KINDS = (EntryType.NORMAL,) * 9 + (EntryType.CONFIG,)


def make_entries(rng: random.Random, first: int, count: int, term: int) -> list[Entry]:
    # One in ten a configuration entry, so that config_indexes() is compared too.
    return [Entry(term, i, rng.choice(KINDS), rng.randbytes(rng.choice((0, 5, 60, 400)))) for i in range(first, first + count)]


def same(store: SegmentStorage, model: MemoryStorage, rng: random.Random) -> None:
    first, last = model.first_index(), model.last_index()
    assert (store.first_index(), store.last_index()) == (first, last)
    assert store.snapshot_meta() == model.snapshot_meta()
    assert store.term(first - 1) == model.term(first - 1)
    assert store.config_indexes() == model.config_indexes()
    if last >= first:
        assert store.entries(first, last + 1) == model.entries(first, last + 1)
        lo = rng.randint(first, last)
        hi = rng.randint(lo, last) + 1
        max_bytes = rng.choice((None, 0, 300, 5000))
        assert store.entries(lo, hi, max_bytes) == model.entries(lo, hi, max_bytes)


@pytest.mark.parametrize("seed", range(SEEDS))
def test_random_operations_match_memory_storage(tmp_path, seed):
    rng = random.Random(seed)
    options = SegmentOptions(segment_size=2048, cache_bytes=rng.choice((0, 3000, 1 << 20)))
    store = SegmentStorage(str(tmp_path), options)
    model = MemoryStorage()
    term = 1
    for step in range(250):
        op = rng.random()
        last = model.last_index()
        if op < 0.55:
            # Entries up to the snapshot are committed: Raft never truncates them.
            first = rng.randint(max(model.snapshot.meta.index + 1, last - 30), last + 1)
            if rng.random() < 0.3:
                term += 1
            term = max(term, model.term(first - 1))
            batch = make_entries(rng, first, rng.randint(1, 25), term)
            store.append(batch)
            model.append(batch)
        elif op < 0.65:
            store.sync()
        elif op < 0.75 and last > model.snapshot.meta.index:
            index = rng.randint(model.snapshot.meta.index + 1, last)
            data = rng.randbytes(rng.randint(0, 3000))
            assert store.create_snapshot(index, MEMBERS, data) == model.create_snapshot(index, MEMBERS, data).meta
        elif op < 0.85 and model.snapshot.meta.index >= model.first_index():
            index = rng.randint(model.first_index(), model.snapshot.meta.index)
            store.compact(index)
            model.compact(index)
        elif op < 0.9:
            index = rng.randint(model.snapshot.meta.index + 1, last + 30)
            keep = index <= last and rng.random() < 0.5
            snap_term = model.term(index) if keep else max(term, model.term(min(index, last))) + 1
            term = max(term, snap_term)
            snapshot = Snapshot(SnapshotMeta(index, snap_term, MEMBERS), rng.randbytes(100))
            store.apply_snapshot(snapshot)
            model.apply_snapshot(snapshot)
        elif op < 0.95:
            store.close()
            store = SegmentStorage(str(tmp_path), options)
            model.compact(model.snapshot.meta.index)
        same(store, model, rng)
        if model.snapshot.meta.index:
            assert store.snapshot_chunk(model.snapshot.meta.index, 0, 1 << 20) == model.snapshot.data
    store.close()
