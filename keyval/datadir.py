"""A node's data directory: its layout, and the lock that keeps a second process out."""
from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path

from keyval.errors import ConfigError

LOCK_FILE = "LOCK"


class DataDirLock:
    """An exclusive ``flock`` held for the life of the process (released by the kernel if
    the process dies, so a crash never leaves a stale lock)."""

    def __init__(self, data_dir: str) -> None:
        self.path = Path(data_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ConfigError(
                f"data dir {str(self.path.parent)!r} is in use by another keyval process (pid {holder}); "
                "one data dir serves one node"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def cluster_id_for(bootstrap: dict[str, str]) -> str:
    """Every initial member derives the same id from the same bootstrap list."""
    text = ",".join(f"{node}={addr}" for node, addr in sorted(bootstrap.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
