"""Background ``keyval serve`` processes: start them detached, tell whether one runs, stop it.

kvctl usually exits long before the nodes it started, so a node is tracked by its pid file,
not by a child handle. A pid alone can be reused by an unrelated process, so a pid only
counts as our node while its command line still names the node's data dir.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

STOP_GRACE = 10.0  # seconds between SIGTERM and SIGKILL


def spawn(argv: list[str], log_file: Path, cwd: Path) -> subprocess.Popen:
    """Start ``keyval`` with ``argv`` fully detached: its own session (a Ctrl-C in the shell
    that ran kvctl doesn't reach it), stdin from /dev/null, stdout and stderr appended to its
    log (where a startup error printed before logging is set up ends up too)."""
    with open(log_file, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "keyval.cli", *argv],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=cwd,
            start_new_session=True, close_fds=True,
        )


def alive(pid: int, marker: str | tuple[str, ...]) -> bool:
    """Whether ``pid`` runs and is still the process whose command line contains ``marker``
    (or one of the markers given)."""
    try:
        # Reaps it if it is our own child that has exited (a test running kvctl in-process).
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    proc = Path("/proc") / str(pid)
    if not proc.is_dir():
        return True  # no /proc (macOS): the signal check is all we have
    try:
        stat = (proc / "stat").read_text()
        cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    # A zombie has exited; its parent (maybe a container's init that never reaps) keeps it.
    if stat.rpartition(")")[2].split()[:1] == ["Z"]:
        return False
    markers = (marker,) if isinstance(marker, str) else marker
    return any(m in cmdline for m in markers)


def terminate(pids: dict[int, str | tuple[str, ...]], grace: float = STOP_GRACE) -> dict[int, str]:
    """SIGTERM every pid, wait up to ``grace`` for them to exit, SIGKILL the rest.
    ``pids`` maps pid to its marker; returns how each one ended ("stopped" or "killed")."""
    outcome: dict[int, str] = {}
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    waiting = dict(pids)
    while waiting:
        for pid in [pid for pid, marker in waiting.items() if not alive(pid, marker)]:
            outcome[pid] = "stopped"
            del waiting[pid]
        if not waiting or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for pid, marker in waiting.items():
        _signal(pid, signal.SIGKILL)
        outcome[pid] = "killed"
    deadline = time.monotonic() + 5.0
    while any(alive(pid, m) for pid, m in waiting.items()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return outcome


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
