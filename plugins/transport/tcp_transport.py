"""The ``tcp`` transport: length-prefixed frames over asyncio (see keyval/plugin_api/transport.py).

A frame is a 4-byte big-endian length and that many bytes: the codec's encoding of one
message, followed by its HMAC tag when a cluster secret is configured. Each connection
opens with a handshake (wire format in ``tcp_hello``): the acceptor's nonce, then the
dialler's hello, which says who dials and where it listens (so that the acceptor can answer
with ``address=None`` before its configuration names us) and, sealed, keys the connection
to both nonces: tags carry an implicit frame counter (``tcp_session``), so nothing recorded
replays. Inbound connections are accepted from anyone and held to a hello's size and time
until it authenticates (``tcp_inbound``); with mutual TLS the certificate must name the
node id the hello claims (``tcp_identity``).
"""
from __future__ import annotations

import asyncio
import logging
import random
import secrets
from typing import Any

from keyval.peer.codec import Advert, encode_message
from keyval.peer.versions import PeerVersions
from keyval.raft.messages import Message
from keyval.plugin_api.transport import Deliver

from .peer_identity import ClusterIdentity, PeerAddresses
from .tcp_hello import NONCE_BYTES, encode_hello, split_address
from .tcp_inbound import BufferBudget, Inbound, peername
from .tcp_options import TcpOptions, load_authenticator, parse_tcp_options, tls_contexts
from .tcp_peer import Peer
from .tcp_session import TAG_BYTES, FrameSealer, session_key
from .tcp_stats import Stats

log = logging.getLogger("keyval.transport.tcp")


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
        self._inbound: set[Inbound] = set()
        self._closed = False
        self._stats = Stats(log, "tcp transport", opts.log_interval)
        self._budget = BufferBudget(opts.buffer_limit)
        self._refused = frozenset(opts.tls_refused)
        self._versions = PeerVersions()
        self._dialled: set[str] = set()  # peers dialled before (bounded by the peers we send to)

    # -- the Transport contract ------------------------------------------------------------
    async def start(self, node_id: str, address: str, deliver: Deliver) -> None:
        if self._server is not None or self._closed:
            raise RuntimeError("a tcp transport starts once")
        host, port = split_address(address)
        self._node_id, self._deliver = node_id, deliver
        self._stats.label = self._identity.label = self._learned.label = f"tcp transport of node {node_id}"
        self._server = await asyncio.get_running_loop().create_server(
            lambda: Inbound(self), host, port, ssl=self._server_tls,
            # A TLS handshake is part of what a stranger must finish in time.
            ssl_handshake_timeout=self._opts.handshake_timeout if self._server_tls else None,
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

    def use_peer_versions(self, versions: PeerVersions) -> None:
        self._versions = versions

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
        # Sealed when written: the tag depends on the connection and the frame's place in it.
        try:
            payload = encode_message(message, self._identity.stamp(), self._versions.send_version(peer_id))
        except ValueError as exc:  # a number no peer would decode (keyval.wire_bounds): never sent
            self._stats.report("dropped_too_large", f"{type(message).__name__} to {peer_id} not sent: {exc}")
            return
        size = len(payload) + (TAG_BYTES if self._auth is not None else 0)
        if size > self._opts.max_frame_bytes:
            self._stats.report("dropped_too_large", f"{type(message).__name__} to {peer_id} is {size} "
                               f"bytes, more than max_frame_bytes {self._opts.max_frame_bytes}")
            return
        peer = self._peers.get(peer_id)
        if peer is None:
            peer = Peer(peer_id, address, self._opts, self._stats, self._client_tls, self._rng,
                        lambda nonce, peer_id=peer_id: self._dial(nonce, peer_id), self._refused)
            self._peers[peer_id] = peer
        elif peer.address != address:
            peer.move(address)
        peer.push(payload)

    def stats(self) -> dict[str, int]:
        stats = self._stats.snapshot()
        # gauges: bytes of partial frames held now (all inbound connections, and the part of
        # connections not yet authenticated), against inbound_buffer_bytes
        stats["inbound_buffered_bytes"] = self._budget.held
        stats["inbound_buffered_preauth_bytes"] = self._budget.held_preauth
        return stats

    @property
    def refused(self) -> frozenset[str]:
        return self._refused

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
    def _inbound_opened(self, connection: Inbound, transport: asyncio.Transport) -> bool:
        if self._closed:  # accepted just before close() and scheduled after it
            transport.abort()
            return False
        if len(self._inbound) >= self._opts.max_connections:
            # Anyone may connect, so the number of connections (each of which may hold a
            # frame being read) is what bounds the memory strangers can make us spend.
            self._stats.report("connections_refused", f"{peername(transport)}: already "
                               f"{len(self._inbound)} inbound connections (max_connections)")
            transport.abort()
            return False
        self._inbound.add(connection)
        self._stats.add("connections_accepted")
        return True

    def _accept(self, cluster_id: str, message: Message, peer: str, advert: Advert | None = None) -> None:
        """Deliver a message that arrived on an authenticated connection, if it is ours."""
        if not self._identity.accepts(cluster_id):
            self._stats.report("dropped_cluster", f"from {peer}: cluster {cluster_id!r}, ours is "
                               f"{self._identity.configured!r}")
            return
        if message.to != self._node_id:
            self._stats.report("dropped_wrong_node", f"from {peer}: {type(message).__name__} for node {message.to!r}")
            return
        self._identity.observe(cluster_id, message.frm)
        self._versions.heard(message.frm, advert)
        self._stats.add("received")
        try:
            self._deliver(message)  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001 - the node's bug must not cut the connection
            self._stats.report("deliver_errors", f"delivering {type(message).__name__} failed: {exc!r}")

    def _dial(self, acceptor_nonce: bytes, peer_id: str = "") -> tuple[FrameSealer, bytes]:
        """For a connection we dialled, given the acceptor's nonce: its sealer and its framed
        hello (built now: the cluster id may have changed since the last connection)."""
        # A connection after the first may reach a restarted peer, perhaps of another release.
        if peer_id in self._dialled:
            self._versions.forget(peer_id)
        elif peer_id:
            self._dialled.add(peer_id)
        nonce = secrets.token_bytes(NONCE_BYTES)
        key = session_key(self._auth, acceptor_nonce, nonce) if self._auth is not None else None
        sealer = FrameSealer(key)
        hello = encode_hello(nonce, key is not None, self._node_id, self._address, self._identity.stamp())
        return sealer, sealer.frame(hello)

