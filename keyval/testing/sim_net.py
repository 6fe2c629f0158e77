"""The simulated network: latency, loss, duplication, reordering and partitions.

The network only decides *when* (and whether, and how many times) a message arrives; the
simulator schedules the deliveries and checks partitions and liveness of the receiver at
delivery time, so a partition that starts while a message is in flight also cuts it.
"""
from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass
class NetFaults:
    drop: float = 0.0  # probability a message is lost
    duplicate: float = 0.0  # probability a message is delivered twice
    delay: float = 0.0  # probability of a latency spike (head-of-line blocking without reorder)
    reorder: bool = False  # per-link FIFO off, plus jitter: messages overtake each other


#: Base one-way latency, in ms (the tick is 10 ms).
BASE_LATENCY = (1, 3)
REORDER_JITTER = (0, 12)
DELAY_SPIKE = (10, 90)


class Network:
    def __init__(self, rng: random.Random, faults: NetFaults) -> None:
        self.rng = rng
        self.faults = faults
        #: directed links (frm, to) that are currently cut
        self.cut: set[tuple[str, str]] = set()
        #: per link, the latest delivery time handed out (FIFO when reorder is off)
        self._link_tail: dict[tuple[str, str], int] = {}

    def send(self, frm: str, to: str, now: int) -> list[int]:
        """Delivery times for one message: [] if lost, two if duplicated."""
        f = self.faults
        if f.drop and self.rng.random() < f.drop:
            return []
        times = [self._arrival(frm, to, now)]
        if f.duplicate and self.rng.random() < f.duplicate:
            times.append(self._arrival(frm, to, now))
        return times

    def _arrival(self, frm: str, to: str, now: int) -> int:
        f = self.faults
        latency = self.rng.randint(*BASE_LATENCY)
        if f.reorder:
            latency += self.rng.randint(*REORDER_JITTER)
        if f.delay and self.rng.random() < f.delay:
            latency += self.rng.randint(*DELAY_SPIKE)
        at = now + latency
        if not f.reorder:
            # A stream transport: nothing overtakes an earlier message on the same link.
            link = (frm, to)
            at = max(at, self._link_tail.get(link, 0))
            self._link_tail[link] = at
        return at

    def is_cut(self, frm: str, to: str) -> bool:
        return (frm, to) in self.cut

    def heal(self) -> None:
        self.cut.clear()

    def calm(self) -> None:
        """No more loss, duplication, spikes or reordering (the end-of-run settle phase)."""
        self.faults = NetFaults()
        self._link_tail.clear()


def partition_links(
    rng: random.Random, nodes: list[str], leader: str | None = None
) -> tuple[str, set[tuple[str, str]]]:
    """A random partition among ``nodes`` (sorted): (description, directed links to cut).

    A one-node partition picks the current ``leader`` half the time, and "leader-minority"
    (Jepsen's favourite) leaves the leader on the minority side: it is deposed, but until it
    learns so it may still accept writes and answer reads."""
    kind = rng.choice(("isolate", "split", "one-way", "one-way-split", "bridge", "leader-minority"))
    if len(nodes) < 2:
        return "none", set()
    if kind == "leader-minority" and leader in nodes and len(nodes) >= 3:
        others = [n for n in nodes if n != leader]
        rng.shuffle(others)
        size = rng.randint(0, (len(nodes) - 1) // 2 - 1) if len(nodes) >= 5 else 0
        a, b = sorted([leader, *others[:size]]), sorted(others[size:])
        links = {(x, y) for x in a for y in b} | {(y, x) for x in a for y in b}
        return f"leader in a minority {a} | {b}", links
    if kind == "leader-minority":
        kind = "split"
    if kind in ("isolate", "one-way"):
        victim = rng.choice(nodes)
        if leader in nodes and rng.random() < 0.5:
            victim = leader
        others = [n for n in nodes if n != victim]
        if kind == "isolate":
            links = {(victim, o) for o in others} | {(o, victim) for o in others}
            return f"isolate {victim}", links
        if rng.random() < 0.5:
            return f"one-way: {victim} cannot send", {(victim, o) for o in others}
        return f"one-way: {victim} cannot receive", {(o, victim) for o in others}
    shuffled = list(nodes)
    rng.shuffle(shuffled)
    if kind == "bridge" and len(nodes) >= 3:
        bridge, rest = shuffled[0], shuffled[1:]
        cut = rng.randint(1, len(rest) - 1)
        a, b = sorted(rest[:cut]), sorted(rest[cut:])
        links = {(x, y) for x in a for y in b} | {(y, x) for x in a for y in b}
        return f"bridge {bridge} between {a} and {b}", links
    cut = rng.randint(1, len(shuffled) - 1)
    a, b = sorted(shuffled[:cut]), sorted(shuffled[cut:])
    if kind == "one-way-split":
        return f"one-way split {a} -/-> {b}", {(x, y) for x in a for y in b}
    return f"split {a} | {b}", {(x, y) for x in a for y in b} | {(y, x) for x in a for y in b}
