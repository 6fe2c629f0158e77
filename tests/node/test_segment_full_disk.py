"""The segment storage on a real, full ext4 (loop-mounted; root only): each write that finds
no space fails with ENOSPC and leaves nothing that reads back as data — no half block in
the log, no temporary file, the old hard state whole — and the same calls succeed once
space is freed (the Ready driver retries them). Reopened, the storage holds exactly what
was written."""
from __future__ import annotations

import errno
import logging
import os

from keyval.raft.types import Entry, HardState
from keyval.runtime.space import resource_errno
from keyval_plugins.storage.segment.options import SegmentOptions
from keyval_plugins.storage.segment.storage import SegmentStorage

from .small_fs import MiB, fill, small_filesystem


def batch(first: int, count: int, term: int) -> list[Entry]:
    return [Entry(term, i, data=os.urandom(2000)) for i in range(first, first + count)]


def failure(call) -> BaseException | None:
    try:
        call()
    except Exception as exc:
        return exc
    return None


def test_writes_on_a_full_disk_fail_cleanly_and_succeed_when_space_returns(tmp_path, caplog):
    options = SegmentOptions(segment_size=256 << 10, cache_bytes=0)
    with small_filesystem(tmp_path / "disk", 16 * MiB) as disk:
        data = disk / "data"
        storage = SegmentStorage(str(data), options)
        written = batch(1, 50, 1)
        storage.append(written)
        storage.set_hard_state(HardState(term=1, vote="n1", commit=50))
        storage.sync()
        filler = fill(disk / "filler")

        vote = HardState(term=2, vote="n2", commit=50)
        exc = failure(lambda: storage.set_hard_state(vote))
        assert exc is not None and resource_errno(exc) == errno.ENOSPC, exc
        # Appends go on into the space the active segment holds, then fail.
        index, failed = 51, None
        while failed is None:
            more = batch(index, 20, 1)
            failed = failure(lambda: (storage.append(more), storage.sync()))
            if failed is None:
                written += more
                index += 20
        assert resource_errno(failed) == errno.ENOSPC, failed
        assert not [name for name in os.listdir(data) if name.endswith(".tmp")]
        assert not [name for name in os.listdir(data / "log") if name.endswith(".tmp")]
        storage.close()  # on the full disk: what it cannot write (the commit index) waits

        caplog.set_level(logging.WARNING)
        reopened = SegmentStorage(str(data), options)  # still full: opening needs no space
        assert reopened.entries(1, reopened.last_index() + 1)[: len(written)] == written
        assert reopened.last_index() in (len(written), len(written) + 20)  # the failed batch, if its sync did
        assert reopened.initial_state()[0].term == 1  # the new term never half-replaced the old
        assert not caplog.records, caplog.text  # no torn tail, no damage found

        filler.unlink()
        reopened.append(more)  # as the driver's retry does
        reopened.set_hard_state(vote)
        reopened.sync()
        reopened.close()
        final = SegmentStorage(str(data), options)
        try:
            assert final.entries(1, final.last_index() + 1) == written + more
            assert (final.initial_state()[0].term, final.initial_state()[0].vote) == (2, "n2")
        finally:
            final.close()
