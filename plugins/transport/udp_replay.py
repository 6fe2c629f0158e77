"""Replay protection for authenticated datagrams: a sliding window per (sender, epoch).

Every datagram a transport sends carries its random per-process ``epoch`` and a sequence
number that only grows. The receiver remembers, per (sender, epoch), the highest sequence
number seen and a bitmap of the ``width`` numbers below it (the IPsec anti-replay scheme,
RFC 4303 §3.4.3): a number seen before, or older than the window, is a replay. Reordering
within the window is fine.

Pure: no sockets, no clock. Only the receive path of an authenticated datagram consults it,
and only after the MAC checked out, so a forger cannot move a window; without a cluster
secret the udp transport keeps no window (anyone could move it arbitrarily far ahead).

Limits, on purpose: windows are kept for a bounded number of (sender, epoch) pairs (least
recently used forgotten first) and they are not persisted, so a datagram of an epoch the
receiver has forgotten (or from before the receiver restarted) is accepted once more. Raft
itself tolerates such stale messages (terms and indexes reject them); this guard keeps an
on-path attacker from replaying live traffic cheaply, it is not Raft's safety.
"""
from __future__ import annotations

from collections import OrderedDict


class ReplayWindow:
    """Sliding anti-replay window over sequence numbers of one sender incarnation."""

    __slots__ = ("width", "highest", "_seen")

    def __init__(self, width: int = 1024) -> None:
        if width < 1:
            raise ValueError("width must be positive")
        self.width = width
        self.highest = -1
        # Bit i set: sequence number (highest - i) was seen.
        self._seen = 0

    def check(self, seq: int) -> bool:
        """True if ``seq`` is new (not a replay, not too old). Does not record it."""
        if seq > self.highest:
            return True
        behind = self.highest - seq
        return behind < self.width and not (self._seen >> behind) & 1

    def accept(self, seq: int) -> bool:
        """Record ``seq``; False (and nothing recorded) if it is a replay or too old."""
        if seq > self.highest:
            shift = seq - self.highest
            mask = (1 << self.width) - 1
            self._seen = ((self._seen << shift) | 1) & mask if shift < self.width else 1
            self.highest = seq
            return True
        behind = self.highest - seq
        if behind >= self.width or (self._seen >> behind) & 1:
            return False
        self._seen |= 1 << behind
        return True


class ReplayGuard:
    """The windows of all senders heard from, at most ``max_windows`` of them."""

    def __init__(self, width: int = 1024, max_windows: int = 4096) -> None:
        self.width = width
        self.max_windows = max_windows
        self._windows: OrderedDict[tuple[str, int], ReplayWindow] = OrderedDict()

    def __len__(self) -> int:
        return len(self._windows)

    def accept(self, sender: str, epoch: int, seq: int) -> bool:
        key = (sender, epoch)
        window = self._windows.get(key)
        if window is None:
            window = ReplayWindow(self.width)
            self._windows[key] = window
            if len(self._windows) > self.max_windows:
                self._windows.popitem(last=False)
        else:
            self._windows.move_to_end(key)
        return window.accept(seq)
