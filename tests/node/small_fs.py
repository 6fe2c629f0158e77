"""A small filesystem of a test's own, to run out of space on: a loop-mounted ext4 image (a
real disk filesystem: real fsync, delayed allocation, a journal) or a tmpfs. Mounting needs
root (CI runs as root); elsewhere the test is skipped and says why."""
from __future__ import annotations

import errno
import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

MiB = 1 << 20


@contextmanager
def small_filesystem(where: Path, size: int, kind: str = "ext4"):
    """Mount a ``size``-byte filesystem at ``where`` (created if need be) for the block;
    it is unmounted afterwards, whatever happened."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    where.mkdir(parents=True, exist_ok=True)
    image = where.parent / f".{where.name}.img"
    if kind == "ext4":
        with open(image, "wb") as f:
            f.truncate(size)
        # -m 0: no blocks reserved for root (the node runs as root here, and would use them)
        _run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], "make an ext4 image")
        _run(["mount", "-o", "loop", str(image), str(where)], "loop-mount an ext4 image")
    else:
        _run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], "mount a tmpfs")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)  # a process still in it
        image.unlink(missing_ok=True)


def _run(args: list[str], what: str) -> None:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        pytest.skip(f"cannot {what}: {args[0]} is not installed")
    if done.returncode != 0:
        pytest.skip(f"cannot {what} here: {done.stderr.strip() or done.returncode}")


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(path: Path, leave: int = 0) -> Path:
    """Take the filesystem's free space down to ``leave`` bytes (0: to the last byte, until
    a write fails with ENOSPC) with a filler file ``path``; return it."""
    with open(path, "ab") as f:
        fd = f.fileno()
        for chunk in (MiB, 64 << 10, 4096, 512, 1):
            block = b"\xff" * chunk
            while free_bytes(path.parent) - chunk >= leave:
                try:
                    os.write(fd, block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
        os.fsync(fd)
    return path
