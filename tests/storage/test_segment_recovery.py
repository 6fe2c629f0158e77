"""Opening a segment log after damage: torn tails are cut; damage cuts the log before it,
sets the damaged files aside, and the durable watermark reports what was lost.

The rule under test (plugins/storage/segment/format.py, ``scan_segment``): a bad block in the
last segment is a torn tail unless a valid block after it records that the bad bytes had
already been fsynced; a bad block anywhere else is damage. Either way, a log that ends below
the watermark lost entries that were durable, and the node re-fetches them (RaftCore).
"""
from __future__ import annotations

import logging
import os
import re
import struct
import zlib

import pytest

from keyval.errors import CorruptLog, StorageError
from keyval.raft.types import Entry, EntryType, HardState, Membership, SnapshotMeta
from keyval_plugins.storage.segment.format import BLOCK_HEADER, BLOCK_MAGIC, SEGMENT_HEADER, UnsupportedFormat
from keyval_plugins.storage.segment.options import SegmentOptions
from keyval_plugins.storage.segment.storage import SegmentStorage
from keyval_plugins.storage.snapshots import SnapshotStore

MEMBERS = Membership(frozenset({"a"}))


def run(lo: int, hi: int, term: int = 1, size: int = 100) -> list[Entry]:
    return [Entry(term, i, EntryType.NORMAL, (f"[{i}/{term}]".encode() * size)[:size]) for i in range(lo, hi + 1)]


def open_store(path, **options) -> SegmentStorage:
    return SegmentStorage(str(path), SegmentOptions(**options))


def segments(path) -> list:
    return sorted((path / "log").iterdir())


def block_offsets(file) -> list[int]:
    """Offsets of the blocks in a segment file, walking the headers."""
    raw = file.read_bytes()
    offsets, off = [], SEGMENT_HEADER.size
    while off + BLOCK_HEADER.size <= len(raw) and raw[off : off + 4] == BLOCK_MAGIC:
        offsets.append(off)
        off += BLOCK_HEADER.size + BLOCK_HEADER.unpack_from(raw, off)[2]
    return offsets


def write_log(path, batches, sync_each=True, **options) -> None:
    store = open_store(path, **options)
    for batch in batches:
        store.append(batch)
        if sync_each:
            store.sync()
    store.close()


def flip_byte(file, offset: int) -> None:
    with open(file, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x40]))


# -- torn tails ------------------------------------------------------------------------------
@pytest.mark.parametrize("garbage", [b"", b"\x00" * 3000, os.urandom(700)], ids=["cut", "zeros", "garbage"])
def test_a_torn_tail_is_cut_with_one_log_line(tmp_path, caplog, garbage):
    write_log(tmp_path, [run(1, 10), run(11, 20), run(21, 30)])
    [file] = segments(tmp_path)
    last_block = block_offsets(file)[-1]
    with open(file, "r+b") as f:
        f.truncate(last_block + 57)  # mid-record
        f.seek(0, os.SEEK_END)
        f.write(garbage)
    size = file.stat().st_size
    with caplog.at_level(logging.INFO, logger="keyval_plugins.storage.segment"):
        store = open_store(tmp_path)
    assert store.last_index() == 20
    assert store.entries(1, 21) == run(1, 10) + run(11, 20)
    assert file.stat().st_size == last_block
    [line] = [r.getMessage() for r in caplog.records if "cut a torn tail" in r.getMessage()]
    assert f"{size - last_block} bytes" in line and str(file) in line
    # The cut block had been synced: the watermark says so (the node logs the loss).
    assert store.durable_watermark() == (30, 1)
    store.append(run(21, 22, term=2))  # and the log goes on from the cut
    store.close()
    assert open_store(tmp_path).entries(19, 23) == run(19, 20) + run(21, 22, term=2)


def test_unsynced_blocks_persisted_out_of_order_are_a_torn_tail(tmp_path, caplog):
    # Two appends without a sync between them: a crash may keep the second block's page
    # and lose the first's. Nothing there was reported durable, so it is a torn tail.
    write_log(tmp_path, [run(1, 10)])
    store = open_store(tmp_path)
    store.append(run(11, 20))
    store.append(run(21, 30))  # the process dies here: no sync, no close
    [file] = segments(tmp_path)
    first, second, third = block_offsets(file)
    with open(file, "r+b") as f:
        f.seek(second)
        f.write(b"\x00" * (third - second))
    with caplog.at_level(logging.WARNING, logger="keyval_plugins.storage.segment"):
        store = open_store(tmp_path)
    assert store.last_index() == 10
    assert any("cut a torn tail" in r.getMessage() for r in caplog.records)
    # Never synced, never acknowledged: nothing lost.
    assert store.durable_watermark() == (10, 1)
    store.close()


# -- damage: the log is cut before it, the rest set aside, and the loss reported ----------------
def open_damaged(path, caplog, **options) -> tuple[SegmentStorage, str]:
    """Open a damaged log; the store and the one ERROR line that describes the damage."""
    with caplog.at_level(logging.WARNING, logger="keyval_plugins.storage.segment"):
        store = open_store(path, **options)
    [line] = [r.getMessage() for r in caplog.records if "the Raft log is damaged" in r.getMessage()]
    return store, line


def test_a_flipped_byte_mid_log_cuts_the_log_there_and_reports_the_loss(tmp_path, caplog):
    write_log(tmp_path, [run(1, 10), run(11, 20), run(21, 30)])
    [file] = segments(tmp_path)
    original = file.read_bytes()
    second = block_offsets(file)[1]
    flip_byte(file, second + BLOCK_HEADER.size + 200)
    store, line = open_damaged(tmp_path, caplog)
    assert f"{file} at byte {second}: block checksum mismatch" in line and "kept the log up to index 10" in line
    assert (store.last_index(), store.durable_watermark()) == (10, (30, 1))
    assert store.entries(1, 11) == run(1, 10)
    # The damaged bytes are kept aside for an operator; the live file ends before them.
    assert file.with_name(file.name + ".damaged").read_bytes()[: second + 200] == original[: second + 200]
    assert file.stat().st_size == second
    store.close()


def test_a_flipped_byte_in_an_earlier_segment_sets_it_and_every_later_one_aside(tmp_path, caplog):
    write_log(tmp_path, [run(i, i + 3) for i in range(1, 80, 4)], segment_size=1024)
    files = segments(tmp_path)
    assert len(files) > 3
    victim = files[1]
    last_block = block_offsets(victim)[-1]
    flip_byte(victim, victim.stat().st_size - 1)  # the last byte of a non-last segment
    store, line = open_damaged(tmp_path, caplog, segment_size=1024)
    assert f"{victim} at byte {last_block}: block checksum mismatch" in line
    assert f"set {len(files) - 1} segment file(s) aside" in line
    assert store.durable_watermark() == (80, 1) and store.last_index() < 80
    assert [f.name for f in segments(tmp_path) if f.suffix == ".seg"] == [files[0].name, victim.name]
    assert all(f.with_name(f.name + ".damaged").exists() for f in files[1:])
    store.close()


def test_damage_to_the_last_synced_block_before_newer_writes_is_damage_not_a_torn_tail(tmp_path, caplog):
    # 21..30 was fsynced, then 31..40 written: the block after it proves it was durable.
    write_log(tmp_path, [run(1, 10), run(11, 20), run(21, 30)])
    write_log(tmp_path, [run(31, 40)], sync_each=False)
    [file] = segments(tmp_path)
    damaged = block_offsets(file)[2]
    flip_byte(file, damaged + 5)
    store, line = open_damaged(tmp_path, caplog)
    assert f"at byte {damaged}: block checksum mismatch; the valid block" in line
    assert (store.last_index(), store.durable_watermark()) == (20, (40, 1))
    store.close()


def test_a_valid_block_out_of_sequence_is_damage(tmp_path, caplog):
    write_log(tmp_path, [run(1, 10), run(11, 20)])
    [file] = segments(tmp_path)
    raw = bytearray(file.read_bytes())
    second = block_offsets(file)[1]
    # Re-frame the second block as starting at index 12, with a correct checksum.
    struct.pack_into("<Q", raw, second + 16, 12)
    struct.pack_into("<I", raw, second + 4, zlib.crc32(raw[second + 8 :]))
    file.write_bytes(bytes(raw))
    store, line = open_damaged(tmp_path, caplog)
    assert f"at byte {second}: block starts at index 12, expected 11" in line
    assert (store.last_index(), store.durable_watermark()) == (10, (20, 1))
    store.close()


def test_a_missing_segment_in_the_middle_ends_the_log_before_it(tmp_path, caplog):
    write_log(tmp_path, [run(i, i + 3) for i in range(1, 80, 4)], segment_size=1024)
    files = segments(tmp_path)
    files[2].unlink()
    store, line = open_damaged(tmp_path, caplog, segment_size=1024)
    assert re.search(rf"{files[3].name} at byte 0: starts at index \d+ but the log before it ends", line)
    assert store.last_index() == int(files[2].name[:-4]) - 1
    assert store.durable_watermark() == (80, 1)
    store.close()


def test_a_damaged_segment_header_sets_the_whole_file_aside(tmp_path, caplog):
    write_log(tmp_path, [run(1, 10)])
    [file] = segments(tmp_path)
    flip_byte(file, 17)  # inside the first index
    store, line = open_damaged(tmp_path, caplog)
    assert "segment header checksum mismatch; kept the log up to index 0" in line
    assert (store.last_index(), store.durable_watermark()) == (0, (10, 1))
    assert file.with_name(file.name + ".damaged").exists() and not file.exists()
    store.close()


def test_damage_in_a_data_dir_without_a_watermark_assumes_the_worst(tmp_path, caplog):
    # A data dir written before the watermark existed: the cut is still not a clean end.
    write_log(tmp_path, [run(1, 10), run(11, 20, term=3), run(21, 30, term=3)])
    (tmp_path / "watermark").unlink()
    store = open_store(tmp_path)
    store.set_hard_state(HardState(4, "a", 0))
    store.close()
    (tmp_path / "watermark").unlink()
    [file] = segments(tmp_path)
    flip_byte(file, block_offsets(file)[1] + BLOCK_HEADER.size + 10)
    store, _line = open_damaged(tmp_path, caplog)
    # Something after index 10 was durable, of a term up to the saved one.
    assert (store.last_index(), store.durable_watermark()) == (10, (11, 4))
    store.close()


# -- format versions -----------------------------------------------------------------------
def test_a_newer_segment_format_version_is_refused_clearly(tmp_path):
    write_log(tmp_path, [run(1, 10)])
    [file] = segments(tmp_path)
    with open(file, "r+b") as f:
        f.seek(8)
        f.write(struct.pack("<I", 2))  # header crc left stale: the version is checked first
    with pytest.raises(UnsupportedFormat, match=r"log format version 2, newer than this KeyVal reads \(up to 1\)"):
        open_store(tmp_path)


def test_a_newer_hard_state_format_version_is_refused(tmp_path):
    store = open_store(tmp_path)
    store.set_hard_state(HardState(1, "a", 0))
    store.close()
    raw = bytearray((tmp_path / "hardstate").read_bytes())
    struct.pack_into("<I", raw, 4, 9)
    (tmp_path / "hardstate").write_bytes(bytes(raw))
    with pytest.raises(UnsupportedFormat, match="version 9"):
        open_store(tmp_path)


def test_a_damaged_hard_state_is_refused(tmp_path):
    store = open_store(tmp_path)
    store.set_hard_state(HardState(1, "a", 0))
    store.close()
    flip_byte(tmp_path / "hardstate", 10)
    with pytest.raises(CorruptLog, match="hard state checksum mismatch"):
        open_store(tmp_path)


# -- the log against the snapshot ---------------------------------------------------------
def test_a_crash_while_installing_a_snapshot_is_finished_on_open(tmp_path, caplog):
    write_log(tmp_path, [run(1, 30)])
    # The snapshot was saved, then the crash came before the log was reset.
    SnapshotStore(str(tmp_path / "snapshots")).save(SnapshotMeta(20, 7, MEMBERS), b"leader")
    with caplog.at_level(logging.WARNING, logger="keyval_plugins.storage.segment"):
        store = open_store(tmp_path)
    assert (store.first_index(), store.last_index(), store.term(20)) == (21, 20, 7)
    assert any("discarding log entries 1..30" in r.getMessage() for r in caplog.records)
    store.close()


def test_a_log_starting_after_the_usable_snapshot_refuses_to_open(tmp_path):
    store = open_store(tmp_path, segment_size=1024)
    for i in range(1, 80, 4):
        store.append(run(i, i + 3))
    store.create_snapshot(10, MEMBERS, b"old")
    store.create_snapshot(60, MEMBERS, b"new")
    store.compact(60)
    store.close()
    newest = sorted((tmp_path / "snapshots").iterdir())[-1]
    flip_byte(newest, newest.stat().st_size - 3)
    with pytest.raises(StorageError, match=r"starts at index \d+ but the newest usable snapshot ends at index 10"):
        open_store(tmp_path, segment_size=1024)


def test_leftover_segment_temp_files_are_removed(tmp_path):
    write_log(tmp_path, [run(1, 5)])
    stray = tmp_path / "log" / "00000000000000000006.seg.tmp"
    stray.write_bytes(b"KVLOGSEG")
    store = open_store(tmp_path)
    assert not stray.exists() and store.last_index() == 5
    store.close()
