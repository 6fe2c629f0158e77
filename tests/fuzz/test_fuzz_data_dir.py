"""Fuzzing ``SegmentStorage`` opening a whole data dir (hard state, log segments, snapshots)
in which one file is damaged or gone.

The data dir is what the real backend wrote: appends with a conflicting suffix replaced,
fsyncs, a hard state, two snapshots and the log compacted behind the newer one. Opening it
must raise KeyVal's own error or give a view a node could have had: the hard state written
(or none, if its file is gone), one of the snapshots written with exactly its data (or
none), and log entries a version of the log really held, cut at a torn tail.
"""
from __future__ import annotations

import os
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fuzz_mutations import PROJECT_ERRORS, damaged, note, within
from keyval.raft.types import Entry, EntryType, HardState, Membership, SnapshotMeta
from keyval_plugins.storage.segment.options import SegmentOptions
from keyval_plugins.storage.segment.storage import SegmentStorage

FUZZ = settings.get_profile("keyval-fuzz")
OPTIONS = SegmentOptions(segment_size=128, snapshots_keep=2, cache_bytes=0)
MEMBERS = Membership(frozenset({"n1", "n2", "n3"}))
HARD_STATE = HardState(term=3, vote="n2", commit=16)
SNAPSHOTS = {6: b"the state machine at 6;" * 8, 11: b"the state machine at 11;" * 8}


def _run(lo: int, hi: int, term: int) -> list[Entry]:
    return [Entry(term, i, EntryType.NORMAL, f"e{i}t{term}".encode() * (1 + i % 4)) for i in range(lo, hi + 1)]


def as_tuples(entries) -> list[tuple]:
    return [(e.term, e.index, int(e.type), bytes(e.data)) for e in entries]


def write_data_dir(directory: str) -> list[list[tuple]]:
    """The data dir, and the log (from index 1) after each append."""
    storage = SegmentStorage(directory, OPTIONS)
    versions = []
    for batch in (_run(1, 4, 1), _run(5, 9, 1), _run(8, 10, 2), _run(11, 13, 2), _run(14, 16, 3), _run(17, 18, 3)):
        storage.append(batch)
        versions.append(as_tuples(storage.entries(1, storage.last_index() + 1)))
        storage.sync()
    storage.set_hard_state(HARD_STATE)
    for index, data in SNAPSHOTS.items():
        storage.create_snapshot(index, MEMBERS, data)
    storage.compact(11)
    storage.close()
    return versions


@pytest.fixture(scope="module")
def data_dir():
    with tempfile.TemporaryDirectory() as tmp:
        versions = write_data_dir(tmp)
        files = {}
        for root, _, names in os.walk(tmp):
            for name in names:
                path = os.path.join(root, name)
                with open(path, "rb") as f:
                    files[os.path.relpath(path, tmp)] = f.read()
    assert sum(name.startswith("log") for name in files) >= 2 and sum(n.endswith(".snap") for n in files) == 2
    return files, versions


@settings(FUZZ, max_examples=max(1, FUZZ.max_examples // 2))
@given(data=st.data())
def test_a_data_dir_with_a_damaged_file_opens_to_an_error_or_a_state_that_was_written(data_dir, data):
    files, versions = data_dir
    victim = data.draw(st.sampled_from(sorted(files)))
    gone = data.draw(st.sampled_from((False, False, False, True)))  # the file lost, one time in four
    bad = None if gone else data.draw(damaged(files[victim]))
    with tempfile.TemporaryDirectory() as tmp:
        for name, raw in files.items():
            if name == victim and gone:
                continue
            os.makedirs(os.path.dirname(os.path.join(tmp, name)), exist_ok=True)
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(bad if name == victim else raw)
        try:
            with within(10):
                storage = SegmentStorage(tmp, OPTIONS)
        except PROJECT_ERRORS as exc:
            note(type(exc).__name__)
            return
        try:
            hard_state, meta = storage.initial_state()
            snapshot = storage.load_snapshot()
            first, last = storage.first_index(), storage.last_index()
            found = as_tuples(storage.entries(first, last + 1))
        finally:
            storage.close()
    assert (hard_state.term, hard_state.vote) in ((HARD_STATE.term, HARD_STATE.vote), (0, ""))
    assert meta.index in (0, *SNAPSHOTS) and first == meta.index + 1
    if meta.index:
        assert snapshot.meta == meta == SnapshotMeta(meta.index, versions[-1][meta.index - 1][0], MEMBERS)
        assert snapshot.data == SNAPSHOTS[meta.index]
    assert any(found == v[first - 1 : first - 1 + len(found)] for v in versions), \
        "a damaged data dir yielded log entries never written"
    note(f"opened: snapshot {meta.index}, entries {first}..{last}")
