"""File descriptors: enough for storage whatever strangers do to the node's ports.

Every accepted connection costs a descriptor, and so does every file storage opens (the hard
state's temporary file and its directory, a new segment, a snapshot). When a flood of
connections used them all, writing the hard state failed with EMFILE and the node stopped
for good. So at startup the soft RLIMIT_NOFILE is raised to the hard one, and the connection
limits of every port are lowered until, all full, they leave ``reserved_descriptors`` free
(plus room for the connections an event loop accepts before our code can refuse them).
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
from dataclasses import dataclass
from typing import Callable

from keyval.errors import KeyvalError

try:
    import resource
except ImportError:  # not on Windows: no limit to raise or plan for
    resource = None  # type: ignore[assignment]

log = logging.getLogger("keyval.descriptors")

#: Unlimited hard limits are taken as this (the Linux default of fs.nr_open).
UNLIMITED = 1 << 20
#: A listener's backlog (asyncio's and uvloop's default): connections accepted at once,
#: each a descriptor until the protocol refuses it.
ACCEPT_BURST = 100
LISTENERS = 3  # client, peer, metrics
METRICS_CONNECTIONS = 32
MIN_CLIENT_CONNECTIONS = 16


def raise_nofile_limit() -> int:
    """Raise the soft descriptor limit to the hard one; the limit now in force."""
    if resource is None:
        return UNLIMITED
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = UNLIMITED if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, target, exc)
    return UNLIMITED if soft == resource.RLIM_INFINITY else soft


def nofile_limit() -> int:
    if resource is None:
        return UNLIMITED
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return UNLIMITED if soft == resource.RLIM_INFINITY else soft


def open_descriptors() -> int:
    """Descriptors this process has open now (0 where the platform does not say)."""
    for directory in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(directory))
        except OSError:
            continue
    return 0


@dataclass(frozen=True)
class DescriptorPlan:
    limit: int
    in_use: int
    reserved: int
    client_connections: int
    peer_connections: int
    metrics_connections: int


def plan_descriptors(limit: int, in_use: int, reserved: int, client_wanted: int, peer_wanted: int) -> DescriptorPlan:
    """Connection limits that, all reached at once, still leave ``reserved`` descriptors."""
    usable = limit - in_use - reserved - LISTENERS * ACCEPT_BURST
    peers = min(peer_wanted, max(8, usable // 4))
    metrics = METRICS_CONNECTIONS
    clients = min(client_wanted, usable - peers - metrics)
    if clients < MIN_CLIENT_CONNECTIONS:
        raise KeyvalError(
            f"only {limit} file descriptors (ulimit -n), {in_use} in use: too few for {reserved} reserved_descriptors, "
            f"{peers} peer and {MIN_CLIENT_CONNECTIONS} client connections; raise the limit or lower reserved_descriptors")
    return DescriptorPlan(limit, in_use, reserved, clients, peers, metrics)


def on_accept_out_of_descriptors(loop: asyncio.AbstractEventLoop, report: Callable[[str], None]) -> None:
    """asyncio's servers answer EMFILE in accept() by pausing that listener for a second and
    logging the traceback each time; make that one counted, rate-limited line instead.
    (uvloop's libuv closes a spare descriptor, accepts and drops the waiting connections,
    and reopens it: no error surfaces, and neither loop's listener dies or spins.)"""
    previous = loop.get_exception_handler()

    def handle(loop: asyncio.AbstractEventLoop, context: dict) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE) and "accept" in context.get("message", ""):
            report(f"accept() failed: {exc.strerror}; the listener pauses and retries")
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handle)
