"""Real crashes for storage tests: run a writer in a forked child and SIGKILL it.

SIGKILL stops a process dead: no close, no ``finally``, no interpreter shutdown flushing
buffers. The page cache survives it (a power cut would not), so what it checks is that a
backend hands its writes to the OS in an order that a sudden stop cannot turn into a mix.
Whether it fsyncs what it promised is for ``keyval.testing.power_loss``, which throws the
page cache away too.
"""
from __future__ import annotations

import json
import os
import signal
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import pytest

Report = Callable[[Any], None]


def run_then_kill(open_storage: Callable[[], Any], writer: Callable[[Any, Report], None], workdir: Path,
                  kill_after: float | None = None) -> list:
    """Fork; the child opens the storage and runs ``writer(storage, report)``. The child is
    killed when ``writer`` returns, or ``kill_after`` seconds after it opened the storage.

    Returns the JSON values the child passed to ``report``, in order; each report is one
    ``write`` to a file, so a kill loses at most the report being made. An exception in the
    child fails the test with the child's traceback.
    """
    reports = workdir / f"crash-reports-{time.monotonic_ns()}.jsonl"
    pid = fork_writer(open_storage, writer, reports, when_done=lambda: os.kill(os.getpid(), signal.SIGKILL))
    status = None
    try:
        if kill_after is not None:
            status = _wait_opened(reports, pid)
            if status is None:
                time.sleep(kill_after)
                os.kill(pid, signal.SIGKILL)
        if status is None:
            status = os.waitpid(pid, 0)[1]
    finally:
        if status is None:  # interrupted or timed out: leave no writer behind
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    found = read_reports(reports)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"child ended with status {status}"
    return found


def fork_writer(open_storage: Callable[[], Any], writer: Callable[[Any, Report], None], reports: Path,
                when_done: Callable[[], None]) -> int:
    """Fork a child that opens the storage, runs ``writer`` and then ``when_done`` (which
    should not return); its reports, and its traceback if it fails, go to ``reports``.
    Returns the child's pid."""
    if not hasattr(os, "fork"):
        pytest.skip("crash checks need os.fork")
    fd = os.open(reports, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            storage = open_storage()
            os.write(fd, b'{"opened": true}\n')
            writer(storage, lambda value: os.write(fd, (json.dumps({"r": value}) + "\n").encode()))
            when_done()
        except BaseException:
            os.write(fd, (json.dumps({"error": traceback.format_exc()}) + "\n").encode())
        finally:
            os._exit(70)
    os.close(fd)
    return pid


def read_reports(reports: Path) -> list:
    """What the child reported, in order; fails the test with the child's traceback if it failed."""
    lines = reports.read_text().splitlines(keepends=True) if reports.exists() else []
    records = [json.loads(line) for line in lines if line.endswith("\n")]
    errors = [r["error"] for r in records if "error" in r]
    if errors:
        pytest.fail(f"the writer failed in the child process:\n{errors[0]}")
    return [r["r"] for r in records if "r" in r]


def _wait_opened(reports: Path, pid: int, timeout: float = 30.0) -> int | None:
    """None once the child has opened the storage; its wait status if it ended before that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if reports.stat().st_size:
            return None
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.005)
    raise AssertionError(f"the child did not open the storage within {timeout}s")
