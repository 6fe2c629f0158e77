"""The power cut the conformance suite's power-loss checks rely on: after it, what was
fsynced is on the disk and what was only written is not."""
from __future__ import annotations

import os

import pytest

from keyval.testing.power_loss import PowerLossDisk


def write(path: str, data: bytes, fsync: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, data)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def test_a_power_cut_keeps_what_was_fsynced_and_drops_the_rest(tmp_path):
    with PowerLossDisk(tmp_path) as disk:
        synced, unsynced = os.path.join(disk.data_dir, "synced"), os.path.join(disk.data_dir, "unsynced")
        write(unsynced, b"U" * 10_000, fsync=False)
        write(synced, b"S" * 10_000, fsync=True)  # its fsync commits the journal: `unsynced` exists, empty
        write(synced, b"T" * 10_000, fsync=False)  # appended, never synced
        disk.cut_power()
        with pytest.raises(OSError):  # the filesystem is down: nothing more reaches it
            write(synced, b"X", fsync=True)
        disk.power_on()
        with open(synced, "rb") as f:
            assert f.read() == b"S" * 10_000
        assert not os.path.exists(unsynced) or os.path.getsize(unsynced) == 0


def test_without_root_the_checks_skip_and_say_why(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(pytest.skip.Exception, match="power-loss checks need root"):
        PowerLossDisk(tmp_path).__enter__()
