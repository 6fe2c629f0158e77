"""The Ready driver: the one implementation of the Ready contract, in production and simulation.

It owns two tasks on the event loop. The tick task turns the loop's clock into ``core.tick()``
calls. The Ready task executes the core's batches of work (``Ready``) in the contract's order:

1. **persist** the snapshot, the entries and the hard state — a leader's messages may leave
   first (``Ready.send_before_persist``) so followers write while we do;
2. **sync** them with one fsync for the whole batch (group commit: writes that arrive during
   the fsync form the next batch);
3. **send** the messages (unless they went first);
4. **apply** the snapshot, the committed entries and the confirmed reads;
5. **advance** the core, release the reads now answerable, start a snapshot if asked.

Persisting (1 and 2) that fails for want of disk space or descriptors (ENOSPC, EDQUOT,
EMFILE, ENFILE: ``keyval.runtime.space``) is retried — the same writes again, until they
succeed — and is never fatal; any other error while persisting stops the node.

Invariant kept here: an entry is applied only once it is durable in this node's storage —
entries committed below this Ready's first new entry were made durable by an earlier Ready,
so they are applied before this Ready's fsync; the rest only after it.

Everything outside the core arrives through narrow parts (``DriverParts``): the storage, a
``send`` function, the state machine, the request layer, the snapshotter, the event loop's
clock, and an ``OffLoop`` that runs an fsync (or a snapshot install) off the loop. Production
passes the real ones (``keyval.runtime.node``); the simulator passes simulated storage,
network, time and executor, and faults (crash points) are faults of those parts.
"""
from __future__ import annotations

import asyncio
import bisect
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Protocol, Sequence

from keyval.raft import Entry, RaftCore, Ready, Role, Snapshot
from keyval.raft import messages as m

from .requests import Requests
from .space import resource_errno
from .timing import Timing

log = logging.getLogger("keyval.node")

#: A persist that failed for want of disk space or descriptors is retried after this many
#: seconds, doubling up to RETRY_MAX_DELAY.
RETRY_FIRST_DELAY = 0.05
RETRY_MAX_DELAY = 1.0


class OffLoop(Protocol):
    """Runs blocking storage work without blocking the loop."""

    def sync(self, fn: Callable[[], Any]) -> Awaitable[Any]:
        """Run the log fsync ``fn``; calls complete in order."""

    def blocking(self, fn: Callable[[], Any]) -> Awaitable[Any]:
        """Run other blocking work (installing a received snapshot)."""


class StateMachine(Protocol):
    def apply(self, entry: Entry) -> Any:
        """Apply one committed entry; its result for the waiting client (or None)."""

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the state with a snapshot's."""


class Snapshotter(Protocol):
    #: held while a snapshot is written, and by the driver while it installs one received
    lock: asyncio.Lock

    def busy(self) -> bool: ...

    def start(self, full_compaction: bool) -> Any: ...


class DriverEvents(Protocol):
    """What the node does with the driver's news (log lines, metrics, plugin hooks)."""

    def role_changed(self, soft_state: tuple[Role, str, int]) -> None: ...

    def persisted(self, entries: int, sync_seconds: float) -> None: ...

    def ticked(self, now: float) -> None:
        """Once per tick turn (at most one log line a minute belongs here)."""

    def failed(self, exc: BaseException) -> None:
        """The driver stopped on an error it cannot continue past (an I/O error while
        persisting, a broken invariant)."""

    def persist_failed(self, exc: BaseException, code: int, attempt: int) -> None:
        """Persisting a Ready failed for want of space or descriptors (``code``, an errno);
        the driver tries again (``attempt`` counts from 1)."""

    def persist_recovered(self, attempts: int, seconds: float) -> None:
        """A persist that failed ``attempts`` times has now succeeded."""


@dataclass
class DriverParts:
    core: RaftCore
    storage: Any  # keyval.plugin_api.storage.Storage
    send: Callable[[Sequence[m.Message]], None]
    machine: StateMachine
    requests: Requests
    snapshots: Snapshotter
    off_loop: OffLoop
    events: DriverEvents
    timing: Timing


class ReadyDriver:
    def __init__(self, parts: DriverParts) -> None:
        self.parts = parts
        self.core = parts.core
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self.stopped = False

    def start(self, name: str) -> None:
        self._tasks = [
            asyncio.create_task(self._tick_loop(), name=f"{name}-tick"),
            asyncio.create_task(self._ready_loop(), name=f"{name}-ready"),
        ]

    def halt(self) -> None:
        """Stop at once, wherever the tasks are (a crash, or the first half of ``stop``)."""
        self.stopped = True
        for task in self._tasks:
            task.cancel()

    async def stop(self) -> None:
        self.halt()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def wake(self) -> None:
        """Ask for a turn: there are proposals to flush or Readies to handle."""
        self._wake.set()

    def deliver(self, message: m.Message) -> None:
        """A peer's message, from the transport."""
        if self.stopped:
            return
        self.core.step(message)
        self._wake.set()

    # -- time --------------------------------------------------------------------------------
    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        timing = self.parts.timing
        interval = timing.tick_interval
        next_tick = loop.time() + interval
        while True:
            await asyncio.sleep(max(0.0, next_tick - loop.time()))
            now = loop.time()
            # Catch up missed ticks (a long pause) but never more than an election's worth.
            missed = min(int((now - next_tick) / interval) + 1, timing.election_ticks)
            for _ in range(missed):
                self.core.tick()
            next_tick += missed * interval
            if next_tick < now:
                next_tick = now + interval
            self.parts.requests.deadlines.expire(now)
            self.parts.events.ticked(now)
            self._wake.set()

    # -- the Ready loop ------------------------------------------------------------------------
    async def _ready_loop(self) -> None:
        requests = self.parts.requests
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                requests.flush()
                while self.core.has_ready():
                    await self.handle_ready()
                    requests.flush()
        except (asyncio.CancelledError, GeneratorExit):
            raise  # stopped, or the task was dropped with its loop
        except BaseException as exc:
            # Persisting failed (an I/O error) or an invariant broke: continuing could
            # acknowledge writes that are not durable. The node stops, loudly.
            self.stopped = True
            self.parts.events.failed(exc)

    async def handle_ready(self) -> None:
        parts, core = self.parts, self.core
        rd = core.ready()
        # A leader's messages may go first: followers then write in parallel with our fsync.
        sent_early = rd.send_before_persist and bool(rd.messages)
        if sent_early:
            parts.send(rd.messages)
        # 1. persist, and apply what an earlier Ready made durable; 2. sync
        now, later = self._split_committed(rd)
        await self._make_durable(rd, now)
        # 3. send
        if rd.messages and not sent_early:
            parts.send(rd.messages)
        # 4. apply
        if rd.soft_state is not None:
            parts.events.role_changed(rd.soft_state)
        if rd.snapshot is not None:
            parts.machine.restore(rd.snapshot)
        self._apply(later)
        requests = parts.requests
        for read in rd.read_states:
            requests.read_confirmed(read.context, read.index)
        for context in rd.dropped_reads:
            requests.read_dropped(context)
        # 5. advance
        core.advance(rd)
        requests.release(core.log.applied)
        if rd.snapshot_request and not parts.snapshots.busy():
            # In the background; if one runs, the core asks again later.
            parts.snapshots.start(False)

    async def _make_durable(self, rd: Ready, durable_before: Sequence[Entry]) -> None:
        """Persist and sync ``rd``, applying ``durable_before`` once in between. A failure for
        want of space or descriptors is retried until it succeeds: the snapshot, the entries
        (appending again first discards what a failed attempt left: the storage contract)
        and the hard state are written again, then synced."""
        attempt, started, delay = 0, 0.0, RETRY_FIRST_DELAY
        to_apply: Sequence[Entry] | None = durable_before
        while True:
            try:
                await self._persist(rd)
                if to_apply is not None:
                    self._apply(to_apply)
                    to_apply = None
                if rd.entries:
                    await self._sync(rd)
                break
            except Exception as exc:
                code = resource_errno(exc)
                if code is None:
                    raise
                attempt += 1
                if attempt == 1:
                    started = asyncio.get_running_loop().time()
                self.parts.events.persist_failed(exc, code, attempt)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_DELAY)
        if attempt:
            self.parts.events.persist_recovered(attempt, asyncio.get_running_loop().time() - started)

    async def _persist(self, rd: Ready) -> None:
        storage = self.parts.storage
        if rd.snapshot is not None:
            async with self.parts.snapshots.lock:  # not while one of ours is being written
                await self.parts.off_loop.blocking(lambda: storage.apply_snapshot(rd.snapshot))
        if rd.entries:
            storage.append(rd.entries)
        if rd.hard_state is not None:
            # Durable on return when term or vote changed (the storage contract); a new
            # commit index alone may be written lazily, so it costs no fsync here.
            storage.set_hard_state(rd.hard_state)

    @staticmethod
    def _split_committed(rd: Ready) -> tuple[Sequence[Entry], Sequence[Entry]]:
        """The committed entries to apply before this Ready's fsync, and those after it.

        Entries committed below this Ready's first new entry were made durable by an earlier
        Ready: applied now rather than after this fsync, a write does not wait a whole extra
        batch cycle for its answer. A new snapshot or role goes first, so then nothing does."""
        committed = rd.committed_entries
        if not (rd.entries and committed) or rd.snapshot is not None or rd.soft_state is not None:
            return (), committed
        durable = bisect.bisect_left([e.index for e in committed], rd.entries[0].index)
        return committed[:durable], committed[durable:]

    async def _sync(self, rd: Ready) -> None:
        """Make this Ready's entries durable: one fsync for the batch."""
        parts = self.parts
        storage = parts.storage
        started = time.perf_counter()  # for the fsync metric only
        if self.core.role is Role.LEADER or not parts.timing.follower_sync_inline:
            await parts.off_loop.sync(storage.sync)
        else:
            storage.sync()  # see Timing.follower_sync_inline
        parts.events.persisted(len(rd.entries), time.perf_counter() - started)

    def _apply(self, entries: Sequence[Entry]) -> None:
        machine, requests = self.parts.machine, self.parts.requests
        for entry in entries:
            requests.applied(entry.index, entry.term, machine.apply(entry))
