"""The client-facing server: serves the client protocol on a node's client address.

Every connection is pipelined: each request runs as its own task, so many writes from one
connection share a Raft batch and an fsync. A follower answers writes and linearizable reads
with ``not_leader`` and the leader's client address; the client follows it. Nothing a client
sends can crash the node: a malformed frame gets an ``invalid`` error (and after repeated
garbage the connection is closed), an unknown request type gets ``unknown_request``.
"""
from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Awaitable, Callable

from keyval import __version__
from keyval.client import protocol as p
from keyval.ops.admin import OperationRefused, UnknownOperation
from keyval.clientport.auth import ClientGate, Session
from keyval.clientport.limits import ClientLimiter, ClientLimits
from keyval.wire_bounds import parse_address
from keyval.errors import ConfigError
from keyval.kv import CommandError, check_limits, encode_delete, encode_meta, encode_put
from keyval.errors import NodeUnavailable, NoSpace, ProposalLost
from keyval.runtime.node import Node
from keyval.raft import NotLeader, ProposalDropped, RaftError

log = logging.getLogger("keyval.service")

MAX_BAD_FRAMES = 8
MAX_SCAN_LIMIT = 100_000
CLIENT_ADDRESS_META = "client_address/"

AdminHandler = Callable[[str, dict], Awaitable[dict]]


class ClientService:
    def __init__(self, node: Node, address: str, request_timeout: float = 5.0, admin: AdminHandler | None = None,
                 gate: ClientGate | None = None, tls: ssl.SSLContext | None = None,
                 limits: ClientLimits = ClientLimits()) -> None:
        self.node = node
        self.address = address
        self.request_timeout = request_timeout
        self.admin = admin
        self.limiter = ClientLimiter(limits, f"client port of node {node.id}")
        #: who may do what (keyval.clientport.auth); the default is the open port of old
        self.gate = gate or ClientGate(None, None, node.metrics.registry, node.id)
        self.tls = tls
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[ClientConnection] = set()
        self._sweeper: asyncio.Task | None = None

    async def start(self) -> None:
        host, _, port = self.address.rpartition(":")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: ClientConnection(self), host.strip("[]"), int(port),
                                                  ssl=self.tls)
        sock = self._server.sockets[0].getsockname()
        self.address = f"{host}:{sock[1]}"
        self._sweeper = asyncio.create_task(self._sweep(), name=f"{self.node.id}-client-sweep")

    async def _sweep(self) -> None:
        """Close connections idle, or stuck inside a frame, for longer than the idle timeout."""
        limiter = self.limiter
        while True:
            await asyncio.sleep(limiter.sweep_interval)
            limiter.tick()
            for connection in list(self._connections):
                connection.close_if_overdue()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections):
            connection.abort()
        if self._server is not None:
            await self._server.wait_closed()

    # -- requests, answered by calling ``answer(body)`` -----------------------------------
    def serve(self, body, answer: Callable[[object], None], session: Session) -> asyncio.Task | None:
        """Start serving one request. Writes and reads are futures with a callback (no task
        each: at thousands of requests a second, tasks are a leader's largest overhead);
        everything else runs as a task, returned so the connection can cancel it."""
        node = self.node
        refusal = self.gate.screen(session, body)  # also answers Authenticate
        if refusal is not None:
            answer(refusal)
            return None
        try:
            if not node.started():
                raise NodeUnavailable("the node is starting")
            if isinstance(body, p.Put):
                check_limits(body.key, body.value, node.limits)
                data = encode_put(body.key, body.value, expect_revision=body.expect_revision, client=body.client, seq=body.seq, acked=body.acked)
                return self._when_done(node.submit(data, self.request_timeout, _session(body)), self._write_reply, answer)
            if isinstance(body, p.Delete):
                check_limits(body.key, None, node.limits)
                data = encode_delete(body.key, expect_revision=body.expect_revision, client=body.client, seq=body.seq, acked=body.acked)
                return self._when_done(node.submit(data, self.request_timeout, _session(body)), self._write_reply, answer)
            if isinstance(body, p.Get):
                check_limits(body.key, None, node.limits)
                read = lambda _: self._get(body.key)  # noqa: E731
                if body.serializable:
                    answer(read(None))
                    return None
                return self._when_done(node.read_barrier(self.request_timeout), read, answer)
            if isinstance(body, p.Scan):
                if body.limit < 0 or body.limit > MAX_SCAN_LIMIT:
                    raise CommandError(f"limit must be between 0 and {MAX_SCAN_LIMIT}")
                read = lambda _: self._scan(body.prefix, body.limit)  # noqa: E731
                if body.serializable:
                    answer(read(None))
                    return None
                return self._when_done(node.read_barrier(self.request_timeout), read, answer)
        except Exception as exc:
            answer(self._error(exc))
            return None
        task = asyncio.create_task(self._dispatch(body))
        task.add_done_callback(lambda t: t.cancelled() or answer(t.result()))
        return task

    def _when_done(self, fut: asyncio.Future, reply: Callable, answer: Callable[[object], None]) -> None:
        def done(fut: asyncio.Future) -> None:
            if fut.cancelled():
                return
            exc = fut.exception()
            answer(self._error(exc) if exc is not None else reply(fut.result()))

        fut.add_done_callback(done)

    def _get(self, key: bytes):
        item = self.node.get(key)
        if item is None:
            return p.GetReply(found=False, revision=self.node.revision)
        return p.GetReply(True, item.value, item.mod_revision, item.create_revision)

    def _scan(self, prefix: bytes, limit: int):
        items = self.node.scan(prefix, limit or MAX_SCAN_LIMIT)
        return p.ScanReply([(i.key, i.value, i.mod_revision) for i in items], self.node.revision)

    async def _dispatch(self, body):
        node = self.node
        try:
            if isinstance(body, p.Status):
                return p.StatusReply(node_status(node))
            if isinstance(body, p.RegisterClientAddress):
                return await self._register(body)
            if isinstance(body, p.Admin):
                if self.admin is None:
                    return p.Error(p.UNKNOWN_REQUEST, f"cluster operation {body.op!r} is not supported by this node")
                return p.AdminReply(await self.admin(body.op, body.args))
            return p.Error(p.UNKNOWN_REQUEST, f"unknown request {type(body).__name__}")
        except Exception as exc:
            return self._error(exc)

    async def _register(self, body: p.RegisterClientAddress):
        """Followers send clients to these addresses: only a member's well-formed one is kept."""
        if not self.node.is_member(body.node):
            return p.Error(p.INVALID, f"cannot register a client address for {body.node!r}: not a member")
        try:
            address = parse_address(body.address, f"client address of {body.node}")
        except ConfigError as exc:
            return p.Error(p.INVALID, str(exc))
        await self.node.propose(encode_meta(CLIENT_ADDRESS_META + body.node, address), self.request_timeout)
        return p.AdminReply({"registered": body.node})

    def _error(self, exc: BaseException) -> p.Error:
        if isinstance(exc, NoSpace):
            return p.Error(p.NO_SPACE, str(exc))
        if isinstance(exc, CommandError):
            return p.Error(p.INVALID, str(exc))
        if isinstance(exc, OperationRefused):
            return p.Error(p.REFUSED, str(exc))
        if isinstance(exc, UnknownOperation):
            return p.Error(p.UNKNOWN_REQUEST, str(exc))
        if isinstance(exc, NotLeader):
            return self._not_leader(exc.leader)
        if isinstance(exc, ProposalDropped):
            return p.Error(p.UNAVAILABLE, f"the leader cannot take writes right now ({exc}); retry")
        if isinstance(exc, (ProposalLost, NodeUnavailable)):
            return p.Error(p.UNAVAILABLE, str(exc))
        if isinstance(exc, RaftError):
            return p.Error(p.REFUSED, str(exc))
        if isinstance(exc, asyncio.TimeoutError):
            return p.Error(p.TIMEOUT, f"no answer within {self.request_timeout:g}s (a write may still apply)")
        log.error("node %s: request failed: %s: %s", self.node.id, type(exc).__name__, exc, exc_info=exc)
        return p.Error(p.UNAVAILABLE, f"internal error: {type(exc).__name__}: {exc}")

    def _not_leader(self, leader: str):
        if not leader:
            return p.Error(p.NO_LEADER, "no leader is elected right now; retry shortly")
        address = self.node.meta(CLIENT_ADDRESS_META + leader)
        return p.Error(p.NOT_LEADER, f"{self.node.id} is not the leader; {leader} is", leader, address)

    @staticmethod
    def _write_reply(result) -> p.WriteReply:
        if result is None:
            return p.WriteReply(False, 0, error="no result")
        return p.WriteReply(result.ok, result.revision, result.current_revision, result.existed, result.error)


class ClientConnection(asyncio.Protocol):
    """One client connection: frames parsed as bytes arrive, answers written as they are
    ready (in completion order, matched by request id)."""

    def __init__(self, service: ClientService) -> None:
        self.service = service
        self._limiter = service.limiter
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._bad = 0
        self._tasks: set[asyncio.Task] = set()
        #: requests not answered yet; after the client's EOF we hang up once it is 0
        self._outstanding = 0
        self._eof = False
        #: bytes of a partial frame counted in the limiter's node-wide total
        self._held = 0
        #: (limiter clock) when the frame now buffered began; when the last request or answer was
        self._frame_started: float | None = None
        self._last_active = self._limiter.now
        self.session = service.gate.session()

    def connection_made(self, transport) -> None:
        if not self._limiter.admit(_peername(transport)):
            message = f"too many client connections (limit {self._limiter.limits.max_connections}); retry later"
            transport.write(p.frame(p.Response(p.PROTOCOL_VERSION, 0, p.Error(p.UNAVAILABLE, message))))
            transport.close()
            return
        self._transport = transport
        self.service._connections.add(self)

    def connection_lost(self, exc) -> None:
        if self._transport is None:
            return  # refused at connection_made: never counted
        self.service._connections.discard(self)
        self._limiter.release(self._held)
        self._held = 0
        for task in list(self._tasks):
            task.cancel()
        self._transport = None

    def close_if_overdue(self) -> None:
        reason = self._limiter.overdue(self._last_active, self._frame_started, self._outstanding)
        if reason is None or self._transport is None:
            return
        timeout = self._limiter.limits.idle_timeout
        if reason == "closed_frame_timeout":
            detail = f"{self._peer()}: a frame not finished within {timeout:g}s"
            self._send(0, p.Error(p.INVALID, f"malformed frame: not finished within {timeout:g}s"))
        else:
            detail = f"{self._peer()}: no request for {timeout:g}s"
        self._limiter.report(reason, detail)
        self._close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # A client that does not read its answers must not make us buffer without bound.
    def pause_writing(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None:
            self._transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self._transport is None:
            return
        buffer = self._buffer
        buffer += data
        offset = 0
        limit = min(p.MAX_FRAME, self._limiter.limits.frame_bytes)
        while self._transport is not None and len(buffer) - offset >= 4:
            size = int.from_bytes(buffer[offset:offset + 4], "big")
            if size > limit:
                self._limiter.report("closed_frame_too_large", f"{self._peer()} announced a {size}-byte frame")
                self._send(0, p.Error(p.INVALID, f"malformed frame: frame of {size} bytes exceeds the limit of {limit}"))
                return self._drop_buffer()
            if len(buffer) - offset - 4 < size:
                break
            payload = bytes(buffer[offset + 4:offset + 4 + size])
            offset += 4 + size
            self._last_active = self._limiter.now
            self._request(payload)
        del buffer[:offset]
        self._account()

    def _account(self) -> None:
        """Count what is left in the buffer (a partial frame) against the node's total."""
        held = len(self._buffer)
        if held == self._held:
            return
        if not held:
            self._frame_started = None
        elif not self._held:
            self._frame_started = self._limiter.now
        fits = self._limiter.hold(self._held, held)
        self._held = held
        if not fits and self._transport is not None:
            cap = self._limiter.limits.buffer_bytes
            self._limiter.report("closed_node_buffer", f"{self._peer()}: partial frames would pass client_buffer_bytes ({cap})")
            self._send(0, p.Error(p.UNAVAILABLE, f"the node holds its limit of {cap} bytes of unfinished requests; retry"))
            self._drop_buffer()

    def _drop_buffer(self) -> None:
        self._close()
        self._buffer = bytearray()  # freed now, not when the transport lets go of us
        self._limiter.hold(self._held, 0)
        self._held = 0
        self._frame_started = None

    def _peer(self) -> str:
        return _peername(self._transport)

    def eof_received(self) -> bool:
        if self._buffer:
            self._send(0, p.Error(p.INVALID, "malformed frame: stream ended inside a frame"))
        self._eof = True
        # Keep the write side open until the answers in progress are sent.
        return self._outstanding > 0

    def _request(self, payload: bytes) -> None:
        try:
            request = p.decode_request(payload)
        except p.ProtocolError as exc:
            self._bad += 1
            self._limiter.report("requests_invalid", f"{self._peer()}: {exc}")
            code = p.bad_request_code(payload)
            self._send(p.request_id_of(payload), p.Error(code, f"cannot decode request: {exc}"))
            if self._bad >= MAX_BAD_FRAMES:
                self._close()
            return
        request_id = request.id
        if request.version > p.PROTOCOL_VERSION:
            self._send(request_id, p.Error(p.INVALID, f"protocol version {request.version} is newer than this node's {p.PROTOCOL_VERSION}"))
            return
        self._outstanding += 1
        task = self.service.serve(request.body, lambda body: self._answer(request_id, body), self.session)
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _answer(self, request_id: int, body) -> None:
        self._outstanding -= 1
        self._last_active = self._limiter.now
        self._send(request_id, body)
        if self._eof and self._outstanding == 0:
            self._close()

    def _send(self, request_id: int, body) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(p.frame(p.Response(p.PROTOCOL_VERSION, request_id, body)))

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def _peername(transport) -> str:
    name = transport.get_extra_info("peername") if transport is not None else None
    if isinstance(name, tuple) and len(name) >= 2:
        return f"{name[0]}:{name[1]}"
    return "a client"


def node_status(node: Node) -> dict:
    status = node.status()
    membership = status.membership
    addresses = dict(membership.addresses)
    alarms = node.alarms()
    peers = {
        peer.id: {
            "match_index": peer.match,
            "next_index": peer.next,
            "state": peer.state,
            "recent_active": peer.recent_active,
            "ticks_since_contact": peer.ticks_since_contact,
            "bytes_replicated": peer.bytes_sent,
            # non-zero: the peer said it is re-fetching entries it lost on disk, up to this index
            "recovering_to": peer.lost_to,
        }
        for peer in status.peers
    }
    return {
        "id": node.id,
        "version": __version__,
        "cluster_id": node.cluster_id,
        "role": status.role.value,
        "term": status.term,
        "leader": status.leader or None,
        "commit_index": status.commit,
        "applied_index": status.applied,
        "first_index": status.first_index,
        "last_index": status.last_index,
        # non-zero while this node re-fetches entries it lost on disk (up to this index)
        "recovering_to": status.recovering_to,
        # raised alarms (NOSPACE: this node refuses writes while it leads) and why; the data
        # dir's free space, the reserve, and what persisting keeps failing with (or null)
        "alarms": sorted(alarms),
        "alarm_reasons": alarms,
        "space": node.space_status(),
        "voters": sorted(membership.voters),
        "learners": sorted(membership.learners),
        "peer_addresses": addresses,
        "client_addresses": {
            k[len(CLIENT_ADDRESS_META):]: v for k, v in node.meta_items() if k.startswith(CLIENT_ADDRESS_META)
        },
        "lead_transferee": status.lead_transferee or None,
        "tick_interval": node.timing.tick_interval,
        "peers": peers,
        "revision": node.revision,
        "keys": node.key_count,
        "transport": node.transport_stats(),
        # per peer heard from: its release (None: it did not say, i.e. 0.1.0) and the
        # protocol version this node writes to it
        "peer_versions": node.peer_versions.as_json(),
    }


def _session(body) -> tuple[str, int] | None:
    """A numbered write's (client, seq): a retry of it joins the first attempt (keyval.runtime.requests)."""
    return (body.client, body.seq) if body.client else None
