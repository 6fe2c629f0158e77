"""Which asyncio event loop a KeyVal process runs.

``auto`` (the default) takes uvloop — libuv's loop, written in C — when it is installed (it is
a dependency on Linux and macOS), and asyncio's own loop otherwise; ``uvloop`` insists on it,
``asyncio`` insists on the standard one. Every message between nodes and every request of a
client is a few callbacks of the loop, so its cost is paid at each hop: measured on a 3-node
loopback cluster, put p50 at one client 1.32 -> 1.12 ms (benchmarks/README.md).
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable, Coroutine

from keyval.errors import ConfigError

EVENT_LOOPS = ("auto", "uvloop", "asyncio")


def loop_factory(name: str = "auto") -> Callable[[], asyncio.AbstractEventLoop]:
    """A function making a new event loop of the kind ``name`` says."""
    if name not in EVENT_LOOPS:
        raise ConfigError(f"event_loop: {name!r} is not one of {', '.join(EVENT_LOOPS)}")
    if name == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError:
        if name == "uvloop":
            raise ConfigError("event_loop: uvloop is not installed (pip install uvloop)") from None
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def run(main: Coroutine[Any, Any, Any], name: str = "auto") -> Any:
    """``asyncio.run(main)`` on the event loop ``name`` says."""
    with asyncio.Runner(loop_factory=loop_factory(name)) as runner:
        return runner.run(main)
