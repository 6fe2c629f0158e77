"""The NOSPACE alarm, and what a node does when its disk or its descriptors run out.

**Prevention**, etcd's way: the node measures the free space of its data dir about once a
second (``statvfs``, from the tick loop, never per write) and raises the NOSPACE alarm when
it falls below ``space_reserve``. While it is raised, this node refuses client writes and
membership changes before proposing them (``keyval.errors.NoSpace``), so the reserve stays
for what keeps the cluster running: the small hard-state writes of elections, a new leader's
empty entry, the entries a follower is sent, and the snapshots and compaction that free
space. Reads write nothing and go on. The alarm clears by itself once free space is back a
quarter above the reserve (so a disk hovering at the line does not make it flap).

**Fallback**: a write that fails anyway — the disk filled between two measurements, a
follower's disk (followers write what their leader sends), a quota, no descriptor left — is
retried by the Ready driver, never fatal (``resource_errno`` says which failures qualify).
ENOSPC and EDQUOT raise the alarm too, until a retry succeeds and space is measured back.
"""
from __future__ import annotations

import errno
import logging
import os
from typing import Callable

from keyval.errors import NoSpace, StorageError

log = logging.getLogger("keyval.node")

#: The failures of a write that say a resource ran out, not that the data or the disk is bad.
#: The same write succeeds once space or descriptors are freed; after EIO (say) nobody knows
#: what the page cache holds, so those stay fatal.
RESOURCE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EMFILE, errno.ENFILE)
SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
#: seconds between two measurements of free space
CHECK_INTERVAL = 1.0
ALARM = "NOSPACE"


def resource_errno(exc: BaseException) -> int | None:
    """The errno if ``exc`` is a shortage of disk space or descriptors: an ``OSError`` with
    one of ``RESOURCE_ERRNOS``, or a ``StorageError`` a backend raised because of one."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS:
            return exc.errno
        # A backend wraps the OSError (``raise StorageError(...) from exc``, or inside its
        # except clause); anything else raised while handling one is a failure of its own.
        exc = exc.__cause__ or (exc.__context__ if isinstance(exc, StorageError) else None)
        seen += 1
    return None


def free_bytes(path: str) -> int:
    """Bytes an unprivileged writer may still use on the filesystem holding ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def size_text(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


class SpaceAlarm:
    """One node's NOSPACE alarm, and the persist failures its driver is retrying."""

    def __init__(self, node_id: str, path: str | None, reserve: int, term: Callable[[], int],
                 measure: Callable[[str], int] = free_bytes) -> None:
        self.node_id = node_id
        #: the data dir; None (a backend keeping nothing on disk): nothing to measure
        self.path = path
        self.reserve = reserve
        self._term = term
        self._measure = measure
        #: free bytes when last measured (None: not measured)
        self.free: int | None = None
        self.raised = False
        #: the write failure that raised the alarm, if one did (else it was low space)
        self._raised_by = ""
        #: while the driver retries a persist: what it keeps failing with, e.g.
        #: "EMFILE: Too many open files" (None when nothing is failing)
        self.failing: str | None = None
        self._next_check = float("-inf")
        self._measure_error_logged = False

    @property
    def clear_above(self) -> int:
        return self.reserve + self.reserve // 4

    def check(self, now: float) -> None:
        """From the tick loop: measure at most once per CHECK_INTERVAL."""
        if self.path is None or now < self._next_check:
            return
        self._next_check = now + CHECK_INTERVAL
        self._update()

    def check_writes(self) -> None:
        """Raise ``NoSpace`` while the alarm is raised (before a write is proposed)."""
        if self.raised:
            raise NoSpace(f"no space left on device for node {self.node_id}'s log: writes are refused until "
                          f"space is freed ({ALARM} alarm: {self.reason})")

    @property
    def reason(self) -> str:
        """Why the alarm is raised, as of the last measurement ('' when it is not)."""
        if not self.raised:
            return ""
        free = "" if self.free is None else f"{size_text(self.free)} free in {self.path}"
        if self._raised_by:
            return f"writing to {self.path or 'storage'} failed with {self._raised_by}" + (f"; {free}" if free else "")
        if self.free is not None and self.free >= self.reserve:
            return f"{free}, not yet the {size_text(self.clear_above)} that clear the alarm"
        return f"{free}, below space_reserve ({size_text(self.reserve)})"

    def alarms(self) -> dict[str, str]:
        return {ALARM: self.reason} if self.raised else {}

    # -- the driver's persist failures -------------------------------------------------------
    def persist_failed(self, exc: BaseException, code: int, attempt: int) -> None:
        self.failing = f"{errno.errorcode.get(code, code)}: {os.strerror(code)}"
        if attempt == 1:
            log.error("node %s term %d: persisting failed: %s; retrying until it succeeds (the node keeps "
                      "running, and acknowledges nothing it has not made durable)", self.node_id, self._term(), exc)
        if code in SPACE_ERRNOS:
            if self.raised:
                self._raised_by = self.failing
            else:
                self._raise(self.failing)

    def persist_recovered(self, attempts: int, seconds: float) -> None:
        self.failing = None
        self._raised_by = ""  # still raised after the measurement below: for low space
        log.warning("node %s term %d: persisting works again, after %d failed attempts in %.1fs",
                    self.node_id, self._term(), attempts, seconds)
        if self.path is None:
            self._clear("the write went through")
        else:
            self._update()

    # ----------------------------------------------------------------------------------------
    def _update(self) -> None:
        try:
            free = self._measure(self.path)
        except OSError as exc:
            if not self._measure_error_logged:
                log.error("node %s term %d: cannot measure the free space of %s: %s", self.node_id, self._term(),
                          self.path, exc.strerror or exc)
                self._measure_error_logged = True
            return
        self.free = free
        if not self.raised:
            if free < self.reserve:
                self._raise("")
        elif self.failing is None and free >= self.clear_above:
            self._clear(f"{size_text(free)} free in {self.path}")

    def _raise(self, failure: str) -> None:
        """Raise the alarm: for low space (``failure`` empty) or a write that failed."""
        self.raised, self._raised_by = True, failure
        until = f"{size_text(self.clear_above)} are free" if self.reserve else "a write succeeds again"
        log.error("node %s term %d: %s alarm raised: %s; client writes are refused while this node leads, until "
                  "%s", self.node_id, self._term(), ALARM, self.reason, until)

    def _clear(self, why: str) -> None:
        if not self.raised:
            return
        self.raised, self._raised_by = False, ""
        log.warning("node %s term %d: %s alarm cleared: %s; writes are accepted again", self.node_id,
                    self._term(), ALARM, why)
