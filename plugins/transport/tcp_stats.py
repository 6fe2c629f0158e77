"""Counters of a transport, and drops logged at most once per kind per interval.

A peer sending garbage as fast as it can must not turn into as many log lines: the first
drop of a kind is logged at once, later ones are summed into the next line due.
"""
from __future__ import annotations

import logging
import time
from typing import Callable

#: Every counter ``stats()`` reports, present from the start (zero until something happens).
COUNTERS = (
    "sent",
    "received",
    "dropped_decode",
    "dropped_cluster",
    "dropped_auth",
    "dropped_replay",  # a frame of this connection sent again (its tag fits an earlier counter)
    "dropped_identity",  # a hello or message from an id the certificate does not name, or a frm
                         # other than the hello's; an acceptor whose certificate names another node
    "dropped_queue_full",
    "dropped_too_large",  # outgoing message larger than max_frame_bytes
    "dropped_oversized",  # incoming frame announced larger than max_frame_bytes
    "dropped_truncated",  # connection closed in the middle of a frame
    "dropped_wrong_node",  # addressed to another node id
    "dropped_no_address",  # sent with address=None to a peer we never heard from
    "dropped_send_failed",  # lost with a connection that broke while writing
    "dropped_closed",  # sent after close()
    "deliver_errors",
    "connects",
    "connect_failures",
    "connections_lost",  # outbound connections the peer closed or broke
    "connections_accepted",
    "hellos_received",  # inbound connections that said who dialled and where it listens
    "connections_refused",  # inbound connections beyond max_connections
    "connections_closed_bad",  # closed after too many bad frames or an oversized one
    "connections_refused_tls",  # a certificate on tls_refused (either direction)
    "handshake_timeouts",  # inbound connections closed without an authenticated hello in time
    "preauth_oversized",  # frames larger than a hello announced before the hello authenticated
    "buffer_limit_closed",  # closed: the node's partial-frame bytes would pass inbound_buffer_bytes
)


class Stats:
    def __init__(self, logger: logging.Logger, label: str, interval: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.counts = dict.fromkeys(COUNTERS, 0)
        self._log = logger
        self.label = label  # set again once the node id is known
        self._interval = interval
        self._clock = clock
        self._next_line: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    def add(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    def report(self, kind: str, detail: str, n: int = 1) -> None:
        """Count ``n`` events of ``kind`` (a drop, a failed connect...) and log them,
        rate-limited, as one line ending with ``detail``."""
        self.counts[kind] += n
        pending = self._unlogged.get(kind, 0) + n
        now = self._clock()
        if now < self._next_line.get(kind, 0.0):
            self._unlogged[kind] = pending
            return
        self._unlogged[kind] = 0
        self._next_line[kind] = now + self._interval
        self._log.warning("%s: %s +%d (%d in total): %s",
                          self.label, kind, pending, self.counts[kind], detail)

    def snapshot(self) -> dict[str, int]:
        return dict(self.counts)
