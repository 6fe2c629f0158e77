"""The request deadlines a node keeps (keyval.runtime.requests.Deadlines): an unanswered request times
out, an answered one is forgotten at once instead of living on until its deadline."""
from __future__ import annotations

import asyncio

import pytest

from keyval.runtime.requests import Deadlines


def test_unanswered_requests_time_out_and_answered_ones_are_dropped_early():
    asyncio.run(_scenario())


async def _scenario():
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(loop.time)
    answered = [loop.create_future() for _ in range(1000)]
    for fut in answered:  # a node gives every request the same timeout
        deadlines.add(fut, 5.0)
        fut.set_result(None)
    waiting = loop.create_future()
    deadlines.add(waiting, 5.0)
    now = loop.time()
    deadlines.expire(now)  # no deadline passed: only the answered ones go
    assert len(deadlines._heap) == 1 and not waiting.done()
    deadlines.expire(now + 5.1)
    with pytest.raises(asyncio.TimeoutError):
        waiting.result()
    assert deadlines._heap == []
