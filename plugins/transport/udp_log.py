"""Rate-limited logging of dropped traffic: a flood of bad datagrams must not flood the log."""
from __future__ import annotations

import logging
import time
from typing import Callable


class DropLog:
    """Logs the first drop of each kind, then at most one line per ``interval`` seconds per
    kind, saying how many more were dropped in between."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log = logger
        self._interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def drop(self, kind: str, detail: str, *args: object) -> None:
        now = self._clock()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        self._last[kind] = now
        more = self._suppressed.pop(kind, 0)
        suffix = f" (and {more} more since the last report)" if more else ""
        self._log.warning("dropped (%s): " + detail + "%s", kind, *args, suffix)
