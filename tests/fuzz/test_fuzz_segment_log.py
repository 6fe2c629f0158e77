"""Fuzzing the segment log's readers: ``scan_segment`` on one file's bytes, ``SegmentLog``
opening a log directory, and the hard state file.

Every file starts as what the real writer (``SegmentLog``) left: blocks of one and of several
entries, a CONFIG entry, an empty entry, fsyncs between some appends, and a conflicting
suffix replaced by a superseding block. Safety where a checksum stands guard: a damaged file
yields an error or a log the writer really had at some point, cut at a torn tail — never an
entry that was not written. "Resealed" damage recomputes the checksums after the edit, as a
stranger would: then only the errors are checked (KeyVal's own, nothing else).
"""
from __future__ import annotations

import os
import struct
import tempfile
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fuzz_mutations import PROJECT_ERRORS, damaged, note, strange_bytes, within
from keyval.errors import CorruptLog
from keyval.raft.types import Entry, EntryType, HardState, Membership
from keyval.wire_bounds import MAX_STORED_INT
from keyval_plugins.storage.segment import hardstate
from keyval_plugins.storage.segment.format import (
    BLOCK_HEADER,
    SEGMENT_HEADER,
    SEGMENT_MAGIC,
    encode_segment_header,
    scan_segment,
    segment_header,
)
from keyval_plugins.storage.segment.log import SegmentLog

FUZZ = settings.get_profile("keyval-fuzz")
#: zeros kept after the last block of the active segment (the writer preallocates more;
#: fewer keep the fuzzer's edits on the blocks, and any run of zeros there is a clean end)
ZEROS_KEPT = 64


def _entries(lo: int, hi: int, term: int) -> list[Entry]:
    return [Entry(term, i, EntryType.NORMAL, f"v{i}/t{term}".encode() * (i % 3 + 1)) for i in range(lo, hi + 1)]


#: What the writer does: appends (a list of entries) and fsyncs (None).
PLAN = [
    [Entry(1, 1, EntryType.NORMAL, b"")],  # a new leader's empty entry
    None,
    _entries(2, 4, 1),
    [Entry(1, 5, EntryType.CONFIG, Membership(frozenset({"a", "b", "c"})).encode())],
    None,
    _entries(6, 9, 1),
    _entries(8, 9, 2),  # a conflicting suffix replaced: supersedes 8..9 of term 1
    None,
    _entries(10, 10, 2),
    _entries(11, 14, 3),
    None,
    _entries(15, 15, 3),  # not fsynced: the torn-tail candidate
]


def as_tuples(entries) -> list[tuple]:
    return [(e.term, e.index, int(e.type), bytes(e.data)) for e in entries]


def write_log(directory: str, segment_size: int) -> tuple[dict[str, bytes], list[list[tuple]]]:
    """Run PLAN through a real SegmentLog: the files' bytes as they are on disk before any
    close (the active one with preallocated zeros), and the log after each append."""
    log = SegmentLog(directory, segment_size, cache_bytes=0)
    versions = []
    for step in PLAN:
        if step is None:
            log.sync()
        else:
            log.append(step)
            versions.append(as_tuples(log.read(log.base, log.last_index() + 1)))
    files = {}
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name), "rb") as f:
            files[name] = f.read()
    log.close()
    last = max(files)
    files[last] = files[last][: _blocks_end(files[last]) + ZEROS_KEPT]
    return files, versions


def _blocks_end(raw: bytes) -> int:
    return _block_offsets(raw)[-1]


def _block_offsets(raw: bytes) -> list[int]:
    """Where each block starts, then where the last one ends (walking the headers)."""
    offsets, off = [SEGMENT_HEADER.size], SEGMENT_HEADER.size
    while off + BLOCK_HEADER.size <= len(raw) and raw[off : off + 4] == b"kvB\xa7":
        off += BLOCK_HEADER.size + BLOCK_HEADER.unpack_from(raw, off)[2]
        offsets.append(off)
    return offsets


def hot_offsets(raw: bytes) -> list[int]:
    """The header fields: the segment's version and first index, each block's crc, length,
    count, first index and synced end."""
    fields = [8, 16]
    for off in _block_offsets(raw)[:-1]:
        fields += [off, off + 4, off + 8, off + 12, off + 16, off + 24, off + BLOCK_HEADER.size]
    return fields


def reseal(raw: bytes) -> bytes:
    """``raw`` with every checksum recomputed over what it now covers."""
    buf = bytearray(raw)
    if len(buf) >= SEGMENT_HEADER.size:
        struct.pack_into("<I", buf, SEGMENT_HEADER.size - 4, zlib.crc32(buf[: SEGMENT_HEADER.size - 4]))
    off = SEGMENT_HEADER.size
    while off + BLOCK_HEADER.size <= len(buf):
        end = off + BLOCK_HEADER.size + BLOCK_HEADER.unpack_from(buf, off)[2]
        if end > len(buf):
            break
        struct.pack_into("<I", buf, off + 4, zlib.crc32(buf[off + 8 : end]))
        off = end
    return bytes(buf)


def is_a_prefix_of_a_version(found: list[tuple], versions: list[list[tuple]]) -> bool:
    return not found or any(found == v[: len(found)] for v in versions)


@pytest.fixture(scope="module")
def one_segment():
    with tempfile.TemporaryDirectory() as tmp:
        files, versions = write_log(tmp, segment_size=1 << 20)
    [(name, raw)] = files.items()
    return name, raw, versions


@pytest.fixture(scope="module")
def several_segments():
    with tempfile.TemporaryDirectory() as tmp:
        files, versions = write_log(tmp, segment_size=200)
    assert len(files) >= 4
    return files, versions


def scanned(path: str, raw: bytes, last: bool) -> list[tuple]:
    with within(5):
        scan = scan_segment(path, raw, last)
    assert SEGMENT_HEADER.size <= scan.end <= len(raw)
    columns = (scan.terms, scan.lens, scan.types, scan.pos, scan.blk)
    assert len({len(c) for c in columns}) == 1
    return [(scan.terms[k], scan.first + k, scan.types[k], raw[scan.pos[k] : scan.pos[k] + scan.lens[k]])
            for k in range(len(scan.terms))]


# -- scan_segment: one file's bytes -----------------------------------------------------------
@settings(FUZZ)
@given(data=st.data(), last=st.booleans())
def test_a_damaged_segment_scans_to_an_error_or_a_log_that_was_written(one_segment, data, last):
    name, raw, versions = one_segment
    bad = data.draw(damaged(raw, hot_offsets(raw)))
    try:
        found = scanned(name, bad, last)
    except PROJECT_ERRORS as exc:
        note(type(exc).__name__)
        return
    assert is_a_prefix_of_a_version(found, versions), "a damaged segment yielded entries never written"


@settings(FUZZ)
@given(data=st.data(), last=st.booleans())
def test_a_resealed_segment_scans_to_an_error_or_a_well_formed_log(one_segment, data, last):
    name, raw, _ = one_segment
    bad = reseal(data.draw(damaged(raw, hot_offsets(raw))))
    try:
        found = scanned(name, bad, last)
    except PROJECT_ERRORS as exc:
        note(type(exc).__name__)
        return
    indexes = [index for _, index, _, _ in found]
    assert indexes == list(range(indexes[0], indexes[0] + len(indexes))) if indexes else True


@settings(FUZZ)
@given(raw=strange_bytes(SEGMENT_MAGIC), last=st.booleans())
def test_strange_bytes_scan_to_an_error_or_a_well_formed_log(raw, last):
    try:
        scanned("strange.seg", raw, last)
    except PROJECT_ERRORS as exc:
        note(type(exc).__name__)


# -- SegmentLog: opening a directory of segment files -----------------------------------------
def open_and_read(directory: str) -> tuple[SegmentLog, list[tuple]]:
    with within(10):
        log = SegmentLog(directory, 200, cache_bytes=0)
        return log, as_tuples(log.read(log.base, log.last_index() + 1))


@settings(FUZZ, max_examples=max(1, FUZZ.max_examples // 2))
@given(data=st.data(), resealed=st.booleans())
def test_a_log_directory_with_a_damaged_segment_opens_to_an_error_or_a_log_that_was_written(
        several_segments, data, resealed):
    files, versions = several_segments
    victim = data.draw(st.sampled_from(sorted(files)))
    bad = data.draw(damaged(files[victim], hot_offsets(files[victim])))
    with tempfile.TemporaryDirectory() as tmp:
        for name, raw in files.items():
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(reseal(bad) if resealed and name == victim else bad if name == victim else raw)
        try:
            log, found = open_and_read(tmp)
        except PROJECT_ERRORS as exc:
            note(type(exc).__name__)
            return
        if resealed:
            log.close()
            return
        assert log.base == 1
        assert is_a_prefix_of_a_version(found, versions), "a damaged log yielded entries never written"
        # What opening cut off is gone for good: the next append continues the log.
        nxt = Entry(9, log.last_index() + 1, EntryType.NORMAL, b"after the damage")
        log.append([nxt])
        log.close()
        log, again = open_and_read(tmp)
        log.close()
        assert again == found + as_tuples([nxt])


# -- the hard state file ----------------------------------------------------------------------
HARD_STATE = HardState(term=7, vote="node-2", commit=41)


def decoded(raw: bytes) -> HardState:
    with within(5):
        return hardstate.decode("hardstate", raw)


@settings(FUZZ)
@given(data=st.data())
def test_a_damaged_hard_state_is_an_error_or_the_one_written(data):
    raw = hardstate.encode(HARD_STATE)
    bad = data.draw(damaged(raw, hot=[4, 8, 16, 24, len(raw) - 4]))
    try:
        state = decoded(bad)
    except PROJECT_ERRORS as exc:
        note(type(exc).__name__)
        return
    assert state == HARD_STATE


@settings(FUZZ)
@given(data=st.data())
def test_a_resealed_hard_state_is_an_error_or_a_hard_state(data):
    raw = hardstate.encode(HARD_STATE)
    body = data.draw(damaged(raw[:-4], hot=[4, 8, 16, 24, 28]))
    try:
        state = decoded(body + struct.pack("<I", zlib.crc32(body)))
    except PROJECT_ERRORS as exc:
        note(type(exc).__name__)
        return
    assert isinstance(state.vote, str) and 0 <= state.term <= MAX_STORED_INT and 0 <= state.commit <= MAX_STORED_INT


@settings(FUZZ)
@given(raw=strange_bytes(hardstate.MAGIC))
def test_strange_bytes_as_a_hard_state_are_an_error(raw):
    try:
        decoded(raw)
    except PROJECT_ERRORS as exc:
        note(type(exc).__name__)


def test_a_segment_before_the_last_cut_at_a_block_boundary_is_damage(several_segments, caplog):
    # Found by the fuzzer: 00..06.seg ends in a block superseding 8..9; cut off, the entries
    # it replaced (8..9 of term 1) came back and still lined up with 00..10.seg. The next
    # segment's header records the block that ended it: the log ends at the cut, the later
    # segments are set aside, and the node re-fetches (its watermark is above the log; the
    # storage then trusts no commit index beyond its snapshot: see SegmentStorage).
    files, _ = several_segments
    name = "00000000000000000006.seg"
    offsets = _block_offsets(files[name])
    assert len(offsets) == 3  # two blocks: 6..9 of term 1, then 8..9 of term 2
    with tempfile.TemporaryDirectory() as tmp:
        for other, raw in files.items():
            with open(os.path.join(tmp, other), "wb") as f:
                f.write(raw[: offsets[1]] if other == name else raw)
        log = SegmentLog(tmp, 200, cache_bytes=0)
        assert log.damaged and log.last_index() == 9
        later = sorted(n for n in files if n > name)
        assert later and all(os.path.exists(os.path.join(tmp, n + ".damaged")) for n in later)
        log.close()
    [line] = [r.getMessage() for r in caplog.records if "the Raft log is damaged" in r.getMessage()]
    assert f"records another last block for {name}: the blocks at its end were lost" in line


def test_segments_written_before_the_previous_block_link_still_open(several_segments):
    files, versions = several_segments
    with tempfile.TemporaryDirectory() as tmp:
        for name, raw in files.items():
            assert segment_header(name, raw)[1] is not None or name == min(files)
            with open(os.path.join(tmp, name), "wb") as f:  # the header as KeyVal 0.2.0 wrote it
                f.write(encode_segment_header(int(name[:-4])) + raw[SEGMENT_HEADER.size :])
        log, found = open_and_read(tmp)
        log.close()
    assert found == versions[-1]


def test_entry_data_shaped_like_block_headers_cannot_stall_the_torn_tail_check(tmp_path):
    # A client's value: 1 MiB of fake block headers, each claiming a 512 KiB body and a synced
    # end that would prove the torn block before it fsynced. Checking every one would
    # checksum 16 GiB; the search gives up within a few times the file and refuses instead.
    log = SegmentLog(str(tmp_path), 64 << 20, cache_bytes=0)
    log.append([Entry(1, 1, EntryType.NORMAL, b"acknowledged")])
    log.sync()
    torn_at = log.size
    fake = BLOCK_HEADER.pack(b"kvB\xa7", 0, 512 << 10, 1, 3, torn_at + 1)
    log.append([Entry(1, 2, EntryType.NORMAL, fake * ((1 << 20) // len(fake)))])
    raw = bytearray((tmp_path / "00000000000000000001.seg").read_bytes())  # with preallocated zeros
    raw[torn_at + BLOCK_HEADER.size] ^= 1  # the second block never fully reached the disk
    with within(3), pytest.raises(CorruptLog, match="too many block markers after it"):
        scan_segment("x.seg", bytes(raw), last=True)
    log.close()
