"""Power loss for storage tests: writes that were never fsynced are really thrown away.

A SIGKILL loses nothing the page cache holds, so it cannot tell a backend that fsyncs from
one that never does. Here the data dir lives on a small ext4 image of its own, loop-mounted
with ``commit=300`` (so jbd2's periodic commit does not make unsynced data durable behind
the test's back). A child process opens the storage there and writes; then the child is
frozen (SIGSTOP) and the filesystem is shut down with ``EXT4_IOC_SHUTDOWN`` and
``EXT4_GOING_FLAGS_NOLOGFLUSH``, as xfstests' ``godown`` does: dirty pages and the
unflushed journal are discarded, as in a power cut. The child is killed, the image
unmounted and mounted again, and the test opens the storage on what a disk would hold.

Needs Linux, root, ``mkfs.ext4`` (e2fsprogs) and a free loop device; without them the
checks skip and say which is missing.
"""
from __future__ import annotations

import fcntl
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from keyval.testing.crash import Report, fork_writer, read_reports

#: _IOR('X', 125, __u32) from linux/ext4.h
EXT4_IOC_SHUTDOWN = 0x8004587D
#: drop dirty data and do not flush the journal: what a power cut leaves
EXT4_GOING_FLAGS_NOLOGFLUSH = 2
#: Sparse, so only what is written takes space; room for a 64 MiB segment and snapshots.
IMAGE_SIZE = 256 << 20


class PowerLossDisk:
    """An ext4 image mounted at ``workdir/disk``; ``data_dir`` is a directory on it."""

    def __init__(self, workdir: Path) -> None:
        self.image = workdir / "power-loss.img"
        self.mount_point = workdir / "disk"
        self.data_dir = str(self.mount_point / "data")
        self.mounted = False

    def __enter__(self) -> "PowerLossDisk":
        if not sys.platform.startswith("linux"):
            pytest.skip("power-loss checks need Linux (an ext4 filesystem shut down with EXT4_IOC_SHUTDOWN)")
        if os.geteuid() != 0:
            pytest.skip("power-loss checks need root (to loop-mount a small ext4 image)")
        self.mount_point.mkdir(parents=True, exist_ok=True)
        with open(self.image, "wb") as f:
            f.truncate(IMAGE_SIZE)
        _run(["mkfs.ext4", "-q", "-F", "-m", "0", str(self.image)], "make an ext4 image", "e2fsprogs")
        self._mount()
        os.mkdir(self.data_dir)
        _fsync_dir(str(self.mount_point))  # the data dir itself must not be lost with the power
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._umount()
        self.image.unlink(missing_ok=True)

    def cut_power(self) -> None:
        """Shut the filesystem down as a power cut would: everything not yet durable is gone."""
        fd = os.open(self.mount_point, os.O_RDONLY)
        try:
            fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, struct.pack("I", EXT4_GOING_FLAGS_NOLOGFLUSH))
        except OSError as exc:
            pytest.skip(f"this kernel does not shut an ext4 filesystem down on request (EXT4_IOC_SHUTDOWN: {exc})")
        finally:
            os.close(fd)

    def power_on(self) -> None:
        """Mount the image again: what the disk held when the power went, journal replayed."""
        self._umount()
        self._mount()

    def _mount(self) -> None:
        _run(["mount", "-o", "loop,commit=300", str(self.image), str(self.mount_point)],
             "loop-mount an ext4 image (is a loop device free?)", "util-linux")
        self.mounted = True

    def _umount(self) -> None:
        if not self.mounted:
            return
        if subprocess.run(["umount", str(self.mount_point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(self.mount_point)], capture_output=True)  # a process still in it
        self.mounted = False


def run_then_cut_power(open_storage: Callable[[], Any], writer: Callable[[Any, Report], None], disk: PowerLossDisk,
                       workdir: Path, cut_after: float | None = None) -> list:
    """Fork; the child opens the storage and runs ``writer(storage, report)``. When ``writer``
    returns, or ``cut_after`` seconds after the child opened the storage, the power goes: the
    child is frozen, the filesystem shut down, the child killed, the disk mounted again.

    Returns what the child passed to ``report`` before it was frozen; an exception in the
    child fails the test with the child's traceback.
    """
    reports = workdir / f"power-reports-{time.monotonic_ns()}.jsonl"
    pid = fork_writer(open_storage, writer, reports, when_done=lambda: os.kill(os.getpid(), signal.SIGSTOP))
    status = None
    try:
        if cut_after is not None:
            status = _wait_opened(reports, pid)
            if status is None:
                time.sleep(cut_after)
                os.kill(pid, signal.SIGSTOP)
        if status is None:
            status = os.waitpid(pid, os.WUNTRACED)[1]
        if os.WIFSTOPPED(status):
            disk.cut_power()  # while the child still holds its files open, mid-write maybe
    finally:
        if status is None or os.WIFSTOPPED(status):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    found = read_reports(reports)
    assert os.WIFSTOPPED(status), f"the writer ended before the power cut (wait status {status})"
    disk.power_on()
    return found


def _wait_opened(reports: Path, pid: int, timeout: float = 30.0) -> int | None:
    """None once the child has opened the storage; its wait status if it stopped or ended before."""
    deadline = time.monotonic() + timeout
    while not reports.stat().st_size:
        done, status = os.waitpid(pid, os.WNOHANG | os.WUNTRACED)
        if done:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"the child did not open the storage within {timeout}s")
        time.sleep(0.005)
    return None


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _run(args: list[str], what: str, package: str) -> None:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        pytest.skip(f"power-loss checks cannot {what}: {args[0]} is not installed ({package})")
    if done.returncode != 0:
        pytest.skip(f"power-loss checks cannot {what}: {done.stderr.strip() or done.returncode}")
