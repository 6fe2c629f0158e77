"""The NOSPACE alarm's rules (keyval/runtime/space.py), over a measured free space the test
sets: when it is raised and cleared, what a write is told, and which failures of a write
count as running out of a resource (retried) rather than as a broken disk (fatal)."""
from __future__ import annotations

import errno

import pytest

from keyval.errors import NoSpace, StorageError
from keyval.runtime.space import CHECK_INTERVAL, SpaceAlarm, resource_errno

MiB = 1 << 20


class Disk:
    free = 100 * MiB

    def measure(self, path: str) -> int:
        return self.free


def alarm(disk: Disk, reserve: int = 8 * MiB) -> SpaceAlarm:
    return SpaceAlarm("n1", "/data/n1", reserve, lambda: 3, disk.measure)


def test_raised_below_the_reserve_and_cleared_a_quarter_above_it():
    disk = Disk()
    space = alarm(disk)
    now = 0.0
    for free, raised in ((9 * MiB, False), (7 * MiB, True), (9 * MiB, True), (10 * MiB - 1, True),
                         (10 * MiB, False), (9 * MiB, False)):
        disk.free = free
        now += CHECK_INTERVAL
        space.check(now)
        assert space.raised is raised, free
    disk.free = 1
    space.check(now + CHECK_INTERVAL / 2)  # measured at most once a second
    assert not space.raised


def test_a_write_is_refused_with_why_and_where():
    disk = Disk()
    space = alarm(disk)
    space.check_writes()  # no alarm: nothing raised
    disk.free = 3 * MiB
    space.check(0.0)
    with pytest.raises(NoSpace) as refused:
        space.check_writes()
    assert str(refused.value) == ("no space left on device for node n1's log: writes are refused until space is freed "
                                  "(NOSPACE alarm: 3.0 MiB free in /data/n1, below space_reserve (8.0 MiB))")
    assert refused.value.code == "no_space" and space.alarms() == {"NOSPACE": space.reason}
    disk.free = 9 * MiB
    space.check(1.0)
    assert space.reason == "9.0 MiB free in /data/n1, not yet the 10.0 MiB that clear the alarm"


def test_a_write_failing_for_want_of_space_raises_the_alarm_until_a_retry_succeeds():
    disk = Disk()
    space = alarm(disk, reserve=0)
    space.check(0.0)
    space.persist_failed(OSError(errno.ENOSPC, "No space left on device"), errno.ENOSPC, 1)
    assert space.raised and space.failing == "ENOSPC: No space left on device"
    assert space.reason.startswith("writing to /data/n1 failed with ENOSPC: No space left on device")
    space.check(5.0)  # plenty of space measured: still raised while the write fails
    assert space.raised
    space.persist_recovered(3, 1.5)
    assert not space.raised and space.failing is None


def test_running_out_of_descriptors_is_retried_but_raises_no_alarm():
    space = alarm(Disk())
    space.persist_failed(OSError(errno.EMFILE, "Too many open files"), errno.EMFILE, 1)
    assert not space.raised and space.failing == "EMFILE: Too many open files"
    space.persist_recovered(1, 0.1)
    assert space.failing is None


def _wrapped(inner: BaseException, explicit: bool) -> StorageError:
    try:
        try:
            raise inner
        except OSError as exc:
            if explicit:
                raise StorageError("cannot write the watermark") from exc
            raise StorageError("cannot write the watermark")
    except StorageError as outer:
        return outer


def test_which_failures_are_a_shortage():
    for code in (errno.ENOSPC, errno.EDQUOT, errno.EMFILE, errno.ENFILE):
        assert resource_errno(OSError(code, "x")) == code
        assert resource_errno(_wrapped(OSError(code, "x"), explicit=True)) == code
        assert resource_errno(_wrapped(OSError(code, "x"), explicit=False)) == code
    # A broken disk, and anything else, stay fatal.
    assert resource_errno(OSError(errno.EIO, "Input/output error")) is None
    assert resource_errno(_wrapped(OSError(errno.EIO, "x"), explicit=True)) is None
    assert resource_errno(ValueError("gap")) is None
    try:
        try:
            raise OSError(errno.ENOSPC, "x")
        except OSError:
            raise ValueError("a bug while handling it")
    except ValueError as exc:
        assert resource_errno(exc) is None
