"""The segment storage with no file descriptor left (EMFILE, from the real kernel: this
process's own limit is lowered and used up): every write that needs a new descriptor fails
cleanly, leaving the storage as it was, and the same calls succeed once descriptors are back
(the Ready driver retries them: keyval/runtime/driver.py). Reopened, the storage holds
exactly what was written."""
from __future__ import annotations

import errno
import os
import resource
from contextlib import contextmanager

import pytest

from keyval.errors import StorageError
from keyval.raft.types import Entry, HardState
from keyval.runtime.space import resource_errno
from keyval_plugins.storage.segment.options import SegmentOptions
from keyval_plugins.storage.segment.storage import SegmentStorage


@contextmanager
def no_descriptor_left():
    """Lower this process's open-file limit a little above what it holds, and hold the rest."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 16, hard))
    held = []
    try:
        while True:
            try:
                held.append(os.open(os.devnull, os.O_RDONLY))
            except OSError as exc:
                assert exc.errno == errno.EMFILE
                break
        yield
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def batch(first: int, count: int, term: int) -> list[Entry]:
    return [Entry(term, i, data=f"entry {i} of term {term} ".encode() * 8) for i in range(first, first + count)]


def test_writes_needing_a_descriptor_fail_cleanly_and_succeed_when_retried(tmp_path):
    options = SegmentOptions(segment_size=1024, cache_bytes=0)
    storage = SegmentStorage(str(tmp_path), options)
    written = batch(1, 10, 1)
    storage.append(written)
    storage.set_hard_state(HardState(term=1, vote="n1", commit=10))
    storage.sync()
    segments = sorted(os.listdir(tmp_path / "log"))

    vote = HardState(term=2, vote="n2", commit=10)
    more = batch(11, 10, 2)
    with no_descriptor_left():
        # A new term and vote: the hard state is replaced through a new file.
        with pytest.raises(OSError) as failed:
            storage.set_hard_state(vote)
        assert resource_errno(failed.value) == errno.EMFILE
        # The active segment is full: the next block starts a new segment file.
        with pytest.raises(OSError) as failed:
            storage.append(more)
        assert resource_errno(failed.value) == errno.EMFILE
        assert storage.last_index() == 10
    assert storage.initial_state()[0] == HardState(term=1, vote="n1", commit=10)
    assert sorted(os.listdir(tmp_path / "log")) == segments  # nothing half made
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]
    assert storage.entries(1, 11) == written

    # Descriptors are back: the same calls again, as the driver's retry makes them.
    storage.append(more)
    storage.set_hard_state(vote)
    storage.sync()
    storage.close()

    reopened = SegmentStorage(str(tmp_path), options)
    try:
        assert reopened.entries(1, reopened.last_index() + 1) == written + more
        assert reopened.initial_state()[0].term == 2 and reopened.initial_state()[0].vote == "n2"
        assert reopened.durable_watermark() == (20, 2)
    finally:
        reopened.close()


def test_a_sync_failing_for_want_of_a_descriptor_is_redone_by_appending_again(tmp_path):
    """The watermark is written on sync: its first write creates the file. If that fails,
    the driver appends the same entries again (discarding what the failed attempt wrote)
    and syncs again."""
    storage = SegmentStorage(str(tmp_path), SegmentOptions(cache_bytes=0))
    os.remove(tmp_path / "watermark")  # as a data dir from before the watermark: made on first sync
    storage._wm_file.close()
    first, second = batch(1, 5, 1), batch(6, 5, 1)
    storage.append(first)  # opens the first segment
    with no_descriptor_left():
        storage.append(second)  # the active segment is open: no new descriptor needed
        with pytest.raises(StorageError) as failed:  # the watermark's, wrapping the EMFILE
            storage.sync()
        assert resource_errno(failed.value) == errno.EMFILE
    storage.append(second)
    storage.sync()
    storage.close()
    reopened = SegmentStorage(str(tmp_path), SegmentOptions())
    try:
        assert reopened.entries(1, 11) == first + second and reopened.durable_watermark() == (10, 1)
    finally:
        reopened.close()
