"""Splitting a message into datagram-sized fragments and putting it back together.

Pure: no sockets, no clock of its own (the caller passes ``now``), so every case —
reordering, loss, duplicates, hostile headers, the memory bound, the timeout — is tested
without a network.

Fragment geometry is fixed by the header alone: a message of ``total`` bytes in ``count``
fragments uses ``chunk = ceil(total / count)`` bytes per fragment (the last one shorter).
The receiver therefore knows the exact offset and length of every fragment, so overlapping
or inconsistent fragments cannot exist: one that does not fit is simply dropped.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Hashable

#: What one incomplete message costs beyond its bytes (dict entries, the record itself);
#: charged so that a flood of tiny fragments of many messages is bounded too.
MESSAGE_OVERHEAD = 256
FRAGMENT_OVERHEAD = 64


def chunk_size(total: int, count: int) -> int:
    return -(-total // count) if count else 0


def split(payload: bytes, max_fragment: int) -> list[memoryview]:
    """Fragments of ``payload``, each at most ``max_fragment`` bytes, balanced in size."""
    if max_fragment < 1:
        raise ValueError("max_fragment must be positive")
    total = len(payload)
    count = max(1, -(-total // max_fragment))
    chunk = chunk_size(total, count)
    view = memoryview(payload)
    return [view[i * chunk:(i + 1) * chunk] for i in range(count)]


def fragment_count(total: int, max_fragment: int) -> int:
    return max(1, -(-total // max_fragment))


def expected_length(total: int, count: int, index: int) -> int | None:
    """The length fragment ``index`` must have, or None if the header is impossible."""
    if count < 1 or not 0 <= index < count or total < 0:
        return None
    if total == 0:
        return 0 if count == 1 else None
    if count > total:
        return None  # some fragment would be empty: a sender never does that
    chunk = chunk_size(total, count)
    if chunk * (count - 1) >= total:
        return None
    return min(chunk, total - index * chunk)


def _keep(data: bytes | memoryview) -> tuple[bytes | memoryview, int]:
    """What to hold of a fragment, and the memory that costs.

    A view into the received datagram saves a copy, but keeps the whole datagram alive: it
    is kept (and charged in full) only when the fragment is most of it, so that a tiny
    fragment cannot pin a large datagram while being charged a few bytes.
    """
    base = data.obj if isinstance(data, memoryview) else None
    if isinstance(base, bytes) and len(data) * 2 >= len(base):
        return data, len(base)
    return bytes(data), len(data)


@dataclass
class _Partial:
    total: int
    count: int
    started: float
    fragments: dict[int, bytes | memoryview] = field(default_factory=dict)
    cost: int = MESSAGE_OVERHEAD


@dataclass
class ReassemblyStats:
    completed: int = 0
    #: Fragments that cannot belong to any message a sender makes, or that disagree with the
    #: first fragment seen of their message.
    bogus: int = 0
    duplicate: int = 0
    too_large: int = 0
    #: Incomplete messages given up on: too old, or the oldest when memory ran out.
    timed_out: int = 0
    evicted: int = 0


class Reassembler:
    """Collects fragments keyed by message, holding at most ``max_bytes`` for incomplete ones.

    Memory is charged for what was actually received (plus a fixed overhead per message and
    per fragment), never for the total a header claims, so a header announcing a huge
    message costs nothing until its bytes arrive. When a fragment would exceed the bound,
    the oldest incomplete messages are evicted first.
    """

    def __init__(self, max_bytes: int, timeout: float, max_message: int) -> None:
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.max_message = max_message
        self.held = 0
        self.stats = ReassemblyStats()
        # Insertion order is arrival order of the first fragment: the oldest come first.
        self._partials: OrderedDict[Hashable, _Partial] = OrderedDict()

    def __len__(self) -> int:
        return len(self._partials)

    def add(self, key: Hashable, index: int, count: int, total: int, data: bytes | memoryview,
            now: float) -> bytes | None:
        """Take one fragment; return the whole message when this fragment completes it."""
        self.expire(now)
        want = expected_length(total, count, index)
        if want is None or len(data) != want:
            self.stats.bogus += 1
            return None
        if total > self.max_message or self._full_cost(total, count) > self.max_bytes:
            self.stats.too_large += 1
            return None
        if count == 1:
            self.stats.completed += 1
            return bytes(data)
        partial = self._partials.get(key)
        if partial is None:
            partial = _Partial(total, count, now)
        elif partial.total != total or partial.count != count:
            self.stats.bogus += 1
            return None
        if index in partial.fragments:
            self.stats.duplicate += 1
            return None
        is_new = key not in self._partials
        kept, size = _keep(data)
        cost = size + FRAGMENT_OVERHEAD + (MESSAGE_OVERHEAD if is_new else 0)
        if not self._make_room(cost, keep=key):
            if not is_new:
                self._discard(key)
            self.stats.evicted += 1
            return None
        if is_new:
            self._partials[key] = partial
        partial.fragments[index] = kept
        partial.cost += cost - (MESSAGE_OVERHEAD if is_new else 0)
        self.held += cost
        if len(partial.fragments) < partial.count:
            return None
        del self._partials[key]
        self.held -= partial.cost
        self.stats.completed += 1
        return b"".join(partial.fragments[i] for i in range(partial.count))

    def expire(self, now: float) -> int:
        """Drop incomplete messages whose first fragment is older than the timeout."""
        dropped = 0
        while self._partials:
            key, partial = next(iter(self._partials.items()))
            if now - partial.started < self.timeout:
                break
            self._discard(key)
            self.stats.timed_out += 1
            dropped += 1
        return dropped

    @staticmethod
    def _full_cost(total: int, count: int) -> int:
        return total + MESSAGE_OVERHEAD + (FRAGMENT_OVERHEAD * count if count > 1 else 0)

    def _make_room(self, cost: int, keep: Hashable) -> bool:
        """Evict the oldest other messages until ``cost`` more bytes fit; False if they can't."""
        if self.held + cost <= self.max_bytes:
            return True
        for key in list(self._partials):
            if key == keep:
                continue
            self._discard(key)
            self.stats.evicted += 1
            if self.held + cost <= self.max_bytes:
                return True
        return False

    def _discard(self, key: Hashable) -> None:
        partial = self._partials.pop(key)
        self.held -= partial.cost
