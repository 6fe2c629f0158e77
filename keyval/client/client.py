"""The Python client: ``Client`` (blocking) and ``AsyncClient`` (asyncio).

Give it any or all client addresses; it finds the leader by following ``not_leader`` answers,
retries on leader changes and timeouts until its deadline, and tags each write with
(client id, sequence number, lowest unanswered sequence) so that a retried write is applied
once. Requests are pipelined over one connection per node.
"""
from __future__ import annotations

import asyncio
import itertools
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from keyval.client import protocol as p
from keyval.wire_bounds import parse_address
from keyval.errors import ConfigError, NoLeader, NoSpace, RequestRefused, RevisionMismatch, Timeout, Unreachable
from keyval.runtime.event_loop import loop_factory

RETRYABLE = {p.NOT_LEADER, p.NO_LEADER, p.UNAVAILABLE, p.TIMEOUT}
#: a node's answer that it does not lead: the request was not taken
NOT_LEADING = {p.NOT_LEADER, p.NO_LEADER}
#: operations that change nothing (a timeout of any other may still have its effect)
READ_ONLY_OPERATIONS = frozenset({"cluster_status", "cluster_health", "membership", "removal_check",
                                  "snapshot_list", "backup_begin", "backup_chunk", "backup_end"})
#: one attempt to connect to an endpoint waits at most this long, then the next one is tried
CONNECT_TIMEOUT = 1.0
#: with TLS the attempt includes the handshake: two more round trips and the node's CPU
TLS_CONNECT_TIMEOUT = 3.0
#: one attempt at a request waits at most this long for its reply (an endpoint that accepted
#: the connection but does not answer, e.g. a frozen process), unless the call is given a
#: longer one (an operation that waits on purpose)
ATTEMPT_TIMEOUT = 2.0


def _seconds(value: float) -> str:
    """A timeout as given (3.99851 -> 4): callers pass what is left of a deadline."""
    return f"{round(value, 1):g}"


def _reason(endpoint: str, exc: BaseException) -> str:
    """Never empty: asyncio.TimeoutError and some OSErrors print as ''."""
    if isinstance(exc, asyncio.TimeoutError):
        return f"{endpoint}: no reply (timed out)"
    text = str(exc)
    return f"{endpoint}: {text}" if text else f"{endpoint}: {type(exc).__name__}"


def _bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


def _time_out(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_exception(asyncio.TimeoutError())


@dataclass(frozen=True)
class Item:
    key: bytes
    value: bytes
    revision: int


class _Connection:
    """One pipelined connection: requests go out as they come, replies are matched by id.
    With a token, each new connection presents it first; the node screens requests in the
    order they arrive, so the requests behind it need not wait for its answer (a refused
    token shows as ``permission_denied`` on them)."""

    def __init__(self, endpoint: str, token: str | None = None, tls: ssl.SSLContext | None = None) -> None:
        self.endpoint = endpoint
        self.token = token
        self.tls = tls
        self._transport: asyncio.Transport | None = None
        self._pending: dict[int, asyncio.Future] = {}
        self._ids = itertools.count(1)
        self._connecting: asyncio.Lock = asyncio.Lock()

    def _open(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    async def connect(self, timeout: float) -> None:
        if self._open():
            return
        async with self._connecting:
            if self._open():
                return
            host, _, port = self.endpoint.rpartition(":")
            loop = asyncio.get_running_loop()
            tls = {} if self.tls is None else {"ssl": self.tls, "server_hostname": host.strip("[]")}
            try:
                self._transport, _ = await asyncio.wait_for(
                    loop.create_connection(lambda: _ReplyReader(self), host.strip("[]"), int(port), **tls),
                    min(timeout, CONNECT_TIMEOUT if self.tls is None else TLS_CONNECT_TIMEOUT))
            except asyncio.TimeoutError:
                raise ConnectionError(f"connection to {self.endpoint} timed out") from None
            except ssl.SSLError as exc:
                why = (f"certificate verify failed: {exc.verify_message}" if isinstance(exc, ssl.SSLCertVerificationError)
                       else exc.reason or str(exc))
                raise ConnectionError(f"TLS with {self.endpoint} failed: {why}") from None
            if self.token is not None:
                # Its reply matches no pending request and is dropped.
                self._transport.write(p.frame(p.Request(p.PROTOCOL_VERSION, next(self._ids), p.Authenticate(self.token))))

    def _reply(self, payload: bytes) -> None:
        response = p.decode_response(payload)
        if response.id == 0 and isinstance(response.body, p.Error):
            # About the connection, not a request (ours start at 1): e.g. the node is at its
            # connection limit. Every request on it fails with the node's reason.
            raise p.ProtocolError(f"{response.body.code}: {response.body.message}")
        fut = self._pending.pop(response.id, None)
        if fut is not None and not fut.done():
            fut.set_result(response.body)

    def _fail_all(self, error: Exception) -> None:
        if self._transport is not None:
            self._transport.close()
        self._transport = None
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(error)

    async def call(self, body, timeout: float, attempt: float | None = None):
        """``timeout``: what is left of the caller's deadline; ``attempt``: the most to wait
        for this reply (default ``timeout``)."""
        await self.connect(timeout)
        if not self._open():  # closed by the node as soon as it was made (at its limit)
            raise ConnectionError(f"connection to {self.endpoint} closed")
        request_id = next(self._ids)
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._pending[request_id] = fut
        self._transport.write(p.frame(p.Request(p.PROTOCOL_VERSION, request_id, body)))
        # A timer on the future itself: cheaper than wait_for's wrapper, and this is per request.
        timer = loop.call_later(timeout if attempt is None else min(timeout, attempt), _time_out, fut)
        try:
            return await fut
        finally:
            timer.cancel()
            self._pending.pop(request_id, None)

    async def close(self) -> None:
        self._fail_all(ConnectionError("client closed"))


class _ReplyReader(asyncio.Protocol):
    """Frames in, replies handed to the connection as they complete."""

    def __init__(self, connection: _Connection) -> None:
        self.connection = connection
        self._buffer = bytearray()
        self._error: Exception | None = None
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        offset = 0
        try:
            while len(buffer) - offset >= 4:
                size = int.from_bytes(buffer[offset:offset + 4], "big")
                if size > p.MAX_FRAME:
                    raise p.ProtocolError(f"frame of {size} bytes exceeds the limit of {p.MAX_FRAME}")
                if len(buffer) - offset - 4 < size:
                    break
                payload = bytes(buffer[offset + 4:offset + 4 + size])
                offset += 4 + size
                self.connection._reply(payload)
        except p.ProtocolError as exc:
            self._error = ConnectionError(f"connection to {self.connection.endpoint} failed: {exc}")
            self.connection._fail_all(self._error)
            return
        del buffer[:offset]

    def connection_lost(self, exc: Exception | None) -> None:
        if self._error is None:
            self._error = ConnectionError(f"connection to {self.connection.endpoint} "
                                          + (f"failed: {exc}" if exc else "closed"))
        if self.connection._transport is self._transport:  # not already replaced by a new one
            self.connection._fail_all(self._error)


class AsyncClient:
    """``token``: presented on every connection (roles: docs/security.md); ``tls``: an
    ``ssl.SSLContext`` (see ``keyval.client.tls.client_context``) for nodes that serve TLS."""

    def __init__(self, endpoints: list[str] | str, *, timeout: float = 5.0, client_id: str | None = None,
                 token: str | None = None, tls: ssl.SSLContext | None = None) -> None:
        if isinstance(endpoints, str):
            endpoints = [e.strip() for e in endpoints.split(",") if e.strip()]
        if not endpoints:
            raise ValueError("give at least one endpoint (HOST:PORT)")
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self.client_id = client_id or uuid.uuid4().hex
        self.token = token
        self.tls = tls
        self._connections: dict[str, _Connection] = {}
        self._preferred = self.endpoints[0]
        self._seq = 0
        self._outstanding: set[int] = set()

    # -- data --------------------------------------------------------------------------
    async def put(self, key: bytes | str, value: bytes | str, *, expect_revision: int = -1) -> int:
        """Write; returns the new revision. With ``expect_revision`` (0: key must be absent),
        a compare-and-set: raises RevisionMismatch if the key is at another revision."""
        key = _bytes(key)
        value = _bytes(value)
        reply = await self._write(lambda seq, acked: p.Put(key, value, expect_revision, self.client_id, seq, acked))
        if not reply.ok:
            if reply.error == "revision mismatch":
                raise RevisionMismatch(key, reply.current_revision)
            raise RequestRefused("refused", reply.error)
        return reply.revision

    async def delete(self, key: bytes | str, *, expect_revision: int = -1) -> bool:
        """Delete; True if the key existed."""
        existed, _ = await self.delete_with_revision(key, expect_revision=expect_revision)
        return existed

    async def delete_with_revision(self, key: bytes | str, *, expect_revision: int = -1) -> tuple[bool, int]:
        """Delete; (whether the key existed, the store's revision afterwards)."""
        key = _bytes(key)
        reply = await self._write(lambda seq, acked: p.Delete(key, expect_revision, self.client_id, seq, acked))
        if not reply.ok:
            if reply.error == "revision mismatch":
                raise RevisionMismatch(key, reply.current_revision)
            raise RequestRefused("refused", reply.error)
        return reply.existed, reply.revision

    async def get(self, key: bytes | str, *, serializable: bool = False) -> bytes | None:
        item = await self.get_item(key, serializable=serializable)
        return None if item is None else item.value

    async def get_item(self, key: bytes | str, *, serializable: bool = False) -> Item | None:
        key = _bytes(key)
        reply = await self._call(p.Get(key, serializable))
        return Item(key, reply.value, reply.revision) if reply.found else None

    async def scan(self, prefix: bytes | str = b"", limit: int = 0, *, serializable: bool = False) -> list[Item]:
        reply = await self._call(p.Scan(_bytes(prefix), limit, serializable))
        return [Item(k, v, r) for k, v, r in reply.items]

    # -- status and operations ---------------------------------------------------------
    async def status(self, endpoint: str | None = None) -> dict[str, Any]:
        """The status of one node (default: whichever answers first)."""
        if endpoint is not None:
            try:
                reply = await self._connection(endpoint).call(p.Status(), self.timeout)
            except (OSError, ConnectionError, asyncio.TimeoutError) as exc:
                raise Unreachable(f"no KeyVal node answered at {_reason(endpoint, exc)}") from None
            return self._check(reply).status
        return (await self._call(p.Status(), follow_leader=False)).status

    async def admin(self, op: str, timeout: float | None = None, **args: Any) -> dict[str, Any]:
        # Operations may take their time on purpose (a "wait", a restore that commits, a
        # snapshot): one attempt may use the whole timeout.
        limit = timeout or self.timeout
        return (await self._call(p.Admin(op, args), timeout=timeout, attempt=limit,
                                 write=op not in READ_ONLY_OPERATIONS)).result

    async def close(self) -> None:
        connections, self._connections = self._connections, {}
        await asyncio.gather(*(c.close() for c in connections.values()), return_exceptions=True)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # -- plumbing ----------------------------------------------------------------------
    async def _write(self, make_body):
        self._seq += 1
        seq = self._seq
        self._outstanding.add(seq)
        try:
            # The lowest unanswered seq tells the cluster which earlier answers it may forget.
            return await self._call(make_body(seq, min(self._outstanding)), write=True)
        finally:
            self._outstanding.discard(seq)

    def _connection(self, endpoint: str) -> _Connection:
        conn = self._connections.get(endpoint)
        if conn is None:
            conn = self._connections[endpoint] = _Connection(endpoint, self.token, self.tls)
        return conn

    @staticmethod
    def _check(reply):
        if isinstance(reply, p.Error):
            raise _refused(reply)
        return reply

    async def _call(self, body, *, follow_leader: bool = True, timeout: float | None = None,
                    attempt: float | None = None, write: bool = False):
        """Send ``body`` until a node answers it or the deadline passes: on to the leader a
        follower names, else round the endpoints, pausing (with growing backoff) after each
        failed round so a leaderless cluster is not flooded. One attempt waits at most
        ``attempt`` (default ATTEMPT_TIMEOUT) so an endpoint that never answers does not use
        up the deadline while others would. ``write``: the request may change data (then a
        timeout says it may still apply). When every node that answered said it does not lead
        and no attempt may have been taken, the deadline raises NoLeader."""
        limit = timeout or self.timeout
        deadline = time.monotonic() + limit
        attempt = ATTEMPT_TIMEOUT if attempt is None else attempt
        rotation = [self._preferred] + [e for e in self.endpoints if e != self._preferred]
        turn = 0
        redirect: str | None = None
        failures = 0
        last_error = ""
        last_code = ""  # of the last refusal a node answered with
        reached_any = False
        taken = False  # a write may have been taken by a node that did not say what became of it
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if not reached_any:
                    raise Unreachable(f"no KeyVal node answered at {', '.join(self.endpoints)}: {last_error or 'no reply'}")
                if last_code in NOT_LEADING and not taken:
                    raise NoLeader(f"no answer within {_seconds(limit)}s ({last_error})")  # and nothing to warn of
                raise Timeout(f"no answer within {_seconds(limit)}s ({last_error or 'no reply'})"
                              + ("; the write may still apply" if write else ""))
            if redirect is not None:
                endpoint, redirect = redirect, None
            else:
                endpoint = rotation[turn % len(rotation)]
                turn += 1
            connection = self._connection(endpoint)
            connected = False
            try:
                await connection.connect(remaining)
                connected = True
                reply = await connection.call(body, remaining, attempt)
            except (OSError, ConnectionError, asyncio.TimeoutError) as exc:
                taken = taken or (write and connected)
                last_error = _reason(endpoint, exc)
                failures += 1
                if turn % len(rotation) == 0:
                    await self._backoff(failures, deadline)
                continue
            reached_any = True
            if not isinstance(reply, p.Error):
                self._preferred = endpoint
                return reply
            if reply.code not in RETRYABLE or (not follow_leader and reply.code == p.NOT_LEADER):
                raise _refused(reply)
            last_error = reply.message
            last_code = reply.code
            taken = taken or (write and reply.code not in NOT_LEADING)
            failures += 1
            if reply.code == p.NOT_LEADER and _well_formed(reply.leader_address) and reply.leader_address != endpoint:
                if reply.leader_address not in rotation:
                    rotation.append(reply.leader_address)
                    self.endpoints.append(reply.leader_address)
                redirect = reply.leader_address
                if failures <= 2:
                    continue  # a fresh hint: follow it at once
            await self._backoff(failures, deadline)

    @staticmethod
    async def _backoff(failures: int, deadline: float) -> None:
        delay = min(0.025 * (2 ** min(failures, 5)), 0.5, max(0.0, deadline - time.monotonic()))
        await asyncio.sleep(delay)


class Client:
    """The blocking twin of AsyncClient (runs one in a private event-loop thread)."""

    def __init__(self, endpoints: list[str] | str, *, timeout: float = 5.0, client_id: str | None = None,
                 token: str | None = None, tls: ssl.SSLContext | None = None) -> None:
        self._loop = loop_factory("auto")()
        self._thread = threading.Thread(target=self._loop.run_forever, name="keyval-client", daemon=True)
        self._thread.start()
        self._async = self._run(_make_async(endpoints, timeout, client_id, token, tls))

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def put(self, key, value, *, expect_revision: int = -1) -> int:
        return self._run(self._async.put(key, value, expect_revision=expect_revision))

    def get(self, key, *, serializable: bool = False) -> bytes | None:
        return self._run(self._async.get(key, serializable=serializable))

    def get_item(self, key, *, serializable: bool = False) -> Item | None:
        return self._run(self._async.get_item(key, serializable=serializable))

    def delete(self, key, *, expect_revision: int = -1) -> bool:
        return self._run(self._async.delete(key, expect_revision=expect_revision))

    def delete_with_revision(self, key, *, expect_revision: int = -1) -> tuple[bool, int]:
        return self._run(self._async.delete_with_revision(key, expect_revision=expect_revision))

    def scan(self, prefix=b"", limit: int = 0, *, serializable: bool = False) -> list[Item]:
        return self._run(self._async.scan(prefix, limit, serializable=serializable))

    def status(self, endpoint: str | None = None) -> dict[str, Any]:
        return self._run(self._async.status(endpoint))

    def admin(self, op: str, timeout: float | None = None, **args: Any) -> dict[str, Any]:
        return self._run(self._async.admin(op, timeout, **args))

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self._async.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


async def _make_async(endpoints, timeout, client_id, token, tls) -> AsyncClient:
    return AsyncClient(endpoints, timeout=timeout, client_id=client_id, token=token, tls=tls)


def _refused(reply: p.Error) -> RequestRefused:
    if reply.code == p.NO_SPACE:
        return NoSpace(reply.message)
    return RequestRefused(reply.code, reply.message)


def _well_formed(address: str) -> bool:
    """A redirect is followed only to a HOST:PORT (anything else is no hint at all)."""
    try:
        parse_address(address)
    except ConfigError:
        return False
    return True
