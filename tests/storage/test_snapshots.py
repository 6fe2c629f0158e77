"""SnapshotStore: zstd snapshot files with a checksummed header, kept N at a time."""
from __future__ import annotations

import logging
import os
import struct
import time
import tracemalloc
from pathlib import Path

import pytest
import zstandard

from keyval.errors import CorruptSnapshot
from keyval.raft.types import Membership, SnapshotMeta
from keyval_plugins.storage import snapshots
from keyval_plugins.storage.snapshots import FORMAT_VERSION, SnapshotStore, SnapshotTooNew

MEMBERS = Membership(frozenset({"n1", "n2", "n3"}), frozenset({"n4"}), (("n1", "10.0.0.1:7000"),), "cluster-1")


def meta(index: int, term: int = 1) -> SnapshotMeta:
    return SnapshotMeta(index, term, MEMBERS)


def data_for(index: int) -> bytes:
    return f"state as of {index};".encode() * 200


def chunks(total: int, size: int = 64 << 10):
    """``total`` bytes of not-too-compressible data, made on the fly."""
    block = os.urandom(size // 4) * 4
    for start in range(0, total, size):
        yield block[: min(size, total - start)]


def body_offset(path: Path) -> int:
    return struct.unpack_from("<I", path.read_bytes(), 10)[0]


def flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x40
    path.write_bytes(bytes(raw))


@pytest.fixture
def store(tmp_path) -> SnapshotStore:
    return SnapshotStore(str(tmp_path / "snap"))


def files(store: SnapshotStore) -> list[Path]:
    return sorted(store.directory.iterdir())


def test_empty_directory_has_no_snapshot(store):
    assert store.list() == []
    assert store.newest_meta() is None
    assert store.load_newest() is None


def test_large_streamed_iterable_round_trips_without_buffering_it(store):
    total = 32 << 20
    tracemalloc.start()
    try:
        info = store.save(meta(1000, 7), chunks(total))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The data is compressed as it streams: Python holds a chunk at a time, never the whole.
    assert peak < 8 << 20, f"save held {peak} bytes for a {total}-byte stream"
    snap = store.load_newest()
    assert snap.meta == meta(1000, 7)
    assert len(snap.data) == total
    assert snap.data == b"".join(chunks_like(snap.data[: 64 << 10], total))
    assert info.index == 1000 and info.term == 7
    assert info.size == files(store)[0].stat().st_size < total // 3


def chunks_like(first_chunk: bytes, total: int):
    # chunks() repeats one random block; rebuild the expected stream from the first chunk.
    for start in range(0, total, len(first_chunk)):
        yield first_chunk[: min(len(first_chunk), total - start)]


def test_bytes_and_empty_data_round_trip(store):
    store.save(meta(5), b"")
    assert store.load_newest().data == b""
    store.save(meta(6), bytearray(b"abc"))
    snap = store.load_newest()
    assert snap.data == b"abc" and snap.meta == meta(6)


def test_a_snapshot_without_a_configuration_round_trips(store):
    store.save(SnapshotMeta(5, 1), b"state")
    assert store.newest_meta() == SnapshotMeta(5, 1)
    assert store.load_newest().meta == SnapshotMeta(5, 1)


def test_keeps_the_newest_two_by_default(store):
    for index in (10, 20, 30, 40):
        store.save(meta(index), data_for(index))
    assert [i.index for i in store.list()] == [30, 40]
    assert len(files(store)) == 2


def test_keep_n(tmp_path):
    store = SnapshotStore(str(tmp_path), keep=3)
    for index in range(1, 7):
        store.save(meta(index), data_for(index))
    assert [i.index for i in store.list()] == [4, 5, 6]
    with pytest.raises(ValueError):
        SnapshotStore(str(tmp_path), keep=0)


def test_list_is_oldest_first_by_index_then_term(tmp_path):
    store = SnapshotStore(str(tmp_path), keep=10)
    before = time.time()
    for index, term in [(10, 3), (9, 5), (10, 2), (100, 1)]:
        store.save(meta(index, term), data_for(index))
    infos = store.list()
    assert [(i.index, i.term) for i in infos] == [(9, 5), (10, 2), (10, 3), (100, 1)]
    assert store.newest_meta() == meta(100, 1)
    for info in infos:
        assert before <= info.created <= time.time()
        assert info.size == store._path(info.index, info.term).stat().st_size
    assert store.load(infos[1]).meta == meta(10, 2)


def test_newest_meta_reads_only_the_header(store, monkeypatch):
    store.save(meta(10, 2), data_for(10))
    newest = files(store)[-1]
    flip(newest, newest.stat().st_size - 5)  # damage the body only

    def no_decompression(*args, **kwargs):
        raise AssertionError("newest_meta decompressed the body")

    monkeypatch.setattr(zstandard, "ZstdDecompressor", no_decompression)
    assert store.newest_meta() == meta(10, 2)


def test_flipped_byte_in_body_is_detected_and_the_older_one_loaded(store, caplog):
    store.save(meta(10), data_for(10))
    store.save(meta(20), data_for(20))
    newest = files(store)[-1]
    flip(newest, body_offset(newest) + (newest.stat().st_size - body_offset(newest)) // 2)
    with pytest.raises(CorruptSnapshot, match="snapshot-0+20-"):
        store.load(newest)
    with caplog.at_level(logging.WARNING, logger=snapshots.__name__):
        snap = store.load_newest()
    assert snap.meta == meta(10) and snap.data == data_for(10)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0] and newest.name in warnings[0]
    # Once found damaged, the header alone is no longer believed either.
    assert store.newest_meta() == meta(10)


@pytest.mark.parametrize("where", ["magic", "index", "membership", "header crc"])
def test_flipped_byte_in_header_is_detected(store, where):
    store.save(meta(10), data_for(10))
    path = files(store)[0]
    offsets = {"magic": 1, "index": 14, "membership": 50, "header crc": body_offset(path) - 1}
    flip(path, offsets[where])
    with pytest.raises(CorruptSnapshot):
        store.load(path)
    assert store.load_newest() is None
    assert store.newest_meta() is None


def test_a_bad_checksum_is_caught_even_when_zstd_is_happy(store):
    # Rewrite the body as a valid zstd frame of different data: only our crc can tell.
    store.save(meta(10), data_for(10))
    path = files(store)[0]
    raw = path.read_bytes()
    forged = bytearray(data_for(10))
    forged[0] ^= 1
    path.write_bytes(raw[: body_offset(path)] + zstandard.ZstdCompressor().compress(bytes(forged)))
    with pytest.raises(CorruptSnapshot, match="checksum"):
        store.load(path)


@pytest.mark.parametrize("cut", ["empty", "mid header", "mid body", "zstd checksum", "last byte"])
def test_truncated_file_is_detected(store, cut):
    store.save(meta(10), data_for(10))
    store.save(meta(20), data_for(20))
    newest = files(store)[-1]
    raw = newest.read_bytes()
    body = body_offset(newest)
    keep = {"empty": 0, "mid header": body // 2, "mid body": (body + len(raw)) // 2,
            # the frame ends in a 4-byte content checksum: the data itself is all there
            "zstd checksum": len(raw) - 4, "last byte": len(raw) - 1}[cut]
    newest.write_bytes(raw[:keep])
    with pytest.raises(CorruptSnapshot):
        store.load(newest)
    assert store.load_newest().meta == meta(10)


def test_trailing_bytes_are_detected(store):
    store.save(meta(10), data_for(10))
    path = files(store)[0]
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(CorruptSnapshot, match="trailing"):
        store.load(path)


def test_header_and_name_must_agree(store):
    store.save(meta(10, 2), data_for(10))
    path = files(store)[0]
    path.rename(store._path(30, 2))
    with pytest.raises(CorruptSnapshot, match="header says index 10"):
        store.load(store._path(30, 2))


def test_unknown_future_format_version_is_refused_not_skipped(store):
    store.save(meta(10), data_for(10))
    store.save(meta(20), data_for(20))
    newest = files(store)[-1]
    raw = bytearray(newest.read_bytes())
    struct.pack_into("<H", raw, 8, FORMAT_VERSION + 1)
    newest.write_bytes(bytes(raw))
    with pytest.raises(SnapshotTooNew, match=f"format version {FORMAT_VERSION + 1} is newer"):
        store.load(newest)
    # Falling back to the older snapshot would run the node on state older than it had.
    with pytest.raises(SnapshotTooNew, match="upgrade KeyVal"):
        store.load_newest()
    with pytest.raises(SnapshotTooNew):
        store.newest_meta()


def test_temp_files_from_a_crash_are_removed_on_open(tmp_path):
    directory = tmp_path / "snap"
    store = SnapshotStore(str(directory))
    store.save(meta(10), data_for(10))
    leftover = directory / ".tmp-snapshot-abc123.tmp"
    leftover.write_bytes(b"half a snapshot")
    assert [i.index for i in store.list()] == [10]  # never mistaken for a snapshot
    reopened = SnapshotStore(str(directory))
    assert not leftover.exists()
    assert reopened.load_newest().data == data_for(10)


def test_a_failed_save_leaves_nothing_behind(store):
    store.save(meta(10), data_for(10))

    def broken():
        yield b"some state"
        raise RuntimeError("state machine went away")

    with pytest.raises(RuntimeError):
        store.save(meta(20), broken())
    assert [p.name for p in files(store)] == [store._path(10, 1).name]
    assert store.load_newest().meta == meta(10)


def test_saving_the_same_index_and_term_replaces_it(store):
    store.save(meta(10), b"first")
    store.save(meta(10), b"second")
    assert len(store.list()) == 1
    assert store.load_newest().data == b"second"


def test_load_of_a_missing_file_is_a_corrupt_snapshot(store, tmp_path):
    with pytest.raises(CorruptSnapshot, match="no such file"):
        store.load(tmp_path / "nothing.snap")
