"""The segment backend's log: appends, reads, rotation, truncation, compaction, hard state.

Real files in tmp_path, real fsync. Tiny segment sizes make a few hundred entries span
many segment files.
"""
from __future__ import annotations

import os

import pytest

from keyval.raft.storage import Compacted, Unavailable, limit_size
from keyval.raft.types import Entry, EntryType, HardState, Membership, Snapshot, SnapshotMeta
from keyval_plugins.storage.segment.format import SEGMENT_HEADER, decode_segment_header
from keyval_plugins.storage.segment.hardstate import HardStateFile
from keyval_plugins.storage.segment.options import SegmentOptions
from keyval_plugins.storage.segment.storage import SegmentStorage

MEMBERS = Membership(frozenset({"a", "b", "c"}))


def data_for(index: int, term: int, size: int = 100) -> bytes:
    label = f"<{index}:{term}>".encode()
    return (label * (size // len(label) + 1))[:size]


def run(lo: int, hi: int, term: int = 1, size: int = 100) -> list[Entry]:
    """Entries lo..hi inclusive."""
    return [Entry(term, i, EntryType.NORMAL, data_for(i, term, size)) for i in range(lo, hi + 1)]


def open_store(path, **options) -> SegmentStorage:
    return SegmentStorage(str(path), SegmentOptions(**options))


def on_disk(path) -> HardState:
    """The hard state a crash right now would leave."""
    return HardStateFile(str(path)).load()


def segment_files(path) -> list[str]:
    return sorted(os.listdir(path / "log"))


def first_indexes(path) -> list[int]:
    return [int(name[:-4]) for name in segment_files(path)]


def append_in_batches(store, entries, batch=5):
    for k in range(0, len(entries), batch):
        store.append(entries[k : k + batch])


def test_append_read_and_term(tmp_path):
    store = open_store(tmp_path)
    config = Entry(1, 3, EntryType.CONFIG, MEMBERS.encode())
    batch = run(1, 2) + [config] + run(4, 10, term=2, size=0)
    store.append(batch)
    assert (store.first_index(), store.last_index()) == (1, 10)
    assert store.entries(1, 11) == batch
    assert [store.term(i) for i in range(11)] == [0, 1, 1, 1] + [2] * 7
    assert store.entries(3, 4)[0].type is EntryType.CONFIG
    with pytest.raises(Unavailable):
        store.term(11)
    with pytest.raises(Compacted):
        store.entries(0, 2)
    store.close()


def test_group_commit_one_fdatasync_for_many_appends(tmp_path, monkeypatch):
    import keyval_plugins.storage.segment.log as segment_log

    store = open_store(tmp_path)
    calls = []
    real = segment_log.datasync
    monkeypatch.setattr(segment_log, "datasync", lambda fd: (calls.append(fd), real(fd)))
    for lo in range(1, 100, 10):
        store.append(run(lo, lo + 9))
    assert calls == []  # appends never wait for the disk
    store.sync()
    assert len(calls) == 1
    store.sync()  # nothing new: no flush
    assert len(calls) == 1
    store.close()


def test_reads_from_files_match_reads_from_the_cache(tmp_path):
    entries = run(1, 300, size=37) + run(301, 400, term=2, size=500)
    cached = open_store(tmp_path / "a", segment_size=4096)
    uncached = open_store(tmp_path / "b", segment_size=4096, cache_bytes=0)
    for store in (cached, uncached):
        append_in_batches(store, entries, batch=7)
    for lo, hi in [(1, 401), (1, 2), (150, 151), (299, 305), (390, 401)]:
        assert cached.entries(lo, hi) == uncached.entries(lo, hi) == entries[lo - 1 : hi - 1]
    for max_bytes in (0, 100, 1000, 20_000):
        assert uncached.entries(290, 401, max_bytes) == limit_size(entries[289:], max_bytes)
    cached.close()
    uncached.close()


def test_small_cache_serves_recent_entries_and_files_the_rest(tmp_path):
    store = open_store(tmp_path, segment_size=8192, cache_bytes=3000)
    entries = run(1, 500)
    append_in_batches(store, entries, batch=3)
    assert 0 < len(store._log.cache) < 100
    assert store.entries(1, 501) == entries
    store.close()


def test_rotation_names_segments_by_first_index(tmp_path):
    store = open_store(tmp_path, segment_size=1024)
    append_in_batches(store, run(1, 100), batch=4)
    store.sync()
    firsts = first_indexes(tmp_path)
    assert len(firsts) > 5 and firsts[0] == 1
    for name, first in zip(segment_files(tmp_path), firsts):
        with open(tmp_path / "log" / name, "rb") as f:
            assert decode_segment_header(name, f.read(SEGMENT_HEADER.size)) == first
    # Each segment rotates only once it reached the size: one batch may overshoot it.
    sizes = [os.path.getsize(tmp_path / "log" / name) for name in segment_files(tmp_path)[:-1]]
    assert all(1024 <= size < 1024 + 4 * 200 for size in sizes)
    store.close()


def test_truncation_across_segments_deletes_later_files(tmp_path):
    store = open_store(tmp_path, segment_size=1024)
    append_in_batches(store, run(1, 100), batch=4)
    store.sync()
    before = first_indexes(tmp_path)
    store.append(run(23, 25, term=2))  # 23 is mid-block (blocks start at 1, 5, 9, ...)
    after = first_indexes(tmp_path)
    assert after == [f for f in before if f <= 23]
    assert store.last_index() == 25
    assert store.entries(1, 26) == run(1, 22) + run(23, 25, term=2)
    append_in_batches(store, run(26, 60, term=2), batch=4)
    store.close()
    store = open_store(tmp_path, segment_size=1024)
    assert store.entries(1, 61) == run(1, 22) + run(23, 60, term=2)
    store.close()


def test_truncation_at_a_segment_boundary_and_at_a_block_boundary(tmp_path):
    store = open_store(tmp_path, segment_size=1024)
    append_in_batches(store, run(1, 100), batch=4)
    boundary = first_indexes(tmp_path)[3]
    store.append(run(boundary, boundary, term=2))
    assert first_indexes(tmp_path)[-1] == boundary
    store.append(run(boundary - 4, boundary - 3, term=3))  # the first entry of a block
    expected = run(1, boundary - 5) + run(boundary - 4, boundary - 3, term=3)
    assert store.entries(1, boundary - 2) == expected
    store.close()
    store = open_store(tmp_path, segment_size=1024)
    assert store.entries(1, store.last_index() + 1) == expected
    store.close()


def test_repeated_truncations_inside_one_block_survive_reopen(tmp_path):
    store = open_store(tmp_path)
    store.append(run(1, 20))
    store.append(run(15, 17, term=2))  # supersedes 15..20 of the first block
    store.append(run(16, 18, term=3))  # ... and 16..17 of the second
    store.append(run(12, 12, term=4))  # back into the first block: cuts the later two
    expected = run(1, 11) + run(12, 12, term=4)
    assert store.entries(1, 13) == expected
    store.close()
    store = open_store(tmp_path)
    assert store.entries(1, 13) == expected and store.last_index() == 12
    store.close()


def test_compaction_deletes_only_whole_segments_below_the_index(tmp_path):
    store = open_store(tmp_path, segment_size=1024)
    append_in_batches(store, run(1, 200), batch=4)
    firsts = first_indexes(tmp_path)
    store.create_snapshot(150, MEMBERS, b"state")
    store.compact(120)
    # A segment goes only when all its entries are <= 120; the one holding 121 stays.
    kept = [f for k, f in enumerate(firsts) if k == len(firsts) - 1 or firsts[k + 1] - 1 > 120]
    assert first_indexes(tmp_path) == kept and kept[0] <= 121
    assert store.first_index() == 121 and store.term(120) == 1
    assert store.entries(121, 201) == run(121, 200)
    with pytest.raises(Compacted):
        store.entries(120, 121)
    store.close()
    # Compaction is not persisted: reopening compacts to the snapshot.
    store = open_store(tmp_path, segment_size=1024)
    assert store.first_index() == 151 and store.term(150) == 1
    assert store.entries(151, 201) == run(151, 200)
    assert first_indexes(tmp_path)[0] <= 151 < first_indexes(tmp_path)[1]
    store.close()


def test_compacting_everything_keeps_the_active_segment(tmp_path):
    store = open_store(tmp_path, segment_size=1024)
    append_in_batches(store, run(1, 50), batch=4)
    store.create_snapshot(50, MEMBERS, b"all")
    store.compact(50)
    assert (store.first_index(), store.last_index()) == (51, 50)
    assert len(segment_files(tmp_path)) == 1
    store.append(run(51, 60, term=2))
    store.close()
    store = open_store(tmp_path, segment_size=1024)
    assert store.entries(51, 61) == run(51, 60, term=2)
    store.close()


def test_apply_snapshot_resets_a_log_spanning_segments(tmp_path):
    store = open_store(tmp_path, segment_size=1024)
    append_in_batches(store, run(1, 100), batch=4)
    store.apply_snapshot(Snapshot(SnapshotMeta(80, 5, MEMBERS), b"leader"))
    assert segment_files(tmp_path) == []
    store.append(run(81, 90, term=5))
    assert first_indexes(tmp_path) == [81]
    store.close()
    store = open_store(tmp_path, segment_size=1024)
    assert (store.first_index(), store.last_index(), store.term(80)) == (81, 90, 5)
    assert store.entries(81, 91) == run(81, 90, term=5)
    store.close()


def test_reopen_preserves_everything_synced(tmp_path):
    store = open_store(tmp_path, segment_size=4096)
    entries = run(1, 300, term=1, size=50) + run(301, 600, term=3, size=150)
    append_in_batches(store, entries, batch=13)
    store.set_hard_state(HardState(3, "b", 590))
    meta = store.create_snapshot(250, MEMBERS, [b"chunk"] * 100)
    store.sync()
    store.close()
    store = open_store(tmp_path, segment_size=4096)
    assert store.initial_state() == (HardState(3, "b", 590), meta)
    assert store.load_snapshot() == Snapshot(meta, b"chunk" * 100)
    assert (store.first_index(), store.last_index()) == (251, 600)
    assert store.entries(251, 601) == entries[250:]
    store.close()


def test_closed_storage_refuses_writes(tmp_path):
    store = open_store(tmp_path)
    store.close()
    store.close()  # harmless
    with pytest.raises(Exception, match="closed"):
        store.append(run(1, 1))


# -- hard state ---------------------------------------------------------------------------
def test_hard_state_term_and_vote_are_written_at_once(tmp_path):
    store = open_store(tmp_path)
    store.set_hard_state(HardState(4, "c", 0))
    assert on_disk(tmp_path) == HardState(4, "c", 0)
    store.close()


def test_a_stray_temp_file_leaves_the_old_hard_state(tmp_path):
    store = open_store(tmp_path)
    store.set_hard_state(HardState(2, "a", 0))
    store.close()
    # A crash between writing the temp file and the rename leaves just this behind.
    (tmp_path / "hardstate.tmp").write_bytes(b"KVHS half a new hard st")
    store = open_store(tmp_path)
    assert store.initial_state()[0] == HardState(2, "a", 0)
    store.set_hard_state(HardState(3, "b", 0))
    store.close()
    assert not (tmp_path / "hardstate.tmp").exists()
    assert on_disk(tmp_path) == HardState(3, "b", 0)


def test_commit_alone_is_written_lazily_and_never_past_the_durable_log(tmp_path):
    store = open_store(tmp_path)
    store.append(run(1, 10))
    store.set_hard_state(HardState(1, "a", 8))  # entries not synced yet: commit held back
    assert on_disk(tmp_path).commit == 0
    store.sync()
    store.set_hard_state(HardState(1, "a", 10))  # commit only: no write now
    assert on_disk(tmp_path) == HardState(1, "a", 0)
    store.close()  # close writes it
    assert on_disk(tmp_path) == HardState(1, "a", 10)
