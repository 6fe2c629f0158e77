"""The node's fsync thread: results and errors come back to the awaiting task, calls run in
order, and close() waits for the call in progress."""
from __future__ import annotations

import asyncio
import threading
import time

import pytest

from keyval.runtime.sync_thread import SyncThread


def test_results_errors_and_order():
    async def main():
        sync = SyncThread("test-fsync")
        seen = []
        futures = [sync.run(lambda i=i: seen.append(i) or i * i) for i in range(100)]
        assert await asyncio.gather(*futures) == [i * i for i in range(100)]
        assert seen == list(range(100))

        def fails():
            raise OSError(5, "Input/output error")

        with pytest.raises(OSError, match="Input/output error"):
            await sync.run(fails)
        assert await sync.run(threading.current_thread) is not threading.current_thread()
        await sync.close()

    asyncio.run(main())


def test_close_waits_for_the_call_in_progress_even_when_its_waiter_is_gone():
    async def main():
        sync = SyncThread("test-fsync")
        finished = []
        waiter = asyncio.ensure_future(sync.run(lambda: (time.sleep(0.2), finished.append(True))))
        await asyncio.sleep(0.05)
        waiter.cancel()  # the Ready loop was cancelled mid-fsync (node stopping)
        await sync.close()
        assert finished == [True]  # storage may be closed now: nothing is writing to it

    asyncio.run(main())
