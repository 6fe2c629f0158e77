"""Small durable-file helpers shared by the log and the hard state."""
from __future__ import annotations

import os

#: fdatasync skips flushing metadata a later read does not need (mtime), where it exists.
datasync = getattr(os, "fdatasync", os.fsync)


def fsync_dir(path: str) -> None:
    """Make the directory's entries (creations, renames, deletions) durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs_durably(path: str) -> None:
    """``os.makedirs``, then fsync the parent of every directory it created, so that a
    crash cannot take away a directory whose files were fsynced."""
    missing = []
    while path and not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    for created in reversed(missing):
        os.makedirs(created, exist_ok=True)
        fsync_dir(os.path.dirname(created) or ".")


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """``os.write`` until everything is written (a regular file may take less at once)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def pwrite_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    """``os.pwrite`` until everything is written at ``offset``."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def write_file_durably(path: str, data: bytes) -> None:
    """Write ``path + ".tmp"``, fsync it and rename it to ``path``; on failure the temporary file
    is removed and ``path`` is as it was. The caller fsyncs the directory (once, if it does several)."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        # A full disk: the half-written file would hold on to space the retry needs.
        remove_if_present(tmp)
        raise


def remove_if_present(path: str) -> None:
    """``os.remove``, where a file already gone is no error (a retried removal)."""
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
