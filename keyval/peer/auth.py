"""Peer authentication: an HMAC-SHA256 tag over every message, keyed by the cluster secret.

The secret lives in a file only its owner can read (mode 0600 or stricter); a node refuses
to start with a secret anyone else could read, since that secret is all it takes to speak
for the cluster.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import stat

from keyval.errors import ConfigError


class AuthError(Exception):
    """A message failed authentication (too short or a tag that does not match)."""


def read_owner_only(path: str, what: str) -> bytes:
    """The bytes of ``path``, a regular file only its owner may access (else ConfigError,
    whose message starts with ``what``): it holds what it takes to speak for the cluster."""
    try:
        with open(path, "rb") as f:
            info = os.fstat(f.fileno())
            data = f.read()
    except OSError as exc:
        raise ConfigError(f"{what} {path!r} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{what} {path!r} is not a regular file")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o177:
        raise ConfigError(f"{what} {path!r} has mode {mode:04o}; it must be 0600 or stricter (chmod 600 {path})")
    return data


def load_secret(path: str) -> bytes:
    """The cluster secret in ``path``; refuses a file group/others could access, or an empty one.

    One trailing newline (as ``echo secret > file`` leaves) is not part of the secret.
    """
    data = read_owner_only(path, "cluster secret")
    if data.endswith(b"\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n"):
        data = data[:-1]
    if not data:
        raise ConfigError(f"cluster secret {path!r} is empty")
    return data


class Authenticator:
    """Seals payloads with an HMAC-SHA256 tag appended, and opens (verifies) sealed ones."""

    TAG_SIZE = 32

    def __init__(self, secret: bytes) -> None:
        if not secret:
            raise ValueError("an empty secret authenticates nothing")
        self._key = bytes(secret)

    def derive_key(self, context: bytes) -> bytes:
        """A key for one purpose (one connection, say): ``HMAC-SHA256(secret, context)``."""
        return hmac.digest(self._key, context, hashlib.sha256)

    def seal(self, payload: bytes) -> bytes:
        return payload + hmac.digest(self._key, payload, hashlib.sha256)

    def open(self, data: bytes | memoryview) -> bytes:
        """The payload of ``data`` if its tag is right; raises ``AuthError`` otherwise."""
        view = memoryview(data)
        if len(view) < self.TAG_SIZE:
            raise AuthError(f"message of {len(view)} bytes is shorter than its tag")
        payload = view[: -self.TAG_SIZE]
        expected = hmac.digest(self._key, payload, hashlib.sha256)
        # compare_digest: the time taken must not tell a forger how much of the tag is right.
        if not hmac.compare_digest(expected, view[-self.TAG_SIZE :]):
            raise AuthError("HMAC tag does not match")
        return bytes(payload)
