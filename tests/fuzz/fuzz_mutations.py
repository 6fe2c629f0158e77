"""Damage a valid file the ways a bad disk or a stranger would, as hypothesis strategies.

``damaged(base)`` applies one to three edits to ``base``: flip bits, cut, insert, delete,
zero a range, splice in a piece of the file itself (a block repeated or moved), write a
boundary number (0, 2**32 - 1, 2**64 - 1, ...) over a field, or insert deep nesting. Edits
land anywhere, and more often on ``hot`` offsets (the format's length and count fields).
"""
from __future__ import annotations

import os
import resource
import signal
from contextlib import contextmanager
from typing import Sequence

from hypothesis import currently_in_test_context, event
from hypothesis import strategies as st

from keyval.errors import KeyvalError, StorageError

#: What a reader may raise: KeyVal's own errors (StorageError is the core's base of the
#: storage ones, see keyval/errors.py).
PROJECT_ERRORS = (KeyvalError, StorageError)

BOUNDARY_NUMBERS = (0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
                    2**62, 2**63 - 1, 2**63, 2**64 - 1)
EDITS = ("flip", "cut", "insert", "delete", "zeros", "splice", "number", "nest")


def damaged(base: bytes, hot: Sequence[int] = (), nest: Sequence[bytes] = (b"[",)) -> st.SearchStrategy[bytes]:
    return _damaged(bytes(base), tuple(hot), tuple(nest))


@st.composite
def _damaged(draw, base: bytes, hot: tuple[int, ...], nest: tuple[bytes, ...]) -> bytes:
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 3))):
        edit = draw(st.sampled_from(EDITS))
        anywhere = st.integers(0, len(data))
        pos = draw(st.one_of(st.sampled_from(hot), anywhere) if hot else anywhere)
        pos = min(pos, len(data))
        if edit == "flip" and pos < len(data):
            data[pos] ^= draw(st.integers(1, 255))
        elif edit == "cut":
            del data[pos:]
        elif edit == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif edit == "delete":
            del data[pos : pos + draw(st.integers(1, 256))]
        elif edit == "zeros":
            end = min(len(data), pos + draw(st.integers(1, 256)))
            data[pos:end] = bytes(end - pos)
        elif edit == "splice":
            start = draw(st.integers(0, len(base)))
            piece = base[start : start + draw(st.integers(1, 512))]
            if draw(st.booleans()):
                data[pos:pos] = piece
            else:
                data[pos : pos + len(piece)] = piece
        elif edit == "number":
            width = draw(st.sampled_from((1, 2, 4, 8)))
            value = draw(st.one_of(st.sampled_from(BOUNDARY_NUMBERS), st.integers(0, 2**64 - 1)))
            order = draw(st.sampled_from(("little", "big")))
            data[pos : pos + width] = (value % (1 << 8 * width)).to_bytes(width, order)
        elif edit == "nest":
            data[pos:pos] = draw(st.sampled_from(nest)) * draw(st.integers(1, 20_000))
    return bytes(data)


def strange_bytes(magic: bytes = b"") -> st.SearchStrategy[bytes]:
    """Plain random bytes, and random bytes behind the format's magic."""
    return st.one_of(st.binary(max_size=4096), st.binary(max_size=4096).map(lambda rest: magic + rest))


def note(outcome: str) -> None:
    """Count an outcome in hypothesis' statistics (``--hypothesis-show-statistics``)."""
    if currently_in_test_context():
        event(outcome)


class Hang(AssertionError):
    pass


#: what a reader call may map beyond what the process had when it started
ADDRESS_SPACE_MARGIN = 1 << 30


@contextmanager
def within(seconds: float):
    """Fail with Hang if the block takes longer than ``seconds`` (a reader looping forever),
    and with MemoryError if it maps more than ADDRESS_SPACE_MARGIN (a reader believing a
    huge length field), rather than take the machine's memory."""

    def expired(*_):
        raise Hang(f"the reader took more than {seconds}s")

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _mapped_bytes() + ADDRESS_SPACE_MARGIN
    previous = signal.signal(signal.SIGALRM, expired)
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _mapped_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
