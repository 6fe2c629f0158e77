"""Shared bits of the udp/faulty transport tests (no pytest-asyncio: each test runs its loop).

Named test_* only to stay within the paths of the transport tests; it holds no tests.
"""
from __future__ import annotations

import asyncio
import os
import socket
from typing import Any, Awaitable, Callable

from keyval.raft.messages import Heartbeat


def run(coro: Awaitable[Any], timeout: float = 20.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


def write_secret(path: os.PathLike, secret: bytes = b"s3cret-for-tests") -> str:
    with open(path, "wb") as f:
        f.write(secret)
    os.chmod(path, 0o600)
    return str(path)


def hb(frm: str = "a", to: str = "b", commit: int = 1) -> Heartbeat:
    return Heartbeat(term=1, frm=frm, to=to, commit=commit)


class Sink:
    """A ``deliver`` that keeps what arrives."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    def __call__(self, message: Any) -> None:
        self.messages.append(message)

    def __len__(self) -> int:
        return len(self.messages)


def raw_udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    return sock


def addr_tuple(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)
