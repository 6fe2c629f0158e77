"""One tcp connection's frames: length-prefixed, and with a key, tagged with an implicit counter.

Frame ``i`` of a connection (the hello is 0) carries ``HMAC-SHA256(key, i + payload)`` with
``i`` as 8 bytes big-endian; the key is made for this connection alone from both sides'
nonces (``session_key``, wire format in ``tcp_hello``). One HMAC per frame, as before the
handshake existed: the counter costs an 8-byte prefix, not a second digest.
"""
from __future__ import annotations

import hashlib
import hmac

from keyval.peer.auth import AuthError, Authenticator

LENGTH_BYTES = 4
TAG_BYTES = Authenticator.TAG_SIZE
#: How many frames back a failing tag is compared with, to tell a replay from a forgery.
REPLAY_LOOKBACK = 64
_CONTEXT = b"keyval tcp 2"


def session_key(auth: Authenticator, acceptor_nonce: bytes, dialler_nonce: bytes) -> bytes:
    return auth.derive_key(_CONTEXT + acceptor_nonce + dialler_nonce)


def framed(payload: bytes) -> bytes:
    return len(payload).to_bytes(LENGTH_BYTES, "big") + payload


def _tag(key: bytes, counter: int, payload: bytes | memoryview) -> bytes:
    return hmac.digest(key, counter.to_bytes(8, "big") + payload, hashlib.sha256)


class FrameSealer:
    """The sending end: frames payloads in the order they are written (``key`` None: no tags)."""

    __slots__ = ("_key", "_counter")

    def __init__(self, key: bytes | None) -> None:
        self._key = key
        self._counter = 0

    def frame(self, payload: bytes) -> bytes:
        key = self._key
        if key is None:
            return framed(payload)
        tag = _tag(key, self._counter, payload)
        self._counter += 1
        return b"".join(((len(payload) + TAG_BYTES).to_bytes(LENGTH_BYTES, "big"), payload, tag))


class FrameOpener:
    """The receiving end: checks each frame's tag against the next counter."""

    __slots__ = ("_key", "_counter")

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._counter = 0

    def open(self, frame: bytes) -> memoryview:
        """The payload of ``frame`` if it is the connection's next frame; raises AuthError
        otherwise (and the counter stays: the stream is out of step from here on)."""
        view = memoryview(frame)
        if len(view) < TAG_BYTES:
            raise AuthError(f"frame of {len(view)} bytes is shorter than its tag")
        payload = view[:-TAG_BYTES]
        # compare_digest: the time taken must not tell a forger how much of the tag is right.
        if not hmac.compare_digest(_tag(self._key, self._counter, payload), view[-TAG_BYTES:]):
            raise AuthError(f"frame {self._counter}: HMAC tag does not match")
        self._counter += 1
        return payload

    def replayed(self, frame: bytes) -> bool:
        """Whether ``frame`` (which failed ``open``) is one of the last frames of this
        connection again. Only called on the way to closing the connection."""
        view = memoryview(frame)
        if len(view) < TAG_BYTES:
            return False
        payload, tag = view[:-TAG_BYTES], view[-TAG_BYTES:]
        return any(hmac.compare_digest(_tag(self._key, i, payload), tag)
                   for i in range(max(0, self._counter - REPLAY_LOOKBACK), self._counter))
