"""The simulated network endpoint and fsync executor a simulated node's runtime is given.

``SimTransport`` is a full ``keyval.plugin_api.transport.Transport``: ``send`` hands the message to the
simulated network (which loses, delays, duplicates and partitions); the network calls
``deliver`` at the arrival time. A crashed incarnation's transport is dead: it sends nothing
and is delivered nothing. A fault armed on it ("after-send") crashes the node right after a
message left.

``SimOffLoop`` is the runtime's ``OffLoop``: an fsync takes 1..``fsync_ms`` ms of simulated
time (calls complete in order, as the production sync thread runs them), during which the
loop — and the core — keep running; with ``fsync_ms`` 0 it is done at once.
"""
from __future__ import annotations

import asyncio
import random
from typing import Any, Callable

from keyval.raft import messages as m

from .sim_loop import SimulatedCrash


class SimTransport:
    def __init__(self, send: Callable[[m.Message], None], fault: Callable[[], str | None],
                 crash: Callable[[str], None]) -> None:
        self._send = send
        self._fault = fault
        self._crash = crash
        self._deliver: Callable[[m.Message], None] | None = None
        self._address = ""
        self._cluster_id: str | None = None
        self.dead = False
        self.sent = 0

    async def start(self, node_id: str, address: str, deliver: Callable[[m.Message], None]) -> None:
        self._address = address
        self._deliver = deliver

    def address(self) -> str:
        return self._address

    def cluster_id(self) -> str | None:
        return self._cluster_id

    def set_cluster_id(self, cluster_id: str) -> None:
        self._cluster_id = cluster_id

    def send(self, peer_id: str, address: str | None, message: m.Message) -> None:
        if self.dead:
            return
        self.sent += 1
        self._send(message)
        if self._fault() == "after-send":
            self._crash("after sending")
            raise SimulatedCrash("after sending")

    def deliver(self, message: m.Message) -> None:
        if not self.dead and self._deliver is not None:
            self._deliver(message)

    def stats(self) -> dict[str, int]:
        return {"sent": self.sent}

    async def close(self) -> None:
        self.dead = True


class SimOffLoop:
    def __init__(self, loop: asyncio.AbstractEventLoop, rng: random.Random, fsync_ms: int) -> None:
        self._loop = loop
        self._rng = rng
        self._fsync_ms = fsync_ms
        self._last_done = 0.0

    def sync(self, fn: Callable[[], Any]) -> asyncio.Future:
        if not self._fsync_ms:
            return self.blocking(fn)
        loop = self._loop
        done_at = max(self._last_done, loop.time() + self._rng.randint(1, self._fsync_ms) / 1000)
        self._last_done = done_at
        fut = loop.create_future()
        loop.call_at(done_at, self._finish, fut, fn)
        return fut

    def blocking(self, fn: Callable[[], Any]) -> asyncio.Future:
        fut = self._loop.create_future()
        self._finish(fut, fn)
        return fut

    @staticmethod
    def _finish(fut: asyncio.Future, fn: Callable[[], Any]) -> None:
        try:
            result = fn()
        except BaseException as exc:  # noqa: B036 - the awaiting driver decides (a crash ends it)
            if not fut.done():
                fut.set_exception(exc)
            return
        if not fut.done():
            fut.set_result(result)
