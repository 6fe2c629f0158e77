"""Fault rules of the ``faulty`` transport: parsing and deciding the fate of one message.

Pure: the randomness comes from a ``random.Random`` the caller seeds, no clock, no I/O.
The rule format is documented in ``plugins/transport/faulty.py``.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Iterable

DIRECTIONS = ("send", "receive", "both")


class RuleError(ValueError):
    """A rules document that does not follow the format; the message names the place."""


@dataclass(frozen=True)
class Partition:
    """Messages from ``a`` to ``b`` are lost (and from ``b`` to ``a`` unless one-way)."""

    a: str
    b: str
    one_way: bool = False

    def cuts(self, frm: str, to: str) -> bool:
        if (frm, to) == (self.a, self.b):
            return True
        return not self.one_way and (frm, to) == (self.b, self.a)


@dataclass(frozen=True)
class Rule:
    drop: float = 0.0
    duplicate: float = 0.0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    #: Which side applies it: ``send``, ``receive`` or ``both``.
    on: str = "send"
    #: Limit the rule to messages from / to these node ids (None = any).
    frm: frozenset[str] | None = None
    to: frozenset[str] | None = None
    #: Limit the rule to these message type names (``AppendEntries``...; None = any).
    types: frozenset[str] | None = None

    def matches(self, side: str, frm: str, to: str, kind: str) -> bool:
        return (
            self.on in (side, "both")
            and (self.frm is None or frm in self.frm)
            and (self.to is None or to in self.to)
            and (self.types is None or kind in self.types)
        )


@dataclass(frozen=True)
class Rules:
    rules: tuple[Rule, ...] = ()
    partitions: tuple[Partition, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.rules or self.partitions)


@dataclass(frozen=True)
class Fate:
    """What happens to one message: lost, or delivered ``copies`` times after these delays."""

    dropped: bool = False
    partitioned: bool = False
    delays: tuple[float, ...] = (0.0,)


DELIVER = Fate()


def decide(rules: Rules, side: str, frm: str, to: str, kind: str, rng: random.Random) -> Fate:
    """The fate of one message. Partitions apply on both sides; every matching rule applies
    in turn (drop, then duplicate, then delay), so rules compose."""
    if not rules:
        return DELIVER
    for p in rules.partitions:
        if p.cuts(frm, to):
            return Fate(dropped=True, partitioned=True)
    copies = 1
    delay = 0.0
    jitters: list[float] = []
    for rule in rules.rules:
        if not rule.matches(side, frm, to, kind):
            continue
        if rule.drop and rng.random() < rule.drop:
            return Fate(dropped=True)
        if rule.duplicate and rng.random() < rule.duplicate:
            copies += 1
        delay += rule.delay_ms
        if rule.jitter_ms:
            jitters.append(rule.jitter_ms)
    if not delay and not jitters and copies == 1:
        return DELIVER
    # Each copy draws its own jitter, so duplicates and neighbours arrive reordered.
    delays = tuple(
        max(0.0, delay + sum(rng.uniform(0, j) for j in jitters)) / 1000.0 for _ in range(copies)
    )
    return Fate(delays=delays)


def parse_rules(doc: Any) -> Rules:
    """``Rules`` from a decoded JSON document; raises RuleError naming what is wrong."""
    if doc is None:
        return Rules()
    if not isinstance(doc, dict):
        raise RuleError("the rules document must be a JSON object")
    unknown = set(doc) - {"rules", "partitions"}
    if unknown:
        raise RuleError(f"unknown key(s) {sorted(unknown)}; expected 'rules' and 'partitions'")
    rules = tuple(_rule(r, f"rules[{i}]") for i, r in enumerate(_list(doc, "rules")))
    parts = tuple(_partition(p, f"partitions[{i}]") for i, p in enumerate(_list(doc, "partitions")))
    return Rules(rules, parts)


def _list(doc: dict, key: str) -> list:
    value = doc.get(key, [])
    if not isinstance(value, list):
        raise RuleError(f"{key} must be a list")
    return value


def _rule(raw: Any, where: str) -> Rule:
    if not isinstance(raw, dict):
        raise RuleError(f"{where} must be an object")
    fields = {"drop", "duplicate", "delay_ms", "jitter_ms", "on", "from", "to", "types"}
    unknown = set(raw) - fields
    if unknown:
        raise RuleError(f"{where}: unknown key(s) {sorted(unknown)}")
    on = raw.get("on", "send")
    if on not in DIRECTIONS:
        raise RuleError(f"{where}.on must be one of {DIRECTIONS}, not {on!r}")
    return Rule(
        drop=_probability(raw, "drop", where),
        duplicate=_probability(raw, "duplicate", where),
        delay_ms=_non_negative(raw, "delay_ms", where),
        jitter_ms=_non_negative(raw, "jitter_ms", where),
        on=on,
        frm=_ids(raw.get("from"), f"{where}.from"),
        to=_ids(raw.get("to"), f"{where}.to"),
        types=_ids(raw.get("types"), f"{where}.types"),
    )


def _partition(raw: Any, where: str) -> Partition:
    if isinstance(raw, list) and len(raw) == 2 and all(isinstance(x, str) for x in raw):
        return Partition(raw[0], raw[1])
    if isinstance(raw, dict) and set(raw) <= {"from", "to", "one_way"}:
        a, b = raw.get("from"), raw.get("to")
        if isinstance(a, str) and isinstance(b, str) and isinstance(raw.get("one_way", False), bool):
            return Partition(a, b, raw.get("one_way", False))
    raise RuleError(f'{where} must be ["a", "b"] or {{"from": "a", "to": "b", "one_way": true}}')


def _probability(raw: dict, key: str, where: str) -> float:
    value = raw.get(key, 0.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise RuleError(f"{where}.{key} must be a probability between 0 and 1, not {value!r}")
    return float(value)


def _non_negative(raw: dict, key: str, where: str) -> float:
    value = raw.get(key, 0.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise RuleError(f"{where}.{key} must be a number >= 0, not {value!r}")
    return float(value)


def _ids(value: Any, where: str) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return frozenset([value])
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return frozenset(value)
    raise RuleError(f"{where} must be a node id or a list of them")


def partitions_between(groups: Iterable[Iterable[str]]) -> list[list[str]]:
    """The pairs that split nodes into ``groups`` (a helper for writing a rules document)."""
    groups = [list(g) for g in groups]
    return [[a, b] for i, g in enumerate(groups) for h in groups[i + 1:] for a in g for b in h]
