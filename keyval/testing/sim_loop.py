"""An asyncio event loop on simulated time, for running the node runtime in the simulator.

The production runtime is asyncio code; to simulate it rather than a copy of it, the
simulator runs it on this loop. Time never passes by itself: when nothing is ready to run at
the current instant the loop jumps to its next timer. Callbacks run in asyncio's own order
(first in, first out; timers by due time), so one seed gives one history.

``on_quiet`` runs at each such jump — after everything that happens at one instant has
happened — which is where the simulator checks its invariants. Blocking work handed to
``run_in_executor`` runs inline: a simulated disk does not block.
"""
from __future__ import annotations

import asyncio
import selectors
from typing import Any, Callable


class SimulatedCrash(BaseException):
    """Raised into code of a node incarnation that has crashed, so that it stops where it is.

    A BaseException: the runtime's ``except Exception`` handlers (a plugin hook, a listener)
    must not swallow it and carry on as if the process were still alive."""


class _VirtualSelector(selectors.BaseSelector):
    """Holds the loop's self-pipe registration; ``select`` is where simulated time passes."""

    def __init__(self) -> None:
        self._map: dict[int, selectors.SelectorKey] = {}
        self.loop: SimLoop | None = None

    def register(self, fileobj, events, data=None):
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self._map[fd] = key
        return key

    def unregister(self, fileobj):
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        return self._map.pop(fd)

    def select(self, timeout=None):
        if timeout == 0:
            return []
        self.loop._quiet()
        return []

    def get_map(self):
        return self._map

    def close(self) -> None:
        self._map.clear()


class SimLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        selector = _VirtualSelector()
        super().__init__(selector)
        selector.loop = self
        self._now = 0.0
        #: called once per instant, after everything due at it has run
        self.on_quiet: Callable[[], None] | None = None
        self._stop_when: Callable[[], bool] | None = None
        self._failure: BaseException | None = None
        self.set_exception_handler(self._on_exception)

    def time(self) -> float:
        return self._now

    def run_in_executor(self, executor, func, *args) -> asyncio.Future:
        fut = self.create_future()
        try:
            fut.set_result(func(*args))
        except BaseException as exc:  # noqa: B036 - handed to the awaiting task, as a thread would
            fut.set_exception(exc)
        return fut

    def run_until(self, when: float, stop: Callable[[], bool] | None = None) -> None:
        """Run until simulated time ``when``, or the first quiet instant at which ``stop()``
        is true. Re-raises the first exception a callback raised (other than a crash)."""
        self._stop_when = stop
        handle = self.call_at(when, self.stop)
        try:
            self.run_forever()
        finally:
            handle.cancel()
            self._stop_when = None
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure
        if self._now < when and (stop is None or not stop()):
            self._now = when

    def close(self) -> None:
        """End the run: the tasks still pending (a restart not yet begun, a node's driver)
        are dropped where they stand, as a power-off would."""
        for task in asyncio.all_tasks(self):
            task.get_coro().close()
        super().close()

    # -- the loop's inner workings ----------------------------------------------------------
    def _quiet(self) -> None:
        """Nothing is ready now: check, then move time to the next timer."""
        if self.on_quiet is not None:
            try:
                self.on_quiet()
            except BaseException as exc:  # noqa: B036 - a violation ends the run
                self._failure = self._failure or exc
                self.stop()
                return
        if self._stop_when is not None and self._stop_when():
            self.stop()
            return
        if self._ready:  # type: ignore[attr-defined]
            return  # the check scheduled something for this instant
        scheduled = self._scheduled  # type: ignore[attr-defined]
        if not scheduled:
            raise RuntimeError("simulation deadlock: nothing is scheduled")
        self._now = max(self._now, scheduled[0]._when)

    def _on_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, SimulatedCrash):
            return  # code of a crashed incarnation ran into its dead disk or network
        if exc is None or "never retrieved" in context.get("message", ""):
            # A crashed incarnation's abandoned task, reported whenever the garbage collector
            # gets to it: when that is must not decide a run's outcome.
            return
        if self._failure is None:
            self._failure = exc
        self.stop()
