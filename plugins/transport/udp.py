"""The ``udp`` transport backend: Raft messages as UDP datagrams (asyncio-dgram).

One socket per node. A message is encoded with ``keyval.peer.codec`` and, when larger than a
datagram, split into fragments that the receiver reassembles (``udp_fragment``); small
messages queued for the same peer at the same time share a datagram, which is what lets
many small messages cost fewer system calls and event-loop turns than one datagram each.
The datagram format is in ``udp_wire``. Nothing is acknowledged: a lost fragment loses its message and
Raft's retries resend it. Large messages (snapshot chunks) are paced per peer, since a burst
larger than the receiver's socket buffer would be lost whole.

With ``secret_file`` every datagram is sealed with HMAC-SHA256 and replays are rejected by a
sliding window per (sender, epoch) (``udp_replay``), which only a datagram that passed the
MAC moves. Without a secret no window is kept at all: its sender, epoch and sequence number
would be the forger's to choose, and one datagram numbered 2**62 would make the receiver
drop its real sender's traffic as "too old" (Raft copes with the duplicates a network
makes; a forger without a secret to stop can send it anything anyway).
Options: ``udp_options.UdpOptions``.

There is one socket per node, so the source address of a datagram that passed every check
is where its sender listens: it is remembered (``peer_identity``), and the node can answer
a peer its configuration does not name yet with ``address=None``. With a secret, every
state a datagram's fields change (replay windows, reassembly buffers keyed by sender and
epoch, learned addresses, an adopted cluster id) is touched only after its MAC checked
out, so an unauthenticated peer can change none of it. Without a secret (explicitly
insecure) the reassembly buffers are bounded (``reassembly_bytes``), and learned addresses
and the adopted cluster id are as trustworthy as the network.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import time
from collections import deque
from typing import Any

import asyncio_dgram

from keyval import hookimpl
from keyval.peer.auth import Authenticator, AuthError, load_secret
from keyval.plugin_api.backends import TransportBackend
from keyval.peer.codec import DecodeError, decode_envelope, encode_message
from keyval.peer.versions import PeerVersions
from keyval.raft.messages import Message
from keyval.plugin_api.transport import Deliver

from . import udp_wire as wire
from .peer_identity import ClusterIdentity, PeerAddresses
from .udp_fragment import Reassembler, split
from .udp_log import DropLog
from .udp_options import UdpOptions, join_address, split_address
from .udp_replay import ReplayGuard

log = logging.getLogger(__name__)

COUNTERS = (
    "sent", "received", "datagrams_sent", "datagrams_received", "bytes_sent", "bytes_received",
    "dropped_decode", "dropped_cluster", "dropped_auth", "dropped_replay", "dropped_queue_full",
    "dropped_too_large", "dropped_unresolved", "dropped_no_address", "send_errors", "deliver_errors",
)
#: How long a resolved peer address is trusted before it is looked up again (seconds).
RESOLVE_TTL = 30.0


class _Peer:
    """Records waiting for one peer, and the task sending them (coalesced, paced)."""

    def __init__(self, burst: int) -> None:
        #: (address, record header, record data) in sending order.
        self.queue: deque[tuple[str, bytes, bytes | memoryview]] = deque()
        self.queued = 0
        self.wake = asyncio.Event()
        self.task: asyncio.Task | None = None
        self.tokens = float(burst)
        self.stamp = time.monotonic()


class UdpTransport:
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = UdpOptions.parse(options)
        secret = load_secret(self.options.secret_file) if self.options.secret_file else None
        self._auth = Authenticator(secret) if secret else None
        self._tag = Authenticator.TAG_SIZE if secret else 0
        self._flags = wire.FLAG_SEALED if secret else 0
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._drops = DropLog(log)
        self._reassembler = Reassembler(self.options.reassembly_bytes,
                                        self.options.reassembly_timeout,
                                        self.options.max_message_bytes,
                                        self.options.reassembly_max_messages,
                                        self.options.reassembly_max_per_sender,
                                        on_limit=lambda kind, detail: self._drops.drop(kind, "%s", detail))
        self._replay = ReplayGuard(self.options.replay_window)
        self._identity = ClusterIdentity(log)
        self._learned = PeerAddresses(log)
        self._peers: dict[str, _Peer] = {}
        self._resolved: dict[str, tuple[float, Any]] = {}
        self._tasks: list[asyncio.Task] = []
        self._stream: asyncio_dgram.DatagramServer | None = None
        self._node_id = ""
        self._address = ""
        self._closed = False
        self._versions = PeerVersions()

    # -- the contract -----------------------------------------------------------------------
    async def start(self, node_id: str, address: str, deliver: Deliver) -> None:
        if self._stream is not None or self._closed:
            raise RuntimeError("a udp transport starts once")
        self._node_id = node_id
        self._identity.label = self._learned.label = f"udp transport of {node_id}"
        self._sender_raw = wire.encode_sender(node_id)
        self._deliver = deliver
        # Bytes of records one datagram holds, and of message bytes one record holds.
        self._datagram_room = (self.options.max_datagram_bytes - self._tag
                               - wire.header_size(self._sender_raw))
        self._record_room = self._datagram_room - wire.RECORD_HEADER
        self._epoch = secrets.randbits(64)
        self._seq = 0
        self._message_id = 0
        host, port = split_address(address)
        self._stream = await asyncio_dgram.bind((host, port))
        self._tune_socket(self._stream.socket)
        bound = self._stream.sockname
        self._address = join_address(host, bound[1])
        self._family = self._stream.socket.family
        self._tasks = [asyncio.create_task(self._receive_loop(), name=f"udp-recv-{node_id}"),
                       asyncio.create_task(self._expire_loop(), name=f"udp-expire-{node_id}")]
        if self._auth is None:
            log.warning("udp transport of %s on %s: peer traffic is unauthenticated "
                        "(no secret_file configured)", node_id, self._address)
        else:
            log.info("udp transport of %s listening on %s (authenticated)", node_id, self._address)

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
        if self._closed or self._stream is None:
            return
        if address is None:
            address = self._learned.get(peer_id)
            if address is None:
                self._drop("dropped_no_address", "%s to %s: no address given, and none learned from its traffic",
                           type(message).__name__, peer_id)
                return
        try:
            encoded = encode_message(message, self._identity.stamp(), self._versions.send_version(peer_id))
            records = self._records(encoded)
        except (TypeError, ValueError) as exc:
            self._drop("dropped_too_large", "message to %s not sent: %s", peer_id, exc)
            return
        peer = self._peers.get(peer_id)
        if peer is None:
            peer = self._peers[peer_id] = _Peer(self.options.pace_burst_bytes)
            peer.task = asyncio.get_running_loop().create_task(self._send_loop(peer),
                                                              name=f"udp-send-{peer_id}")
        size = sum(len(data) + wire.RECORD_HEADER for _, data in records)
        if peer.queued + size > self.options.send_queue_bytes:
            self._drop("dropped_queue_full", "message to %s: send queue full", peer_id)
            return
        if len(records) == 1:
            peer.queue.append((address, *records[0]))
        else:
            peer.queue.extend((address, header, data) for header, data in records)
        peer.queued += size
        self._counts["sent"] += 1
        peer.wake.set()

    def stats(self) -> dict[str, int]:
        stats = dict(self._counts)
        r = self._reassembler.stats
        stats.update(
            dropped_fragment_bogus=r.bogus,
            dropped_fragment_duplicate=r.duplicate,
            dropped_reassembly_timeout=r.timed_out,
            dropped_reassembly_evicted=r.evicted,
            dropped_reassembly_sender_limit=r.sender_limit,
            dropped_reassembly_message_limit=r.message_limit,
            reassembly_bytes_held=self._reassembler.held,
            reassembly_messages_held=len(self._reassembler),
        )
        stats["dropped_too_large"] += r.too_large
        stats["send_queue_bytes"] = sum(p.queued for p in self._peers.values())
        return stats

    async def close(self) -> None:
        self._closed = True
        tasks = self._tasks + [p.task for p in self._peers.values() if p.task]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks = []
        self._peers.clear()
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    # -- sending ----------------------------------------------------------------------------
    def _records(self, encoded: bytes) -> list[tuple[bytes, bytes | memoryview]]:
        """(record header, data) pairs; the data stays a view of ``encoded`` until the one
        copy that builds the datagram."""
        if len(encoded) > self.options.max_message_bytes:
            raise ValueError(f"{len(encoded)} bytes encoded exceeds max_message_bytes")
        self._message_id += 1
        total = len(encoded)
        if total <= self._record_room:
            return [(wire.record_header(self._message_id, 0, 1, total), encoded)]
        fragments = split(encoded, self._record_room)
        return [(wire.record_header(self._message_id, i, len(fragments), total), f)
                for i, f in enumerate(fragments)]

    def _next_datagram(self, peer: _Peer) -> tuple[str, bytes]:
        """Records from the head of the queue, as many as fit one datagram to one address."""
        address, header, data = peer.queue.popleft()
        parts = [b"", header, data]
        room = self._datagram_room - wire.RECORD_HEADER - len(data)
        queue = peer.queue
        while queue and queue[0][0] == address and len(queue[0][2]) + wire.RECORD_HEADER <= room:
            _, header, data = queue.popleft()
            parts += (header, data)
            room -= wire.RECORD_HEADER + len(data)
        self._seq += 1
        parts[0] = wire.pack_header(self._flags, self._epoch, self._seq, self._sender_raw)
        datagram = b"".join(parts)
        peer.queued -= len(datagram) - len(parts[0])
        return address, self._auth.seal(datagram) if self._auth else datagram

    async def _send_loop(self, peer: _Peer) -> None:
        assert self._stream is not None
        stream = self._stream
        rate = self.options.pace_bytes_per_s
        while True:
            await peer.wake.wait()
            peer.wake.clear()
            while peer.queue:
                address, datagram = self._next_datagram(peer)
                target = await self._resolve(address)
                if target is None:
                    self._counts["dropped_unresolved"] += 1
                    continue
                if rate:
                    await self._pace(peer, len(datagram), rate)
                try:
                    await stream.send(datagram, target)
                except asyncio_dgram.TransportClosed:
                    return
                except OSError as exc:
                    self._drop("send_errors", "datagram to %s: %s", address, exc)
                    continue
                self._counts["datagrams_sent"] += 1
                self._counts["bytes_sent"] += len(datagram)

    async def _pace(self, peer: _Peer, size: int, rate: int) -> None:
        # A token bucket: up to pace_burst_bytes leave at once, then `rate` bytes/s. The
        # sleep also lets a receiver in the same event loop (tests) drain its socket.
        now = time.monotonic()
        peer.tokens = min(self.options.pace_burst_bytes, peer.tokens + (now - peer.stamp) * rate)
        peer.stamp = now
        if peer.tokens < 0:
            await asyncio.sleep(-peer.tokens / rate)
            now = time.monotonic()
            peer.tokens += (now - peer.stamp) * rate
            peer.stamp = now
        peer.tokens -= size

    async def _resolve(self, address: str) -> Any:
        cached = self._resolved.get(address)
        now = time.monotonic()
        if cached is not None and now - cached[0] < RESOLVE_TTL:
            return cached[1]
        try:
            host, port = split_address(address)
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, family=self._family, type=socket.SOCK_DGRAM)
            target = infos[0][4]
        except (OSError, ValueError, IndexError) as exc:
            self._drops.drop("unresolved", "peer address %s: %s", address, exc)
            target = None
        # A failed lookup is remembered too (briefly): a dead name must not cost one DNS
        # query per datagram.
        self._resolved[address] = (now if target else now - RESOLVE_TTL + 1.0, target)
        return target

    # -- receiving --------------------------------------------------------------------------
    async def _receive_loop(self) -> None:
        assert self._stream is not None
        stream = self._stream
        while True:
            try:
                data, source = await stream.recv()
            except asyncio_dgram.TransportClosed:
                return
            except OSError:
                continue  # an ICMP error reported for an earlier send; nothing to receive
            try:
                self._on_datagram(data, source)
            except Exception as exc:  # noqa: BLE001 - the receive loop must never die
                self._drop("dropped_decode", "datagram handling failed: %r", exc)

    def _on_datagram(self, data: bytes, source: Any = None) -> None:
        # Peer-chosen strings (the sender id) are logged with %r: one line per event, always.
        self._counts["datagrams_received"] += 1
        self._counts["bytes_received"] += len(data)
        try:
            sealed = bool(wire.peek_flags(data) & wire.FLAG_SEALED)
        except wire.BadDatagram as exc:
            self._drop("dropped_decode", "datagram: %s", exc)
            return
        if self._auth is not None:
            if not sealed:
                self._drop("dropped_auth", "unsealed datagram from an unauthenticated peer")
                return
            try:
                data = self._auth.open(data)
            except AuthError as exc:
                self._drop("dropped_auth", "datagram: %s", exc)
                return
        elif sealed:
            self._drop("dropped_auth", "sealed datagram, but this node has no secret_file")
            return
        try:
            header, body = wire.unpack(data)
        except wire.BadDatagram as exc:
            self._drop("dropped_decode", "datagram: %s", exc)
            return
        # Authenticated (sealed, MAC checked above), or no window at all: see the docstring.
        if self._auth is not None and not self._replay.accept(header.sender, header.epoch, header.seq):
            self._drop("dropped_replay", "datagram %d of %r replayed or too old", header.seq, header.sender)
            return
        try:
            for message_id, index, count, total, fragment in wire.records(body):
                if count == 1:
                    if total > self.options.max_message_bytes:
                        self._drop("dropped_too_large", "message of %d bytes from %r", total, header.sender)
                    else:
                        self._on_message(header.sender, fragment, source)
                    continue
                encoded = self._reassembler.add((header.sender, header.epoch, message_id), index,
                                                count, total, fragment, time.monotonic(), header.sender)
                if encoded is not None:
                    self._on_message(header.sender, encoded, source)
        except wire.BadDatagram as exc:
            self._drop("dropped_decode", "datagram from %r: %s", header.sender, exc)

    def _on_message(self, sender: str, encoded: bytes | memoryview, source: Any = None) -> None:
        try:
            cluster_id, message, advert = decode_envelope(encoded)
        except DecodeError as exc:
            self._drop("dropped_decode", "message from %r: %s", sender, exc)
            return
        if not self._identity.accepts(cluster_id):
            self._drop("dropped_cluster", "message from %r of cluster %r", sender, cluster_id)
            return
        if message.frm != sender:
            self._drop("dropped_decode", "message claims to be from %r but %r sent it", message.frm, sender)
            return
        if source is not None:
            self._learned.learn(sender, join_address(source[0], source[1]))
        if message.to == self._node_id:
            self._identity.observe(cluster_id, sender)
        self._versions.heard(sender, advert)
        self._counts["received"] += 1
        try:
            self._deliver(message)
        except Exception as exc:  # noqa: BLE001 - a broken deliver must not stop receiving
            self._drop("deliver_errors", "deliver raised %r", exc)

    async def _expire_loop(self) -> None:
        # Incomplete messages are otherwise expired only when the next fragment arrives;
        # this frees their memory when traffic stops.
        interval = min(1.0, self.options.reassembly_timeout / 2)
        while True:
            await asyncio.sleep(interval)
            self._reassembler.expire(time.monotonic())

    def _tune_socket(self, sock: Any) -> None:
        # asyncio reads each datagram into a fresh 256 KiB buffer (its max_size) and a buffer
        # that large is mmap'ed and page-faulted anew on every read: 8x slower than 64 KiB,
        # which holds any UDP datagram. asyncio-dgram does not expose its transport, hence
        # the private attribute, tolerated if it ever disappears.
        transport = getattr(self._stream, "_transport", None)
        if transport is not None and hasattr(transport, "max_size"):
            transport.max_size = 65536
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, self.options.socket_buffer_bytes)
            except OSError as exc:
                log.info("udp transport: cannot set socket buffer size: %s", exc)

    def _drop(self, counter: str, detail: str, *args: object) -> None:
        self._counts[counter] += 1
        self._drops.drop(counter, detail, *args)


def open_udp(options: dict[str, Any]) -> UdpTransport:
    return UdpTransport(options)


@hookimpl
def keyval_transport_backends() -> list[TransportBackend]:
    return [TransportBackend("udp", open_udp, "Raft messages as UDP datagrams")]
