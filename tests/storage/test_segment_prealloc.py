"""The active segment is extended with zeros ahead of its blocks (plugins/storage/segment/log.py):
a later fdatasync then has no file size to commit. These check the files on disk: the zeros
read back as a clean end, never as damage, and only the last segment ever has them."""
from __future__ import annotations

import logging
import os

from test_segment_recovery import block_offsets, open_store, run, segments


def last_block_end(file) -> int:
    raw = file.read_bytes()
    end = block_offsets(file)[0]
    for off in block_offsets(file):
        body = int.from_bytes(raw[off + 8 : off + 12], "little")
        if raw[off : off + 4] != b"kvB\xa7":
            break
        end = off + 32 + body
    return end


def test_a_crashed_writer_leaves_zeros_that_reopen_as_a_clean_end(tmp_path, caplog):
    store = open_store(tmp_path)
    for lo in range(1, 200, 10):
        store.append(run(lo, lo + 9))
        store.sync()
    [file] = segments(tmp_path)
    end = last_block_end(file)
    raw = file.read_bytes()
    assert len(raw) > end and raw[end:] == bytes(len(raw) - end), "the tail should be preallocated zeros"
    # No close: the process "died" here.
    with caplog.at_level(logging.INFO, logger="keyval_plugins.storage.segment"):
        reopened = open_store(tmp_path)
    assert reopened.last_index() == 200
    assert reopened.entries(1, 201) == run(1, 200)
    assert not [r for r in caplog.records if "torn" in r.getMessage()]
    assert file.stat().st_size == end  # the zeros are cut on open, then preallocated again as it writes
    reopened.append(run(201, 210, term=2))
    reopened.sync()
    assert open_store(tmp_path).entries(195, 211) == run(195, 200) + run(201, 210, term=2)


def test_garbage_after_the_zeros_is_still_a_torn_tail(tmp_path, caplog):
    store = open_store(tmp_path)
    store.append(run(1, 10))
    store.sync()
    [file] = segments(tmp_path)
    end = last_block_end(file)
    with open(file, "r+b") as f:
        f.seek(0, os.SEEK_END)
        f.write(os.urandom(300))
    size = file.stat().st_size
    with caplog.at_level(logging.INFO, logger="keyval_plugins.storage.segment"):
        reopened = open_store(tmp_path)
    assert reopened.entries(1, 11) == run(1, 10)
    [line] = [r.getMessage() for r in caplog.records if "torn" in r.getMessage()]
    assert f"{size - end} bytes" in line
    assert file.stat().st_size == end


def test_only_the_last_segment_ends_in_zeros(tmp_path):
    store = open_store(tmp_path, segment_size=64 * 1024)
    for lo in range(1, 3000, 25):
        store.append(run(lo, lo + 24))
        store.sync()
    files = segments(tmp_path)
    assert len(files) > 3
    for file in files[:-1]:
        assert file.stat().st_size == last_block_end(file), f"{file.name} keeps a zero tail"
    assert files[-1].stat().st_size > last_block_end(files[-1])
    store.close()
    assert files[-1].stat().st_size == last_block_end(files[-1])  # a clean close tidies it
    assert open_store(tmp_path, segment_size=64 * 1024).entries(2990, 3001) == run(2990, 3000)


def test_a_truncation_inside_the_zeros_segment_keeps_the_log_whole(tmp_path):
    store = open_store(tmp_path)
    store.append(run(1, 50))
    store.sync()
    store.append(run(31, 60, term=2))  # supersedes 31..50
    store.sync()
    assert store.entries(1, 61) == run(1, 30) + run(31, 60, term=2)
    assert open_store(tmp_path).entries(1, 61) == run(1, 30) + run(31, 60, term=2)
