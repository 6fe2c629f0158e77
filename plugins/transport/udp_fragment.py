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
from typing import Callable, Hashable

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
    sender: Hashable
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
    #: Oldest incomplete messages given up on because their sender, or all senders
    #: together, had as many incomplete messages as allowed.
    sender_limit: int = 0
    message_limit: int = 0


class Reassembler:
    """Collects fragments keyed by message, holding at most ``max_bytes`` for incomplete ones.

    Memory is charged for what was actually received (plus a fixed overhead per message and
    per fragment), never for the total a header claims, so a header announcing a huge
    message costs nothing until its bytes arrive. When a fragment would exceed the bound,
    the oldest incomplete messages are evicted first.

    The number of incomplete messages is bounded too, per sender (``max_per_sender``: one
    sender starting message after message evicts only its own oldest) and in all
    (``max_messages``). ``on_limit(kind, detail)`` is told whenever a limit makes it drop
    something (for a rate-limited log line; the counts are in ``stats``).
    """

    def __init__(self, max_bytes: int, timeout: float, max_message: int, max_messages: int = 4096,
                 max_per_sender: int = 512, on_limit: Callable[[str, str], None] | None = None) -> None:
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.max_message = max_message
        self.max_messages = max_messages
        self.max_per_sender = max_per_sender
        self.held = 0
        self.stats = ReassemblyStats()
        self._on_limit = on_limit or (lambda kind, detail: None)
        # Insertion order is arrival order of the first fragment: the oldest come first.
        self._partials: OrderedDict[Hashable, _Partial] = OrderedDict()
        self._per_sender: dict[Hashable, int] = {}

    def __len__(self) -> int:
        return len(self._partials)

    def add(self, key: Hashable, index: int, count: int, total: int, data: bytes | memoryview,
            now: float, sender: Hashable = None) -> bytes | None:
        """Take one fragment; return the whole message when this fragment completes it.
        ``sender`` (default: ``key``) is whose quota of incomplete messages it counts against."""
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
            partial = _Partial(total, count, now, key if sender is None else sender)
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
            self._limit_messages(partial.sender)
            self._partials[key] = partial
            self._per_sender[partial.sender] = self._per_sender.get(partial.sender, 0) + 1
        partial.fragments[index] = kept
        partial.cost += cost - (MESSAGE_OVERHEAD if is_new else 0)
        self.held += cost
        if len(partial.fragments) < partial.count:
            return None
        self._discard(key)
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

    def _limit_messages(self, sender: Hashable) -> None:
        """Make room for one more incomplete message of ``sender``."""
        if self._per_sender.get(sender, 0) >= self.max_per_sender:
            oldest = next(k for k, p in self._partials.items() if p.sender == sender)
            self._discard(oldest)
            self.stats.sender_limit += 1
            self._on_limit("reassembly_sender_limit", f"{sender!r} has {self.max_per_sender} incomplete "
                           "messages (reassembly_max_per_sender); its oldest was dropped")
        if len(self._partials) >= self.max_messages:
            self._discard(next(iter(self._partials)))
            self.stats.message_limit += 1
            self._on_limit("reassembly_message_limit", f"{self.max_messages} incomplete messages held "
                           "(reassembly_max_messages); the oldest was dropped")

    def _discard(self, key: Hashable) -> None:
        partial = self._partials.pop(key)
        self.held -= partial.cost
        left = self._per_sender[partial.sender] - 1
        if left:
            self._per_sender[partial.sender] = left
        else:
            del self._per_sender[partial.sender]

    def senders(self) -> int:
        """How many senders have incomplete messages held."""
        return len(self._per_sender)
