"""The options of the ``segment`` backend (``storage_options`` in a node's config), validated."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from keyval.errors import ConfigError

MiB = 1 << 20
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": MiB, "mb": MiB, "mib": MiB,
          "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30}
_SIZE = re.compile(r"^\s*(\d+)\s*([a-zA-Z]*)\s*$")


@dataclass(frozen=True)
class SegmentOptions:
    #: a segment file is closed and a new one started once it reaches this many bytes
    segment_size: int = 64 * MiB
    #: how many snapshots to keep on disk (the newest ones)
    snapshots_keep: int = 2
    #: zstd level for snapshot files
    snapshot_level: int = 3
    #: bytes of recent entries kept in memory for replication reads (0 turns the cache off)
    cache_bytes: int = 16 * MiB


#: option name -> (parser, smallest value allowed, largest or None)
_RULES = {
    "segment_size": ("size", 64, None),
    "snapshots_keep": ("int", 1, None),
    "snapshot_level": ("int", 1, 22),
    "cache_bytes": ("size", 0, None),
}


def parse_options(options: dict[str, Any] | None) -> SegmentOptions:
    """``SegmentOptions`` from a config dict; a bad one raises ConfigError in one line."""
    options = dict(options or {})
    unknown = sorted(set(map(str, options)) - set(_RULES))
    if unknown:
        raise ConfigError(
            f"segment storage: unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
            f"known: {', '.join(sorted(_RULES))}"
        )
    values = {}
    for name, raw in options.items():
        kind, low, high = _RULES[name]
        value = _parse(name, kind, raw)
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise ConfigError(f"segment storage: option {name} must be {bound}, not {raw!r}")
        values[name] = value
    return SegmentOptions(**values)


def _parse(name: str, kind: str, raw: Any) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        match = _SIZE.match(raw)
        if match and (kind == "size" or not match.group(2)) and match.group(2).lower() in _UNITS:
            return int(match.group(1)) * _UNITS[match.group(2).lower()]
    example = "a byte count such as 67108864 or '64MiB'" if kind == "size" else "a whole number"
    raise ConfigError(f"segment storage: option {name} must be {example}, not {raw!r}")
