"""The ``tcp`` transport: length-prefixed frames over asyncio (see keyval/transport.py).

A frame is a 4-byte big-endian length and that many bytes: the codec's encoding of one
message, followed by its HMAC tag when a cluster secret is configured. Inbound connections
are accepted from anyone — what they send has to decode, authenticate and belong to our
cluster before it reaches the node. The first frame of a connection we dial is a hello
(``tcp_hello``): it tells the accepting side where we listen, so that it can answer us
with ``address=None`` before its configuration names us.
"""
from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

from keyval.auth import AuthError
from keyval.codec import DecodeError, decode_message, encode_message
from keyval.raft.messages import Message
from keyval.transport import Deliver

from .peer_identity import ClusterIdentity, PeerAddresses
from .tcp_hello import HelloError, as_seen, decode_hello, encode_hello, is_hello
from .tcp_options import TcpOptions, load_authenticator, parse_tcp_options, tls_contexts
from .tcp_peer import Peer, split_address
from .tcp_stats import Stats

log = logging.getLogger("keyval.transport.tcp")

LENGTH_BYTES = 4


class TcpTransport:
    def __init__(self, options: dict[str, Any] | TcpOptions | None = None) -> None:
        opts = options if isinstance(options, TcpOptions) else parse_tcp_options(options)
        self._opts = opts
        # Loaded now, so that a bad secret or certificate fails when the node is configured.
        self._auth = load_authenticator(opts)
        self._server_tls, self._client_tls = tls_contexts(opts)
        self._rng = random.Random(opts.seed)
        self._node_id = ""
        self._address = ""
        self._deliver: Deliver | None = None
        self._identity = ClusterIdentity(log)
        self._learned = PeerAddresses(log)
        self._server: asyncio.Server | None = None
        self._peers: dict[str, Peer] = {}
        self._inbound: set[_Inbound] = set()
        self._closed = False
        self._stats = Stats(log, "tcp transport", opts.log_interval)

    # -- the Transport contract ------------------------------------------------------------
    async def start(self, node_id: str, address: str, deliver: Deliver) -> None:
        if self._server is not None or self._closed:
            raise RuntimeError("a tcp transport starts once")
        host, port = split_address(address)
        self._node_id, self._deliver = node_id, deliver
        self._stats.label = self._identity.label = self._learned.label = f"tcp transport of node {node_id}"
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Inbound(self), host, port, ssl=self._server_tls
        )
        sockname = self._server.sockets[0].getsockname()
        bound_host = f"[{sockname[0]}]" if ":" in sockname[0] else sockname[0]
        self._address = f"{bound_host}:{sockname[1]}"
        if self._auth is None:
            log.warning("tcp transport of node %s: no cluster secret configured; peer traffic on %s is "
                        "unauthenticated", node_id, self._address)
        log.info("tcp transport of node %s listening on %s%s", node_id, self._address,
                 " (TLS)" if self._server_tls else "")

    @property
    def address(self) -> str:
        return self._address

    @property
    def cluster_id(self) -> str | None:
        return self._identity.cluster_id

    def set_cluster_id(self, cluster_id: str) -> None:
        self._identity.configure(cluster_id)

    def send(self, peer_id: str, address: str | None, message: Message) -> None:
        if self._closed or self._server is None:
            self._stats.report("dropped_closed", f"message to {peer_id} sent while the transport is not running")
            return
        if address is None:
            address = self._learned.get(peer_id)
            if address is None:
                self._stats.report("dropped_no_address", f"{type(message).__name__} to {peer_id}: no address "
                                   "given, and none learned from its traffic")
                return
        try:
            payload = encode_message(message, self._identity.stamp())
        except ValueError as exc:  # a number no peer would decode (keyval.wire_bounds): never sent
            self._stats.report("dropped_too_large", f"{type(message).__name__} to {peer_id} not sent: {exc}")
            return
        if self._auth is not None:
            payload = self._auth.seal(payload)
        if len(payload) > self._opts.max_frame_bytes:
            self._stats.report("dropped_too_large", f"{type(message).__name__} to {peer_id} is {len(payload)} "
                               f"bytes, more than max_frame_bytes {self._opts.max_frame_bytes}")
            return
        peer = self._peers.get(peer_id)
        if peer is None:
            peer = Peer(peer_id, address, self._opts, self._stats, self._client_tls, self._rng, self._hello)
            self._peers[peer_id] = peer
        elif peer.address != address:
            peer.move(address)
        peer.push(_framed(payload))

    def stats(self) -> dict[str, int]:
        return self._stats.snapshot()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        server, self._server = self._server, None
        if server is not None:
            server.close()
        # Aborting drops what is unread, as close() promises.
        for connection in list(self._inbound):
            connection.abort()
        peers, self._peers = list(self._peers.values()), {}
        await asyncio.gather(*(p.close() for p in peers), return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    # -- inbound ---------------------------------------------------------------------------
    def _inbound_opened(self, connection: "_Inbound", transport: asyncio.Transport) -> bool:
        if self._closed:  # accepted just before close() and scheduled after it
            transport.abort()
            return False
        if len(self._inbound) >= self._opts.max_connections:
            # Anyone may connect, so the number of connections (each of which may hold a
            # frame being read) is what bounds the memory strangers can make us spend.
            self._stats.report("connections_refused", f"{_peername(transport)}: already "
                               f"{len(self._inbound)} inbound connections (max_connections)")
            transport.abort()
            return False
        self._inbound.add(connection)
        self._stats.add("connections_accepted")
        return True

    def _accept(self, frame: bytes, peer: str, source_host: str | None) -> bool:
        """Deliver one frame if it is good; False if it was bad (failed auth or decoding).
        ``source_host`` is given for a connection's first frame only: the one that may be a hello."""
        payload: bytes | memoryview = frame
        if self._auth is not None:
            try:
                payload = self._auth.open(frame)
            except AuthError as exc:
                self._stats.report("dropped_auth", f"from {peer}: {exc}")
                return False
        if source_host is not None and is_hello(payload):
            return self._on_hello(payload, peer, source_host)
        try:
            cluster_id, message = decode_message(payload)
        except DecodeError as exc:
            self._stats.report("dropped_decode", f"from {peer}: {exc}")
            return False
        if not self._identity.accepts(cluster_id):
            self._stats.report("dropped_cluster", f"from {peer}: cluster {cluster_id!r}, ours is "
                               f"{self._identity.configured!r}")
            return True
        if message.to != self._node_id:
            self._stats.report("dropped_wrong_node", f"from {peer}: {type(message).__name__} for node {message.to!r}")
            return True
        self._identity.observe(cluster_id, message.frm)
        self._stats.add("received")
        try:
            self._deliver(message)  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001 - the node's bug must not cut the connection
            self._stats.report("deliver_errors", f"delivering {type(message).__name__} failed: {exc!r}")
        return True

    def _on_hello(self, payload: bytes | memoryview, peer: str, source_host: str) -> bool:
        try:
            hello = decode_hello(payload)
        except HelloError as exc:
            self._stats.report("dropped_decode", f"hello from {peer}: {exc}")
            return False
        self._stats.add("hellos_received")
        # Another cluster's node is no one to answer: its messages are dropped (and counted)
        # here anyway, so its hello is simply not remembered.
        if self._identity.accepts(hello.cluster_id):
            self._learned.learn(hello.node_id, as_seen(hello.address, source_host))
        return True

    def _hello(self) -> bytes:
        """The framed hello that opens each connection we dial (see tcp_hello)."""
        payload = encode_hello(self._node_id, self._address, self._identity.stamp())
        return _framed(self._auth.seal(payload) if self._auth is not None else payload)


class _Inbound(asyncio.Protocol):
    """One inbound connection: frames are parsed and delivered as bytes arrive (no reader
    task: a message reaches the node in the loop turn its bytes came in)."""

    def __init__(self, owner: TcpTransport) -> None:
        self._owner = owner
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._first = True
        self._bad = 0
        self._peer = "an unknown peer"
        self._source_host = ""

    def connection_made(self, transport) -> None:
        if self._owner._inbound_opened(self, transport):
            self._transport = transport
            self._peer = _peername(transport)
            self._source_host = _peerhost(transport)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()
            self._transport = None

    def data_received(self, data: bytes) -> None:
        if self._transport is None:
            return
        owner, buffer = self._owner, self._buffer
        buffer += data
        limit = owner._opts.max_frame_bytes
        offset = 0
        while len(buffer) - offset >= LENGTH_BYTES:
            size = int.from_bytes(buffer[offset:offset + LENGTH_BYTES], "big")
            if size > limit:
                owner._stats.report("dropped_oversized", f"{self._peer} announced a {size}-byte frame "
                                    f"(max_frame_bytes {limit}); closing the connection")
                owner._stats.add("connections_closed_bad")
                return self._hang_up()
            end = offset + LENGTH_BYTES + size
            if len(buffer) < end:
                break
            frame = bytes(buffer[offset + LENGTH_BYTES:end])
            offset = end
            good = owner._accept(frame, self._peer, self._source_host if self._first else None)
            self._first = False
            if good:
                self._bad = 0
                continue
            self._bad += 1
            if self._bad >= owner._opts.max_bad_frames:
                owner._stats.report("connections_closed_bad", f"closing the connection from {self._peer} "
                                    f"after {self._bad} bad frames in a row")
                return self._hang_up()
            if self._transport is None:  # closed meanwhile
                return
        del buffer[:offset]

    def _hang_up(self) -> None:
        self._buffer.clear()
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def eof_received(self) -> bool:
        if self._buffer:
            self._owner._stats.report("dropped_truncated", f"connection from {self._peer} closed inside a frame")
            self._buffer.clear()
        return False

    def connection_lost(self, exc) -> None:
        self._owner._inbound.discard(self)
        self._transport = None


def _framed(payload: bytes) -> bytes:
    return len(payload).to_bytes(LENGTH_BYTES, "big") + payload


def _peerhost(transport: asyncio.BaseTransport) -> str:
    name = transport.get_extra_info("peername")
    return str(name[0]) if isinstance(name, tuple) and name else ""


def _peername(transport: asyncio.BaseTransport) -> str:
    name = transport.get_extra_info("peername")
    if isinstance(name, tuple) and len(name) >= 2:
        return f"{name[0]}:{name[1]}"
    return "an unknown peer"
