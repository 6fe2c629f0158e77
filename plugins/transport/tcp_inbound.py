"""One inbound connection of the ``tcp`` transport, from accept to close.

Anyone may connect, so until a connection's hello has authenticated (``tcp_hello``) it is
held to what a hello needs: one frame of ``PREAUTH_FRAME_BYTES`` at most, within
``handshake_timeout``, and bytes from the half of the node's ``inbound_buffer_bytes`` that
strangers may use. After it, a frame that fails its tag means the stream was tampered
with (a frame replayed, cut or moved) and closes the connection; one that fails to decode
is counted and tolerated up to ``max_bad_frames`` in a row, as before.

Frames are parsed and delivered as bytes arrive (no reader task: a message reaches the
node in the loop turn its bytes came in).
"""
from __future__ import annotations

import asyncio
import secrets
from typing import TYPE_CHECKING

from keyval.peer.auth import AuthError
from keyval.peer.codec import DecodeError, decode_envelope

from .tcp_hello import (NONCE_BYTES, PREAUTH_FRAME_BYTES, Hello, HelloError, as_seen, decode_hello,
                        encode_challenge, peek_hello)
from .tcp_identity import PeerCertificate, peer_certificate
from .tcp_session import LENGTH_BYTES, FrameOpener, framed, session_key

if TYPE_CHECKING:
    from .tcp_transport import TcpTransport


class BufferBudget:
    """Bytes of partial frames held by all inbound connections of a node, against its limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self.held_preauth = 0  # the part held by connections not yet authenticated


class Inbound(asyncio.Protocol):
    def __init__(self, owner: "TcpTransport") -> None:
        self._owner = owner
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._bad = 0
        self._peer = "an unknown peer"
        self._source_host = ""
        self._nonce = b""
        self._cert: PeerCertificate | None = None
        self._timer: asyncio.TimerHandle | None = None
        #: set once the connection's hello authenticated; frames are messages from then on
        self._hello: Hello | None = None
        self._opener: FrameOpener | None = None
        self._held = 0  # bytes of this connection counted in the node's BufferBudget
        self._held_preauth = False

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        owner = self._owner
        if not owner._inbound_opened(self, transport):
            return
        self._transport = transport
        self._peer = peername(transport)
        self._source_host = _peerhost(transport)
        self._cert = peer_certificate(transport.get_extra_info("ssl_object"))
        refusal = self._cert.refused_by(owner.refused) if self._cert else None
        if refusal is not None:
            owner._stats.report("connections_refused_tls", f"{self._peer}: certificate refused by tls_refused "
                                f"entry {refusal}")
            return self.abort()
        self._nonce = secrets.token_bytes(NONCE_BYTES)
        transport.write(framed(encode_challenge(self._nonce)))
        self._timer = asyncio.get_running_loop().call_later(owner._opts.handshake_timeout, self._handshake_expired)

    def data_received(self, data: bytes) -> None:
        if self._transport is None:
            return
        buffer = self._buffer
        buffer += data
        offset = 0
        while len(buffer) - offset >= LENGTH_BYTES:
            size = int.from_bytes(buffer[offset:offset + LENGTH_BYTES], "big")
            if size > self._frame_limit():
                return self._oversized(size)
            end = offset + LENGTH_BYTES + size
            if len(buffer) < end:
                break
            frame = bytes(buffer[offset + LENGTH_BYTES:end])
            offset = end
            keep = self._on_frame(frame) if self._hello is not None else self._on_hello(frame)
            if not keep:
                return self._hang_up()
            if self._transport is None:  # closed meanwhile
                return
        del buffer[:offset]
        if not self._hold(len(buffer)):
            budget = self._owner._budget
            who = "unauthenticated " if self._hello is None else ""
            self._owner._stats.report("buffer_limit_closed", f"closing the {who}connection from {self._peer}: "
                                      f"{len(buffer)} bytes of a partial frame, {budget.held} held in all "
                                      f"(inbound_buffer_bytes {budget.limit})")
            self._hang_up()

    def eof_received(self) -> bool:
        self._truncated()
        return False

    def connection_lost(self, exc) -> None:
        # A peer that closes without reading our challenge resets the connection: no EOF.
        self._truncated()
        self._owner._inbound.discard(self)
        self._transport = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _truncated(self) -> None:
        if self._buffer:
            self._owner._stats.report("dropped_truncated", f"connection from {self._peer} closed inside a frame")
            self._buffer.clear()
        self._hold(0)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()
            self._transport = None

    # -- frames ------------------------------------------------------------------------------
    def _frame_limit(self) -> int:
        return self._owner._opts.max_frame_bytes if self._hello is not None else PREAUTH_FRAME_BYTES

    def _oversized(self, size: int) -> None:
        stats = self._owner._stats
        if self._hello is None:
            stats.report("preauth_oversized", f"{self._peer} announced a {size}-byte frame before authenticating "
                         f"(at most {PREAUTH_FRAME_BYTES}); closing the connection")
        else:
            stats.report("dropped_oversized", f"{self._peer} announced a {size}-byte frame (max_frame_bytes "
                         f"{self._owner._opts.max_frame_bytes}); closing the connection")
        stats.add("connections_closed_bad")
        self._hang_up()

    def _on_hello(self, frame: bytes) -> bool:
        """Authenticate the connection by its first frame; False: close it."""
        owner = self._owner
        stats, auth = owner._stats, owner._auth
        try:
            sealed, nonce = peek_hello(frame)
        except HelloError as exc:
            # With a secret, a first frame that is no hello (a forged message) failed authentication.
            return self._refuse("dropped_auth" if auth is not None else "dropped_decode", f"from {self._peer}: {exc}")
        if sealed != (auth is not None):
            why = "sealed, but this node has no cluster secret" if sealed else "not sealed (a cluster secret is required)"
            return self._refuse("dropped_auth", f"hello from {self._peer} {why}")
        payload: bytes | memoryview = frame
        if auth is not None:
            self._opener = FrameOpener(session_key(auth, self._nonce, nonce))
            try:
                payload = self._opener.open(frame)
            except AuthError as exc:
                return self._refuse("dropped_auth", f"hello from {self._peer}: {exc}")
        try:
            hello = decode_hello(payload)
        except HelloError as exc:
            return self._refuse("dropped_decode", f"hello from {self._peer}: {exc}")
        if self._cert is not None and hello.node_id not in self._cert.names:
            return self._refuse("dropped_identity", f"hello from {self._peer} claims node {hello.node_id!r}, "
                                f"its certificate names {sorted(self._cert.names)}")
        self._hello = hello
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        stats.add("hellos_received")
        # Another cluster's node is no one to answer: its messages are dropped (and counted)
        # anyway, so its hello is simply not remembered.
        if owner._identity.accepts(hello.cluster_id):
            owner._learned.learn(hello.node_id, as_seen(hello.address, self._source_host))
        return True

    def _on_frame(self, frame: bytes) -> bool:
        """Deliver one message frame if it is good; False: close the connection."""
        owner, hello = self._owner, self._hello
        assert hello is not None
        stats = owner._stats
        payload: bytes | memoryview = frame
        if self._opener is not None:
            try:
                payload = self._opener.open(frame)
            except AuthError as exc:
                kind = "dropped_replay" if self._opener.replayed(frame) else "dropped_auth"
                return self._refuse(kind, f"from {self._peer} (node {hello.node_id!r}): {exc}")
        try:
            cluster_id, message, advert = decode_envelope(payload)
        except DecodeError as exc:
            stats.report("dropped_decode", f"from {self._peer}: {exc}")
            self._bad += 1
            if self._bad >= owner._opts.max_bad_frames:
                stats.report("connections_closed_bad", f"closing the connection from {self._peer} "
                             f"after {self._bad} bad frames in a row")
                return False
            return True
        self._bad = 0
        if message.frm != hello.node_id:
            return self._refuse("dropped_identity", f"{type(message).__name__} from {message.frm!r} on the "
                                f"connection of node {hello.node_id!r} ({self._peer})")
        owner._accept(cluster_id, message, self._peer, advert)
        return True

    # -- limits ------------------------------------------------------------------------------
    def _hold(self, held: int) -> bool:
        """Count ``held`` bytes of a partial frame for this connection (instead of what it held
        before); False, and nothing counted, if the node's budget has no room for them."""
        budget = self._owner._budget
        budget.held -= self._held
        if self._held_preauth:
            budget.held_preauth -= self._held
        self._held, self._held_preauth = 0, False
        if held == 0:
            return True
        preauth = self._hello is None
        if budget.held + held > budget.limit or (preauth and budget.held_preauth + held > budget.limit // 2):
            return False
        budget.held += held
        if preauth:
            budget.held_preauth += held
        self._held, self._held_preauth = held, preauth
        return True

    def _refuse(self, kind: str, detail: str) -> bool:
        """Count a frame of ``kind`` that ends the connection; False, for the caller to return."""
        stats = self._owner._stats
        stats.report(kind, f"{detail}; closing the connection")
        stats.add("connections_closed_bad")
        return False

    def _handshake_expired(self) -> None:
        self._timer = None
        if self._transport is not None and self._hello is None:
            self._owner._stats.report("handshake_timeouts", f"{self._peer} sent no authenticated hello within "
                                      f"{self._owner._opts.handshake_timeout:g} s; closing the connection")
            self._hang_up()

    def _hang_up(self) -> None:
        self._buffer.clear()
        self._hold(0)
        if self._transport is not None:
            self._transport.close()
            self._transport = None


def _peerhost(transport: asyncio.BaseTransport) -> str:
    name = transport.get_extra_info("peername")
    return str(name[0]) if isinstance(name, tuple) and name else ""


def peername(transport: asyncio.BaseTransport) -> str:
    name = transport.get_extra_info("peername")
    if isinstance(name, tuple) and len(name) >= 2:
        return f"{name[0]}:{name[1]}"
    return "an unknown peer"
