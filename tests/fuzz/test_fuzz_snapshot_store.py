"""Fuzzing the snapshot store's reader (plugins/storage/snapshots.py).

Every file starts as what ``SnapshotStore.save`` wrote. Safety: a damaged snapshot is never
loaded as valid — ``load`` raises CorruptSnapshot or returns exactly what was saved, and
``load_newest`` falls back to the older snapshot, whole. "Resealed" damage recomputes the
header checksum after the edit (a stranger's file): then only the errors are checked.
"""
from __future__ import annotations

import os
import struct
import tempfile
import tracemalloc
import zlib
from pathlib import Path

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from fuzz_mutations import PROJECT_ERRORS, damaged, note, strange_bytes, within
from keyval.errors import CorruptSnapshot
from keyval.raft.types import Membership, Snapshot, SnapshotMeta
from keyval_plugins.storage.snapshots import MAGIC, SnapshotStore, SnapshotTooNew

FUZZ = settings.get_profile("keyval-fuzz")
MEMBERS = Membership(frozenset({"n1", "n2", "n3"}), frozenset({"n4"}), (("n1", "10.0.0.1:7000"),), "c-1")
OLDER = Snapshot(SnapshotMeta(10, 2, MEMBERS), b"the state at 10;" * 40)
NEWER = Snapshot(SnapshotMeta(20, 3, MEMBERS), bytes(range(256)) * 3 + b"the state at 20;" * 40)
#: prefix (magic, version, header length), then index, term, size, data crc, created, membership length
HEADER_FIELDS = [8, 10, 14, 22, 30, 38, 42, 50, 54]
NESTING = (b"[", b'{"voters":', b"(")


def saved(directory: str, *snapshots: Snapshot) -> SnapshotStore:
    store = SnapshotStore(directory, keep=2)
    for snap in snapshots:
        store.save(snap.meta, snap.data)
    return store


@pytest.fixture(scope="module")
def snapshot_file() -> tuple[str, bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        saved(tmp, NEWER)
        [path] = Path(tmp).iterdir()
        return path.name, path.read_bytes()


def header_length(raw: bytes) -> int:
    return struct.unpack_from("<I", raw, 10)[0]


def reseal(raw: bytes) -> bytes:
    """``raw`` with its header checksum recomputed over the header its length field claims."""
    end = header_length(raw) if len(raw) >= 14 else 0
    if not 18 <= end <= len(raw):
        return raw
    buf = bytearray(raw)
    struct.pack_into("<I", buf, end - 4, zlib.crc32(buf[: end - 4]))
    return bytes(buf)


def loaded(directory: str, name: str, raw: bytes) -> Snapshot:
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        f.write(raw)
    with within(5):
        return SnapshotStore(directory).load(path)


@settings(FUZZ)
@given(data=st.data())
def test_a_damaged_snapshot_is_refused_or_loaded_exactly_as_saved(snapshot_file, data):
    name, raw = snapshot_file
    bad = data.draw(damaged(raw, HEADER_FIELDS + [header_length(raw) - 4, header_length(raw)], NESTING))
    with tempfile.TemporaryDirectory() as tmp:
        try:
            snap = loaded(tmp, name, bad)
        except PROJECT_ERRORS as exc:
            note(type(exc).__name__)
            return
    assert snap == NEWER, "a damaged snapshot was loaded as valid"


@settings(FUZZ)
@given(data=st.data())
def test_a_resealed_snapshot_header_is_refused_or_holds_the_saved_data(snapshot_file, data):
    name, raw = snapshot_file
    end = header_length(raw)
    head = data.draw(damaged(raw[:end], HEADER_FIELDS + [end - 4], NESTING))
    with tempfile.TemporaryDirectory() as tmp:
        try:
            snap = loaded(tmp, name, reseal(head + raw[end:]))
        except PROJECT_ERRORS as exc:
            note(type(exc).__name__)
            return
    # The header is forged, the body is not: its size and crc still guard the data.
    assert snap.data == NEWER.data and (snap.meta.index, snap.meta.term) == (20, 3)


@settings(FUZZ)
@given(raw=strange_bytes(MAGIC))
def test_strange_bytes_as_a_snapshot_are_refused(raw):
    with tempfile.TemporaryDirectory() as tmp:
        with pytest.raises(CorruptSnapshot):
            loaded(tmp, "snapshot-00000000000000000020-00000000000000000003.snap", raw)


@settings(FUZZ, max_examples=max(1, FUZZ.max_examples // 2))
@given(data=st.data(), resealed=st.booleans())
def test_the_store_falls_back_past_a_damaged_newest_snapshot_to_a_whole_one(data, resealed):
    with tempfile.TemporaryDirectory() as tmp:
        store = saved(tmp, OLDER, NEWER)
        newest = sorted(Path(tmp).iterdir())[-1]
        raw = newest.read_bytes()
        bad = data.draw(damaged(raw, HEADER_FIELDS + [header_length(raw) - 4], NESTING))
        newest.write_bytes(reseal(bad) if resealed else bad)
        store = SnapshotStore(tmp)
        with within(5):
            try:
                listed = store.list()
                meta = store.newest_meta()
                snap = store.load_newest()
            except SnapshotTooNew:
                note("SnapshotTooNew")  # refused, not skipped: it may hold newer state
                return
        assert len(listed) == 2
        if resealed:  # the header is forged, the body is not: its size and crc still guard the data
            assert snap == OLDER or (snap.data, snap.meta.index) == (NEWER.data, 20)
        else:
            assert meta in (OLDER.meta, NEWER.meta) and snap in (OLDER, NEWER)
        note("fell back" if snap == OLDER else "newest loaded")


# -- lengths that would take the memory ---------------------------------------------------------
def forged_header(size: int) -> bytes:
    """A well-formed header for NEWER's meta claiming ``size`` bytes of data."""
    members = MEMBERS.encode()
    header_len = 14 + 40 + len(members) + 4
    head = (struct.pack("<8sHI", MAGIC, 1, header_len) + struct.pack("<QQQIdI", 20, 3, size, 0, 0.0, len(members))
            + members)
    return head + struct.pack("<I", zlib.crc32(head))


def test_a_header_claiming_a_tiny_size_cannot_inflate_a_zstd_bomb(tmp_path):
    # 256 MiB of zeros compress to a few KiB; the header says 10 bytes. The reader may inflate
    # 8 MiB past a claimed size (plugins/storage/snapshots.py, _MIN_FEED), not the whole bomb.
    compressor = zstandard.ZstdCompressor(level=1).compressobj()
    bomb = b"".join(compressor.compress(bytes(1 << 20)) for _ in range(256)) + compressor.flush()
    assert len(bomb) < 64 << 10
    name = "snapshot-00000000000000000020-00000000000000000003.snap"
    tracemalloc.start()
    try:
        with pytest.raises(CorruptSnapshot, match="longer than its header says"):
            loaded(str(tmp_path), name, forged_header(10) + bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"{peak >> 20} MiB held to refuse a 10-byte snapshot"


def test_a_header_claiming_a_huge_size_allocates_only_what_is_there(tmp_path):
    name = "snapshot-00000000000000000020-00000000000000000003.snap"
    body = zstandard.ZstdCompressor(write_checksum=True).compress(NEWER.data)
    tracemalloc.start()
    try:
        with pytest.raises(CorruptSnapshot, match="header says"):
            loaded(str(tmp_path), name, forged_header(2**64 - 1) + body)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20
