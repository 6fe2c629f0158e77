"""Resource limits of the client port: connections, idle time, bytes of partial frames.

Anyone who reaches the client port can open connections and start frames it never finishes.
What that can cost the node is bounded here: the number of connections (beyond it, a new one
is answered ``unavailable`` and closed at once), the time a connection may sit idle or inside
one frame, and the bytes of unfinished frames held per connection and for the whole node. The
service's connections call into one ``ClientLimiter``; every limit hit is counted (exported
as metrics) and logged at most once per kind per ``log_interval``.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

from keyval.client.protocol import MAX_FRAME

log = logging.getLogger("keyval.client_limits")

#: Every event counted, present from the start.
EVENTS = (
    "accepted",
    "refused",  # beyond max_client_connections
    "closed_idle",  # no request for client_idle_timeout
    "closed_frame_timeout",  # a frame not finished within client_idle_timeout of its start
    "closed_frame_too_large",  # a frame announced larger than client_frame_bytes
    "closed_node_buffer",  # would have pushed the node past client_buffer_bytes
    "requests_invalid",  # a frame that did not decode to a request within bounds
    "accept_out_of_descriptors",  # the event loop's accept() failed with EMFILE/ENFILE
)


@dataclass(frozen=True)
class ClientLimits:
    max_connections: int = 4096
    #: seconds a connection may wait with no request and nothing outstanding, or stay inside
    #: one partial frame, before it is closed
    idle_timeout: float = 300.0
    #: bytes one connection may hold of a frame not yet complete (caps the frame size)
    frame_bytes: int = MAX_FRAME
    #: bytes all connections together may hold of frames not yet complete
    buffer_bytes: int = 256 << 20
    log_interval: float = 10.0


class ClientLimiter:
    """The bookkeeping of one client port. Event-loop only: plain ints, no locks."""

    def __init__(self, limits: ClientLimits, label: str = "client port",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.label = label
        self.connections = 0
        self.buffered = 0
        self.counts = dict.fromkeys(EVENTS, 0)
        self._clock = clock
        #: a coarse clock, moved by ``tick``: connections stamp their activity with it, so a
        #: request costs an attribute read, not a clock call
        self.now = clock()
        self._next_line: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    def tick(self) -> float:
        self.now = self._clock()
        return self.now

    @property
    def sweep_interval(self) -> float:
        return min(1.0, self.limits.idle_timeout / 4)

    def admit(self, peer: str) -> bool:
        """A connection was accepted: True if it may stay (release it when it goes)."""
        if self.connections >= self.limits.max_connections:
            self.report("refused", f"{peer}: already {self.connections} client connections (max_client_connections)")
            return False
        self.connections += 1
        self.counts["accepted"] += 1
        return True

    def release(self, held: int) -> None:
        self.connections -= 1
        self.buffered -= held

    def hold(self, before: int, after: int) -> bool:
        """A connection now holds ``after`` bytes of a partial frame instead of ``before``;
        False if that puts the node over ``buffer_bytes`` (the connection must go)."""
        self.buffered += after - before
        return after <= before or self.buffered <= self.limits.buffer_bytes

    def overdue(self, last_active: float, frame_started: float | None, outstanding: int) -> str | None:
        """Why a connection should be closed now, if it should: the event to report."""
        timeout = self.limits.idle_timeout
        if frame_started is not None:
            return "closed_frame_timeout" if self.now - frame_started >= timeout else None
        if outstanding == 0 and self.now - last_active >= timeout:
            return "closed_idle"
        return None

    def report(self, kind: str, detail: str) -> None:
        """Count one event of ``kind`` and log it, at most one line per kind per interval
        (the events in between are summed into the next line)."""
        self.counts[kind] += 1
        pending = self._unlogged.get(kind, 0) + 1
        now = self._clock()
        if now < self._next_line.get(kind, 0.0):
            self._unlogged[kind] = pending
            return
        self._unlogged[kind] = 0
        self._next_line[kind] = now + self.limits.log_interval
        log.warning("%s: %s +%d (%d in total): %s", self.label, kind, pending, self.counts[kind], detail)

    def snapshot(self) -> dict[str, int]:
        return dict(self.counts)
