"""One outbound peer of the ``tcp`` transport: a bounded queue and the task that drains it.

The connection is opened lazily, on the first message, and reopened with exponential
backoff and jitter after it breaks; what is queued when a dial fails is dropped. Each
connection opens with the handshake of ``tcp_hello``: the acceptor's challenge is read,
then the transport's hello written. Messages are queued encoded and sealed only as they are
written, since a frame's tag depends on its connection and its place in it (``tcp_session``).
The queue is bounded by count and by bytes, so a slow or dead peer costs at most that much
memory, and since each peer has its own writer task it never holds up the others.
"""
from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections import deque
from typing import Callable

from .tcp_hello import CHALLENGE_BYTES, HelloError, decode_challenge, split_address
from .tcp_identity import peer_certificate
from .tcp_options import TcpOptions
from .tcp_session import LENGTH_BYTES, FrameSealer
from .tcp_stats import Stats

#: Given the acceptor's nonce: the connection's sealer, and the framed hello to send first.
Dial = Callable[[bytes], tuple[FrameSealer, bytes]]

log = logging.getLogger("keyval.transport.tcp")

CONNECTION_ERRORS = (OSError, EOFError, asyncio.IncompleteReadError, ssl.SSLError, asyncio.TimeoutError)


class Peer:
    def __init__(self, peer_id: str, address: str, opts: TcpOptions, stats: Stats,
                 client_tls: ssl.SSLContext | None, rng: random.Random, dial: Dial,
                 refused: frozenset[str] = frozenset()) -> None:
        self.peer_id = peer_id
        self.address = address
        self._opts = opts
        self._stats = stats
        self._tls = client_tls
        self._rng = rng
        self._dial = dial
        self._refused = refused  # tls_refused, for the certificate of the peer we reach
        self._queue: deque[bytes] = deque()  # encoded messages, not yet framed
        #: frames of the current loop turn, written together at its end (see push)
        self._corked: list[bytes] | None = None
        self._queued_bytes = 0
        self._wake = asyncio.Event()  # something to send (or the connection went away)
        self._moved = asyncio.Event()  # cuts a backoff short: there is a new address to try
        self._writer: asyncio.StreamWriter | None = None
        self._sealer: FrameSealer | None = None  # the current connection's
        self._watcher: asyncio.Task | None = None
        self._failures = 0  # dials in a row that failed, for the backoff
        self._redial_at = 0.0  # loop time before which we do not dial again
        self._connected_at = 0.0
        self._closing = False
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"tcp-peer-{peer_id}")

    # -- called by the transport (never blocks) --------------------------------------------
    def push(self, payload: bytes) -> None:
        if self._corked is not None:
            self._corked.append(payload)
            return
        writer = self._writer
        if not self._queue and writer is not None and not writer.is_closing() \
                and not writer.transport.get_write_buffer_size():
            # Nothing waits before it and the socket keeps up: write at the end of this loop
            # turn, with whatever else this turn sends the peer (one send call for all), not
            # on the writer task's turn: a leader's AppendEntries leave before its fsync ends.
            self._corked = [payload]
            asyncio.get_running_loop().call_soon(self._uncork)
            return
        self._enqueue(payload)

    def _uncork(self) -> None:
        frames, self._corked = self._corked or [], None
        writer = self._writer
        if self._closing:
            return
        if writer is None or writer.is_closing():  # the connection went meanwhile: the task redials
            for frame in frames:
                self._enqueue(frame)
            return
        seal = self._sealer.frame  # type: ignore[union-attr] - set with the writer
        writer.write(seal(frames[0]) if len(frames) == 1 else b"".join(map(seal, frames)))
        self._stats.add("sent", len(frames))

    def _enqueue(self, frame: bytes) -> None:
        opts = self._opts
        if len(self._queue) >= opts.queue_size or self._queued_bytes + len(frame) > opts.queue_bytes:
            if opts.queue_drop == "newest" or not self._queue:
                self._stats.report("dropped_queue_full", f"peer {self.peer_id} at {self.address} is not keeping up")
                return
            dropped = 0
            while self._queue and (len(self._queue) >= opts.queue_size
                                   or self._queued_bytes + len(frame) > opts.queue_bytes):
                self._queued_bytes -= len(self._queue.popleft())
                dropped += 1
            self._stats.report("dropped_queue_full", f"peer {self.peer_id} at {self.address} is not keeping up", dropped)
        self._queue.append(frame)
        self._queued_bytes += len(frame)
        self._wake.set()

    def move(self, address: str) -> None:
        """The peer now lives at ``address``: reconnect there, without waiting out a backoff."""
        if address != self.address:
            self.address = address
            self._failures = 0
            self._redial_at = 0.0
            self._disconnect()
            self._moved.set()
            self._wake.set()

    async def close(self) -> None:
        # Python 3.11's wait_for can swallow a cancellation that races with its timeout, so
        # the flag stops the loop even then, and the cancel is repeated until the task ends.
        self._closing = True
        while not self._task.done():
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=0.1)
        self._queue.clear()
        self._queued_bytes = 0
        await self._disconnect_and_wait()

    # -- the writer task -------------------------------------------------------------------
    async def _run(self) -> None:
        while not self._closing:
            try:
                await self._step()
            except Exception:  # noqa: BLE001 - a bug here must not silently end this peer's traffic
                log.exception("tcp peer %s: writer failed; reconnecting", self.peer_id)
                self._disconnect()
                self._redial_later()

    async def _step(self) -> None:
        if not self._queue:
            self._wake.clear()
            await self._wake.wait()
        elif self._writer is not None and not self._writer.is_closing():
            await self._write_batch(self._writer, self._sealer)
        elif asyncio.get_running_loop().time() < self._redial_at:
            await self._wait_to_redial()
        else:
            self._disconnect()
            address = self.address
            if not await self._connect() and self.address == address:
                # What was queued is stale by the time the peer is back, and Raft resends
                # anyway; an idle peer (one removed from the cluster, say) stops redialling
                # until there is something new to send.
                self._stats.add("dropped_send_failed", len(self._queue))
                self._queue.clear()
                self._queued_bytes = 0
                self._redial_later()

    async def _write_batch(self, writer: asyncio.StreamWriter, sealer: FrameSealer) -> None:
        frames = list(self._queue)
        self._queue.clear()
        self._queued_bytes = 0
        try:
            for payload in frames:
                writer.write(sealer.frame(payload))
            # Wait only when the socket is behind; a stuck peer gets write_timeout to catch up.
            if writer.transport.get_write_buffer_size() > 0:
                async with asyncio.timeout(self._opts.write_timeout):
                    await writer.drain()
        except CONNECTION_ERRORS as exc:
            self._stats.report("dropped_send_failed",
                               f"connection to peer {self.peer_id} at {self.address} failed: {_oneline(exc)}",
                               len(frames))
            self._connection_ended(writer)
            return
        self._stats.add("sent", len(frames))

    async def _connect(self) -> bool:
        address = self.address
        writer = None
        try:
            host, port = split_address(address)
            async with asyncio.timeout(self._opts.connect_timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=self._tls, server_hostname=host if self._tls else None
                )
                if not self._certificate_fits(writer):
                    writer.transport.abort()
                    return False
                challenge = await reader.readexactly(LENGTH_BYTES + CHALLENGE_BYTES)
            if int.from_bytes(challenge[:LENGTH_BYTES], "big") != CHALLENGE_BYTES:
                raise HelloError("the peer did not open with a protocol 2 challenge")
            nonce = decode_challenge(challenge[LENGTH_BYTES:])
        except (ValueError, HelloError, *CONNECTION_ERRORS) as exc:
            if writer is not None:
                writer.transport.abort()
            self._stats.report("connect_failures", f"cannot connect to peer {self.peer_id} at {address}: {_oneline(exc)}")
            return False
        if address != self.address or self._closing:  # moved or closed while connecting
            writer.transport.abort()
            return False
        self._stats.add("connects")
        self._sealer, hello = self._dial(nonce)
        writer.write(hello)  # before any queued frame: it goes out first
        self._writer = writer
        self._connected_at = asyncio.get_running_loop().time()
        self._watcher = asyncio.get_running_loop().create_task(self._watch(reader, writer))
        return True

    def _certificate_fits(self, writer: asyncio.StreamWriter) -> bool:
        """Under mutual TLS: the acceptor's certificate must name the peer we mean to reach,
        and not be refused."""
        cert = peer_certificate(writer.get_extra_info("ssl_object"))
        if cert is None:
            return True
        refusal = cert.refused_by(self._refused)
        if refusal is not None:
            self._stats.report("connections_refused_tls", f"peer {self.peer_id} at {self.address}: certificate "
                               f"refused by tls_refused entry {refusal}")
            return False
        if self.peer_id not in cert.names:
            self._stats.report("dropped_identity", f"peer {self.peer_id} at {self.address} presented a "
                               f"certificate for {sorted(cert.names)}")
            return False
        return True

    async def _watch(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Notice at once when the peer goes away (it never writes to us on this connection),
        rather than when a write fails — by which time a message has been lost into it."""
        why = "closed by the peer"
        try:
            while await reader.read(65536):
                pass
        except CONNECTION_ERRORS as exc:
            why = _oneline(exc)  # a TLS peer refusing our certificate says so here
        if self._writer is writer:
            self._stats.report("connections_lost", f"connection to peer {self.peer_id} at {self.address}: {why}")
            self._connection_ended(writer)

    def _connection_ended(self, writer: asyncio.StreamWriter) -> None:
        if self._writer is writer:
            self._watcher = None  # (this may be the watcher itself, which must not cancel itself)
            self._disconnect()
        # A connection dropped right after it opened (a TLS peer refusing our certificate,
        # a peer restarting in a loop) counts as a failed dial, so redials back off too.
        if asyncio.get_running_loop().time() - self._connected_at < self._opts.reconnect_max:
            self._redial_later()
        else:
            self._failures = 0
        self._wake.set()

    def _redial_later(self) -> None:
        opts = self._opts
        self._failures += 1
        ceiling = min(opts.reconnect_max, opts.reconnect_min * 2 ** min(self._failures - 1, 30))
        self._redial_at = asyncio.get_running_loop().time() + ceiling * self._rng.uniform(0.5, 1.0)

    async def _wait_to_redial(self) -> None:
        self._moved.clear()
        try:
            async with asyncio.timeout_at(self._redial_at):
                await self._moved.wait()  # a move() cuts the wait short
        except TimeoutError:
            pass

    def _disconnect(self) -> None:
        writer, watcher = self._writer, self._watcher
        self._writer = self._watcher = self._sealer = None
        if watcher is not None:
            watcher.cancel()
        if writer is not None:
            # abort, not close: close() would first flush what a stuck peer is not reading.
            writer.transport.abort()

    async def _disconnect_and_wait(self) -> None:
        writer, watcher = self._writer, self._watcher
        self._disconnect()
        if watcher is not None:
            await asyncio.gather(watcher, return_exceptions=True)
        if writer is not None:
            try:
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            except (*CONNECTION_ERRORS, asyncio.CancelledError):
                pass


def _oneline(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
