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
from typing import Awaitable, Callable

from keyval import client_protocol as p
from keyval.admin import OperationRefused, UnknownOperation
from keyval.kv import CommandError, check_limits, encode_delete, encode_meta, encode_put
from keyval.node import Node, NodeUnavailable, ProposalLost
from keyval.raft import NotLeader, ProposalDropped, RaftError

log = logging.getLogger("keyval.service")

MAX_BAD_FRAMES = 8
MAX_SCAN_LIMIT = 100_000
CLIENT_ADDRESS_META = "client_address/"

AdminHandler = Callable[[str, dict], Awaitable[dict]]


class ClientService:
    def __init__(self, node: Node, address: str, request_timeout: float = 5.0, admin: AdminHandler | None = None) -> None:
        self.node = node
        self.address = address
        self.request_timeout = request_timeout
        self.admin = admin
        self._server: asyncio.base_events.Server | None = None
        self._connections: dict[asyncio.Task, asyncio.StreamWriter] = {}
        self._jobs: set[asyncio.Task] = set()

    async def start(self) -> None:
        host, _, port = self.address.rpartition(":")
        self._server = await asyncio.start_server(self._on_connection, host.strip("[]"), int(port))
        sock = self._server.sockets[0].getsockname()
        self.address = f"{host}:{sock[1]}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        # Hang up rather than cancel: asyncio (3.11) logs a cancelled connection handler as an
        # error with a traceback, and a node that stops on its own (removed) has clients.
        for job in list(self._jobs):
            job.cancel()
        for writer in list(self._connections.values()):
            writer.transport.abort()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._connections[task] = writer
        pending: set[asyncio.Task] = set()
        bad = 0
        try:
            while True:
                try:
                    payload = await p.read_frame(reader)
                except p.ProtocolError as exc:
                    self._reply(writer, 0, p.Error(p.INVALID, f"malformed frame: {exc}"))
                    break
                if payload is None:
                    break
                try:
                    request = p.decode_request(payload)
                except p.ProtocolError as exc:
                    bad += 1
                    code = p.bad_request_code(payload)
                    self._reply(writer, p.request_id_of(payload), p.Error(code, f"cannot decode request: {exc}"))
                    if bad >= MAX_BAD_FRAMES:
                        break
                    continue
                job = asyncio.create_task(self._serve(request, writer))
                pending.add(job)
                job.add_done_callback(pending.discard)
                self._jobs.add(job)
                job.add_done_callback(self._jobs.discard)
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            for job in pending:
                job.cancel()
            writer.close()
            self._connections.pop(task, None)

    def _reply(self, writer: asyncio.StreamWriter, request_id: int, body) -> None:
        if not writer.is_closing():
            writer.write(p.frame(p.Response(p.PROTOCOL_VERSION, request_id, body)))

    async def _serve(self, request: p.Request, writer: asyncio.StreamWriter) -> None:
        if request.version > p.PROTOCOL_VERSION:
            body = p.Error(p.INVALID, f"protocol version {request.version} is newer than this node's {p.PROTOCOL_VERSION}")
        else:
            body = await self._dispatch(request.body)
        self._reply(writer, request.id, body)
        try:
            await writer.drain()
        except ConnectionError:
            pass

    async def _dispatch(self, body):
        node = self.node
        if node.core is None:
            return p.Error(p.UNAVAILABLE, "the node is starting")
        try:
            if isinstance(body, p.Put):
                check_limits(body.key, body.value, node.kv.limits)
                data = encode_put(body.key, body.value, expect_revision=body.expect_revision, client=body.client, seq=body.seq, acked=body.acked)
                return self._write_reply(await node.propose(data, self.request_timeout))
            if isinstance(body, p.Delete):
                check_limits(body.key, None, node.kv.limits)
                data = encode_delete(body.key, expect_revision=body.expect_revision, client=body.client, seq=body.seq, acked=body.acked)
                return self._write_reply(await node.propose(data, self.request_timeout))
            if isinstance(body, p.Get):
                check_limits(body.key, None, node.kv.limits)
                if not body.serializable:
                    await node.linearizable_barrier(self.request_timeout)
                item = node.kv.get(body.key)
                if item is None:
                    return p.GetReply(found=False, revision=node.kv.revision)
                return p.GetReply(True, item.value, item.mod_revision, item.create_revision)
            if isinstance(body, p.Scan):
                if body.limit < 0 or body.limit > MAX_SCAN_LIMIT:
                    raise CommandError(f"limit must be between 0 and {MAX_SCAN_LIMIT}")
                if not body.serializable:
                    await node.linearizable_barrier(self.request_timeout)
                items = node.kv.scan(body.prefix, body.limit or MAX_SCAN_LIMIT)
                return p.ScanReply([(i.key, i.value, i.mod_revision) for i in items], node.kv.revision)
            if isinstance(body, p.Status):
                return p.StatusReply(node_status(node))
            if isinstance(body, p.RegisterClientAddress):
                data = encode_meta(CLIENT_ADDRESS_META + body.node, body.address)
                await node.propose(data, self.request_timeout)
                return p.AdminReply({"registered": body.node})
            if isinstance(body, p.Admin):
                if self.admin is None:
                    return p.Error(p.UNKNOWN_REQUEST, f"cluster operation {body.op!r} is not supported by this node")
                return p.AdminReply(await self.admin(body.op, body.args))
            return p.Error(p.UNKNOWN_REQUEST, f"unknown request {type(body).__name__}")
        except CommandError as exc:
            return p.Error(p.INVALID, str(exc))
        except OperationRefused as exc:
            return p.Error(p.REFUSED, str(exc))
        except UnknownOperation as exc:
            return p.Error(p.UNKNOWN_REQUEST, str(exc))
        except NotLeader as exc:
            return self._not_leader(exc.leader)
        except ProposalDropped as exc:
            return p.Error(p.UNAVAILABLE, f"the leader cannot take writes right now ({exc}); retry")
        except ProposalLost as exc:
            return p.Error(p.UNAVAILABLE, str(exc))
        except NodeUnavailable as exc:
            return p.Error(p.UNAVAILABLE, str(exc))
        except RaftError as exc:
            return p.Error(p.REFUSED, str(exc))
        except asyncio.TimeoutError:
            return p.Error(p.TIMEOUT, f"no answer within {self.request_timeout:g}s (a write may still apply)")

    def _not_leader(self, leader: str):
        if not leader:
            return p.Error(p.NO_LEADER, "no leader is elected right now; retry shortly")
        address = self.node.kv.meta.get(CLIENT_ADDRESS_META + leader, "")
        return p.Error(p.NOT_LEADER, f"{self.node.id} is not the leader; {leader} is", leader, address)

    @staticmethod
    def _write_reply(result) -> p.WriteReply:
        if result is None:
            return p.WriteReply(False, 0, error="no result")
        return p.WriteReply(result.ok, result.revision, result.current_revision, result.existed, result.error)


def node_status(node: Node) -> dict:
    status = node.core.status()
    membership = status.membership
    addresses = dict(membership.addresses)
    peers = {
        peer.id: {
            "match_index": peer.match,
            "next_index": peer.next,
            "state": peer.state,
            "recent_active": peer.recent_active,
            "ticks_since_contact": peer.ticks_since_contact,
            "bytes_replicated": peer.bytes_sent,
        }
        for peer in status.peers
    }
    return {
        "id": node.id,
        "cluster_id": node.cluster_id,
        "role": status.role.value,
        "term": status.term,
        "leader": status.leader or None,
        "commit_index": status.commit,
        "applied_index": status.applied,
        "first_index": status.first_index,
        "last_index": status.last_index,
        "voters": sorted(membership.voters),
        "learners": sorted(membership.learners),
        "peer_addresses": addresses,
        "client_addresses": {
            k[len(CLIENT_ADDRESS_META):]: v for k, v in node.kv.meta.items() if k.startswith(CLIENT_ADDRESS_META)
        },
        "lead_transferee": status.lead_transferee or None,
        "tick_interval": node.timing.tick_interval,
        "peers": peers,
        "revision": node.kv.revision,
        "keys": len(node.kv),
        "transport": node.transport.stats() if node.transport is not None else {},
    }
