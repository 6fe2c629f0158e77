"""One long-lived thread that runs a node's log fsyncs off the event loop.

``loop.run_in_executor`` costs a ThreadPoolExecutor's locks, condition variables and work-item
objects per call — measured as the largest single share of a leader's CPU at one client. Here
a call is a put on a C queue one way and ``call_soon_threadsafe`` the other.
"""
from __future__ import annotations

import asyncio
import queue
import threading
from typing import Any, Callable


class SyncThread:
    def __init__(self, name: str) -> None:
        self._name = name
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def run(self, fn: Callable[[], Any]) -> asyncio.Future:
        """``fn()`` in the thread; a future of its result. Calls run one at a time, in order."""
        loop = asyncio.get_running_loop()
        if self._thread is None:
            self._thread = threading.Thread(target=self._main, name=self._name, daemon=True)
            self._thread.start()
        fut = loop.create_future()
        self._jobs.put((loop, fn, fut))
        return fut

    async def close(self) -> None:
        """Finish the call in progress (never leave storage mid-fsync), then end the thread."""
        if self._thread is None:
            return
        done = self.run(lambda: None)
        self._jobs.put(None)
        await asyncio.shield(done)
        self._thread = None

    def _main(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            loop, fn, fut = job
            try:
                result, error = fn(), None
            except BaseException as exc:  # handed to the awaiting task, which stops the node
                result, error = None, exc
            try:
                loop.call_soon_threadsafe(_resolve, fut, result, error)
            except RuntimeError:  # the loop is closed: nobody waits any more
                return


def _resolve(fut: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if fut.cancelled():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)
