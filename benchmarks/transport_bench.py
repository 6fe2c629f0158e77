"""Transport throughput on loopback, beside a raw asyncio floor measured in the same run.

    .venv/bin/python benchmarks/transport_bench.py [--seconds 1.5] [--transports tcp,udp] [--secret]

For each transport (chosen through the plugin manager, as a node does) and each size, one
sender pushes messages to one receiver in the same event loop, keeping at most a window of
messages outstanding (so no bounded queue overflows), and the rate of *delivered* messages
is reported. Small = an AppendEntries with one 100 B entry; large = one 64 KiB entry.

The floors do the least an asyncio program can: a stream writing length-prefixed frames of
the same payload size and a reader parsing them (``readexactly``), and bare datagrams through
a ``DatagramProtocol``, one message per datagram. Every transport is compared to both floors
(msg/s ratios). The udp transport coalesces small messages queued together into one
datagram, which is why it can beat the one-message-per-datagram floor. With ``--secret``
each transport also runs with a cluster secret (every frame or datagram HMAC-tagged), and
the line ends with its rate as a ratio of the same transport without one, in the same run.
Not a test; the figures depend on the machine and on what else it runs.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import socket
import struct
import sys
import tempfile
import time
from typing import Callable

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from keyval.plugin_api.loading import build_plugin_manager, choose_transport  # noqa: E402
from keyval.raft.messages import AppendEntries  # noqa: E402
from keyval.raft.types import Entry  # noqa: E402

SIZES = {"small": 100, "large": 64 * 1024}
WINDOW = {"small": 1000, "large": 64}
STALL = 0.5  # seconds without progress: the outstanding messages count as lost (udp)


class Counter:
    def __init__(self) -> None:
        self.n = 0
        self._target = 0
        self._event: asyncio.Event | None = None

    def hit(self, *_: object) -> None:
        self.n += 1
        if self._event is not None and self.n >= self._target:
            self._event.set()

    async def reach(self, target: int) -> bool:
        if self.n >= target:
            return True
        self._target, self._event = target, asyncio.Event()
        try:
            await asyncio.wait_for(self._event.wait(), STALL)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            self._event = None


async def pump(send: Callable[[], None], counter: Counter, window: int, seconds: float) -> tuple[float, int, int]:
    """Send for about ``seconds`` keeping at most ``window`` outstanding; (elapsed, delivered, lost)."""
    sent = lost = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(window - (sent - counter.n - lost)):
            send()
            sent += 1
        if not await counter.reach(sent - lost - window // 2):
            lost = sent - counter.n
    if not await counter.reach(sent - lost):
        lost = sent - counter.n
    return time.perf_counter() - start, counter.n, lost


async def bench_transport(name: str, size: str, seconds: float,
                          options: dict | None = None) -> tuple[float, int, int]:
    backend = choose_transport(build_plugin_manager(), name)
    a, b = backend.factory(dict(options or {})), backend.factory(dict(options or {}))
    counter = Counter()
    await a.start("a", "127.0.0.1:0", lambda m: None)
    await b.start("b", "127.0.0.1:0", counter.hit)
    message = AppendEntries(1, "a", "b", 10, 1, (Entry(1, 11, data=os.urandom(SIZES[size])),), 10)
    address = b.address
    try:
        return await pump(lambda: a.send("b", address, message), counter, WINDOW[size], seconds)
    finally:
        await a.close()
        await b.close()


async def bench_raw_stream(size: str, seconds: float) -> tuple[float, int, int]:
    counter = Counter()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (length,) = struct.unpack(">I", await reader.readexactly(4))
                await reader.readexactly(length)
                counter.hit()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    payload = os.urandom(SIZES[size])
    frame = struct.pack(">I", len(payload)) + payload
    try:
        return await pump(lambda: writer.write(frame), counter, WINDOW[size], seconds)
    finally:
        writer.close()
        server.close()


async def bench_raw_datagram(size: str, seconds: float) -> tuple[float, int, int]:
    counter = Counter()
    loop = asyncio.get_running_loop()

    class Receive(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            counter.hit()

    rx, _ = await loop.create_datagram_endpoint(Receive, local_addr=("127.0.0.1", 0))
    # The same socket buffer the udp transport asks for: the floor must not lose what the
    # transport is given room to keep.
    rx.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    tx, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                 remote_addr=rx.get_extra_info("sockname"))
    payload = os.urandom(min(SIZES[size], 65_000))  # 64 KiB is over the UDP limit: one near-max datagram
    try:
        return await pump(lambda: tx.sendto(payload), counter, WINDOW[size], seconds)
    finally:
        tx.close()
        rx.close()


def line(label: str, size: str, result: tuple[float, int, int], floors: dict[str, float]) -> float:
    elapsed, delivered, lost = result
    rate = delivered / elapsed
    mbs = rate * SIZES[size] / 1e6
    ratios = "".join(f"{rate / f:8.2f}x" for f in floors.values()) if floors else "   (floor)"
    loss = f"  lost {lost}" if lost else ""
    print(f"{label:<13}{size:<7}{rate:>11,.0f} msg/s {mbs:>8.1f} MB/s{ratios}{loss}", flush=True)
    return rate


def secret_options() -> dict:
    directory = tempfile.mkdtemp(prefix="transport-bench-")
    path = os.path.join(directory, "secret")
    with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
        f.write(os.urandom(32))
    return {"secret_file": path}


async def main(seconds: float, transports: list[str], secret: bool) -> None:
    print(f"loopback, sender and receiver in one event loop, {seconds:.1f} s per line; "
          f"payload small={SIZES['small']} B, large={SIZES['large']} B (raw dgram large: 65,000 B)")
    print(f"{'':<13}{'':<7}{'':>11}       {'':>8}     vs stream  vs dgram")
    for size in SIZES:
        floors = {"stream": line("raw stream", size, await bench_raw_stream(size, seconds), {}),
                  "dgram": line("raw dgram", size, await bench_raw_datagram(size, seconds), {})}
        for name in transports:
            plain = line(name, size, await bench_transport(name, size, seconds), floors)
            if secret:
                sealed = line(f"{name}+hmac", size, await bench_transport(name, size, seconds, secret_options()),
                              floors)
                print(f"{'':<20}{name} with a secret / without: {sealed / plain:.2f}x", flush=True)
            if name == "udp" and size == "large":
                # The default pacing (udp_options.pace_bytes_per_s) caps large messages; this
                # shows what loopback could take without it.
                line("udp unpaced", size, await bench_transport(name, size, seconds, {"pace_bytes_per_s": 0}),
                     floors)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument("--transports", default="tcp,udp")
    parser.add_argument("--secret", action="store_true", help="also run each transport with a cluster secret")
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.transports.split(","), args.secret))
