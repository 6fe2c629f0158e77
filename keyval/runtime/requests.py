"""The request layer: what a client's write or read waits on between the service and the core.

- **Batching.** Writes are queued, not proposed at once: every write that arrives while the
  Ready driver is busy (an fsync, say) enters the log with the others as one batch — one
  AppendEntries per follower and one fsync — when the driver next turns (``flush``).
- **Deadlines.** Every waiting request has one; an expired one fails with
  ``asyncio.TimeoutError`` (outcome unknown for a write: it may still apply).
- **Read rounds.** Linearizable reads share one ReadIndex confirmation per round; a read is
  answered once the state machine has applied the confirmed index, never before.
- **Exactly-once retries.** A client numbers its writes (client id, seq). A retry that arrives
  while the first attempt still waits on this node joins that attempt instead of entering the
  log again; a retry of a write already applied is answered from the state machine's session
  table (``keyval.kv``), the one place that survives a change of leader.
- **Applied waiters.** A write's future is resolved when its entry is applied here — with its
  result if the entry at that index is the one proposed (same term), else ``ProposalLost``.

Everything here runs on the event loop; time is read from ``clock`` (the loop's own time, so
a simulated loop makes it simulated time).
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
from typing import Any, Callable, Hashable

from keyval.errors import NodeUnavailable, ProposalLost
from keyval.raft import NotLeader, RaftCore, RaftError, Role

Clock = Callable[[], float]


class Deadlines:
    """Timeouts of queued writes and reads, expired by the driver's tick loop: one heap push
    per request instead of a timer and a wrapper future each (``asyncio.wait_for``), which is a
    measurable share of a busy leader's CPU. A timeout fires up to one tick late."""

    __slots__ = ("_heap", "_seq", "_clock")

    def __init__(self, clock: Clock) -> None:
        self._heap: list[tuple[float, int, asyncio.Future]] = []
        self._seq = itertools.count()
        self._clock = clock

    def add(self, fut: asyncio.Future, timeout: float) -> None:
        heapq.heappush(self._heap, (self._clock() + timeout, next(self._seq), fut))

    def expire(self, now: float) -> None:
        heap = self._heap
        # Answered requests leave from the top too, not at their deadline: at thousands of
        # writes a second, kept until then they would be tens of thousands of live futures,
        # each one more object for every full garbage collection to walk (a 45 ms pause).
        # Requests share one timeout, so the oldest are on top and answered first; one still
        # waiting holds back the cleanup behind it until it is answered or times out.
        while heap and (heap[0][0] <= now or heap[0][2].done()):
            fut = heapq.heappop(heap)[2]
            if not fut.done():
                fut.set_exception(asyncio.TimeoutError())


class ReadRound:
    """Linearizable reads that share one ReadIndex confirmation."""

    __slots__ = ("context", "waiters", "index")

    def __init__(self, context: bytes) -> None:
        self.context = context
        self.waiters: list[asyncio.Future] = []
        self.index: int | None = None


class Requests:
    """Writes and linearizable reads waiting on one node's core and state machine.

    ``wake`` asks the driver for a turn (it flushes the queued proposals and handles the
    Readies they produce); ``on_proposal`` / ``on_read`` are done-callbacks for counting.
    """

    def __init__(self, node_id: str, core: RaftCore, clock: Clock, wake: Callable[[], None],
                 on_proposal: Callable[[asyncio.Future], Any] | None = None,
                 on_read: Callable[[asyncio.Future], Any] | None = None,
                 check_writes: Callable[[], None] | None = None) -> None:
        self.node_id = node_id
        #: raises if the node takes no new writes now (the NOSPACE alarm: keyval.runtime.space)
        self.check_writes = check_writes or (lambda: None)
        self.core = core
        self.deadlines = Deadlines(clock)
        self._wake = wake
        self._on_proposal = on_proposal
        self._on_read = on_read
        #: index -> (term proposed in, future of the write's result)
        self._waiters: dict[int, tuple[int, asyncio.Future]] = {}
        #: writes waiting to be proposed together at the driver's next turn
        self._proposals: list[tuple[bytes, asyncio.Future]] = []
        #: (client, seq) of writes waiting here -> their future (retries join it)
        self._sessions: dict[Hashable, asyncio.Future] = {}
        self._read_rounds: dict[bytes, ReadRound] = {}
        self._next_round: ReadRound | None = None
        self._read_seq = 0
        self._applied_waiters: list[tuple[int, asyncio.Future]] = []

    # -- writes --------------------------------------------------------------------------
    def submit(self, data: bytes, timeout: float, session: Hashable | None = None) -> asyncio.Future:
        """Queue a command for replication (raises NotLeader at once); a future of its result
        once applied here, failing with ProposalDropped, ProposalLost or asyncio.TimeoutError
        (outcome unknown: the write may still apply). Cancelling it only stops the waiting.
        Raises NoSpace at once, before proposing, while the node's NOSPACE alarm is raised.

        ``session`` is the client's (client, seq) of the write, if it has one: a retry of a
        write still waiting here gets a future of the same outcome, not a second entry."""
        if self.core.role is not Role.LEADER:
            raise NotLeader(self.core.leader)
        loop = asyncio.get_running_loop()
        if session is not None:
            first = self._sessions.get(session)
            if first is not None and not first.done():
                return self._follow(loop, first, timeout)
        self.check_writes()
        fut = loop.create_future()
        self._proposals.append((data, fut))
        if session is not None:
            self._sessions[session] = fut
            fut.add_done_callback(lambda f, s=session: self._sessions.pop(s, None) if self._sessions.get(s) is f else None)
        self._wake()
        self.deadlines.add(fut, timeout)
        if self._on_proposal is not None:
            fut.add_done_callback(self._on_proposal)
        return fut

    def _follow(self, loop: asyncio.AbstractEventLoop, first: asyncio.Future, timeout: float) -> asyncio.Future:
        """A future that ends as ``first`` does (or times out on its own deadline)."""
        fut = loop.create_future()

        def copy(done: asyncio.Future) -> None:
            if fut.done():
                return
            if done.cancelled():
                fut.set_exception(asyncio.TimeoutError())
            elif done.exception() is not None:
                fut.set_exception(done.exception())
            else:
                fut.set_result(done.result())

        first.add_done_callback(copy)
        self.deadlines.add(fut, timeout)
        return fut

    def flush(self) -> None:
        """Propose the queued writes as one batch (the driver calls this at each turn)."""
        if not self._proposals:
            return
        batch, self._proposals = self._proposals, []
        try:
            term, first = self.core.propose_batch([data for data, _ in batch])
        except RaftError as exc:
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for offset, (_, fut) in enumerate(batch):
            self._waiters[first + offset] = (term, fut)

    def wait_for_index(self, term: int, index: int) -> asyncio.Future:
        """A future of the result of the entry proposed at ``index`` in ``term`` (used for
        configuration changes, which the core proposes one at a time)."""
        fut = asyncio.get_running_loop().create_future()
        self._waiters[index] = (term, fut)
        self._wake()
        return fut

    def forget_index(self, index: int) -> None:
        self._waiters.pop(index, None)

    def applied(self, index: int, term: int, result: Any) -> None:
        """The entry at ``index`` (of ``term``) was applied with ``result``."""
        waiter = self._waiters.pop(index, None)
        if waiter is None:
            return
        proposed_in, fut = waiter
        if fut.done():
            return
        if proposed_in == term:
            fut.set_result(result)
        else:
            # Another leader's entry took the index: ours was never committed and never will be.
            fut.set_exception(ProposalLost("the write was superseded after a leader change; retry"))

    # -- linearizable reads ----------------------------------------------------------------
    def read_barrier(self, timeout: float) -> asyncio.Future:
        """A future resolved once this node's state machine reflects every write acknowledged
        before the call (ReadIndex); raises NotLeader at once. Concurrent calls share a round."""
        if self.core.role is not Role.LEADER:
            raise NotLeader(self.core.leader)
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        if self._next_round is None:
            self._read_seq += 1
            self._next_round = ReadRound(f"{self.node_id}:{self._read_seq}".encode())
            loop.call_soon(self._start_read_round)
        self._next_round.waiters.append(fut)
        self.deadlines.add(fut, timeout)
        if self._on_read is not None:
            fut.add_done_callback(self._on_read)
        return fut

    def _start_read_round(self) -> None:
        round_, self._next_round = self._next_round, None
        if round_ is None:
            return
        try:
            self.core.read_index(round_.context)
        except NotLeader as exc:
            for fut in round_.waiters:
                if not fut.done():
                    fut.set_exception(exc)
            return
        self._read_rounds[round_.context] = round_
        self._wake()

    def read_confirmed(self, context: bytes, index: int) -> None:
        """The core confirmed a round: its reads wait until ``index`` is applied."""
        round_ = self._read_rounds.pop(context, None)
        if round_ is None:
            return
        for fut in round_.waiters:
            self._applied_waiters.append((index, fut))

    def read_dropped(self, context: bytes) -> None:
        round_ = self._read_rounds.pop(context, None)
        if round_ is None:
            return
        for fut in round_.waiters:
            if not fut.done():
                fut.set_exception(NotLeader(self.core.leader))

    def release(self, applied: int) -> None:
        """Answer the reads whose confirmed index is now applied (after each Ready)."""
        if not self._applied_waiters:
            return
        waiting = []
        for index, fut in self._applied_waiters:
            if index <= applied:
                if not fut.done():
                    fut.set_result(None)
            else:
                waiting.append((index, fut))
        self._applied_waiters = waiting

    # -- shutdown --------------------------------------------------------------------------
    def fail_all(self, reason: str) -> None:
        """The node stops: every waiting request fails (outcome unknown for writes)."""
        pending = [f for _, f in self._waiters.values()] + [f for _, f in self._proposals]
        pending += [f for _, f in self._applied_waiters]
        for round_ in [*self._read_rounds.values(), *([self._next_round] if self._next_round else [])]:
            pending += round_.waiters
        for fut in pending:
            if not fut.done():
                fut.set_exception(NodeUnavailable(reason))
