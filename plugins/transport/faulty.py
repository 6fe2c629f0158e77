"""The ``faulty`` transport backend: any other transport with faults injected, for tests.

It wraps the transport named by option ``inner`` (default ``tcp``; every option it does not
know is passed through to it) and applies rules, changeable at run time, on send and/or on
receive: drop, delay (fixed + jitter, so messages get reordered), duplicate, and partitions
between pairs of nodes. ``send`` still never blocks nor raises: a delayed message waits on a
timer, not on the caller.

Options::

    inner: tcp             # the wrapped transport, chosen by name like --transport (an
                           # inner option named like one below, e.g. tcp's seed, cannot be set)
    control_file: PATH     # JSON rules, re-read when it changes (polled every poll_interval)
    poll_interval: 0.1     # seconds
    rules: {...}           # initial rules (same format), e.g. from a node's config file
    seed: 42               # seeds the random choices so a run can be replayed
    max_delayed: 100000    # messages held back by delays at once; more are dropped

Rules format (the control file, ``rules`` option or ``set_rules(dict)``)::

    {
      "rules": [
        {"drop": 0.2},                                   # lose 20% of everything sent
        {"delay_ms": 50, "jitter_ms": 30, "on": "receive"},
        {"duplicate": 0.1, "from": "n1", "to": ["n2", "n3"], "types": ["AppendEntries"]}
      ],
      "partitions": [
        ["n1", "n2"],                                    # n1 and n2 cannot talk, both ways
        {"from": "n3", "to": "n1", "one_way": true}      # n3's messages to n1 are lost
      ]
    }

A rule has ``drop`` and ``duplicate`` (probabilities 0..1), ``delay_ms`` and ``jitter_ms``
(each copy waits ``delay_ms`` plus a uniform draw in ``[0, jitter_ms]``), ``on`` (``send``
— the default —, ``receive`` or ``both``) and filters ``from`` / ``to`` (node ids) and
``types`` (message class names); a missing filter matches everything. Every matching rule
applies, in order: a drop ends it, duplicates add copies, delays add up. Partitions are
checked on both sides, before the rules, so one control file shared by every node of a test
cluster cuts exactly the named directions. An empty document (``{}``) or a missing control
file means no faults. A malformed control file is logged once and the previous rules kept.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from typing import Any

from keyval import hookimpl
from keyval.plugin_api.backends import TransportBackend
from keyval.errors import ConfigError
from keyval.raft.messages import Message
from keyval.plugin_api.transport import Deliver

from .faulty_rules import Fate, RuleError, Rules, decide, parse_rules

log = logging.getLogger(__name__)

#: How long after a change a control file is re-read on every poll, whatever its stat says.
RACY_SECONDS = 2.0
OWN_OPTIONS = ("inner", "control_file", "poll_interval", "rules", "seed", "max_delayed")


class FaultyTransport:
    def __init__(self, options: dict[str, Any], inner: Any = None) -> None:
        own = {k: options[k] for k in OWN_OPTIONS if k in options}
        passed = {k: v for k, v in options.items() if k not in OWN_OPTIONS}
        self._inner = inner if inner is not None else _open_inner(str(own.get("inner", "tcp")), passed)
        self._control_file = own.get("control_file")
        try:
            self._poll_interval = float(own.get("poll_interval", 0.1))
            self._max_delayed = int(own.get("max_delayed", 100_000))
        except (TypeError, ValueError):
            raise ConfigError("transport_options: poll_interval and max_delayed must be numbers") from None
        if self._poll_interval <= 0:
            raise ConfigError("transport_options.poll_interval must be > 0")
        seed = own.get("seed")
        if seed is None:
            seed = random.SystemRandom().randrange(2**32)
        self.seed = seed
        self._rng = random.Random(seed)
        try:
            self._rules = parse_rules(own.get("rules"))
        except RuleError as exc:
            raise ConfigError(f"transport_options.rules: {exc}") from None
        # The control file as last seen: stat signature and contents (good or bad).
        self._file_signature: tuple | None = None
        self._file_text: str | None = None
        # Timers of delayed messages, to cancel them on close.
        self._delayed: dict[int, asyncio.TimerHandle] = {}
        self._next_key = 0
        self._poller: asyncio.Task | None = None
        self._node_id = ""
        self._counts = dict.fromkeys(
            ("fault_dropped", "fault_partitioned", "fault_duplicated", "fault_delayed",
             "fault_overflow", "rules_loaded", "rules_rejected"), 0)

    @property
    def inner(self) -> Any:
        return self._inner

    @property
    def rules(self) -> Rules:
        return self._rules

    def set_rules(self, rules: Rules | dict | None) -> None:
        """Replace the rules now (in-process tests); raises RuleError for a bad document."""
        self._rules = rules if isinstance(rules, Rules) else parse_rules(rules)
        self._counts["rules_loaded"] += 1

    # -- the contract -----------------------------------------------------------------------
    async def start(self, node_id: str, address: str, deliver: Deliver) -> None:
        self._node_id = node_id
        self._deliver = deliver
        log.info("faulty transport of %s over %s, seed %s", node_id, type(self._inner).__name__, self.seed)
        if self._control_file:
            self._poll_control_file()
            self._poller = asyncio.create_task(self._poll_loop(), name=f"faulty-poll-{node_id}")
        await self._inner.start(node_id, address, self._on_receive)

    @property
    def address(self) -> str:
        return self._inner.address

    @property
    def cluster_id(self) -> str | None:
        return getattr(self._inner, "cluster_id", None)  # a transport of the older contract has none

    def set_cluster_id(self, cluster_id: str) -> None:
        self._inner.set_cluster_id(cluster_id)

    def use_peer_versions(self, versions: Any) -> None:
        use = getattr(self._inner, "use_peer_versions", None)
        if use is not None:
            use(versions)

    def send(self, peer_id: str, address: str | None, message: Message) -> None:
        fate = decide(self._rules, "send", message.frm, peer_id, type(message).__name__, self._rng)
        self._apply(fate, self._inner.send, peer_id, address, message)

    def stats(self) -> dict[str, int]:
        stats = dict(self._inner.stats())
        stats.update(self._counts)
        stats["fault_pending"] = len(self._delayed)
        return stats

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
            self._poller = None
        for handle in self._delayed.values():
            handle.cancel()
        self._delayed.clear()
        await self._inner.close()

    # -- faults -----------------------------------------------------------------------------
    def _on_receive(self, message: Message) -> None:
        fate = decide(self._rules, "receive", message.frm, self._node_id, type(message).__name__, self._rng)
        self._apply(fate, self._deliver, message)

    def _apply(self, fate: Fate, action: Any, *args: Any) -> None:
        if fate.dropped:
            self._counts["fault_partitioned" if fate.partitioned else "fault_dropped"] += 1
            return
        if len(fate.delays) > 1:
            self._counts["fault_duplicated"] += len(fate.delays) - 1
        for delay in fate.delays:
            if delay <= 0:
                self._run(action, args)
                continue
            if len(self._delayed) >= self._max_delayed:
                self._counts["fault_overflow"] += 1
                continue
            self._counts["fault_delayed"] += 1
            self._next_key += 1
            self._delayed[self._next_key] = asyncio.get_running_loop().call_later(
                delay, self._fire, self._next_key, action, args)

    def _fire(self, key: int, action: Any, args: tuple) -> None:
        del self._delayed[key]
        self._run(action, args)

    def _run(self, action: Any, args: tuple) -> None:
        try:
            action(*args)
        except Exception as exc:  # noqa: BLE001 - a fault must never surface to the sender
            log.warning("faulty transport: %s raised %r", getattr(action, "__name__", action), exc)

    # -- the control file -------------------------------------------------------------------
    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(self._poll_interval)
            self._poll_control_file()

    def _poll_control_file(self) -> None:
        path = self._control_file
        try:
            st = os.stat(path)
        except OSError as exc:
            if self._file_text is not None:
                # A missing file is the way to say "no faults"; other errors are logged.
                log.info("faulty transport: control file %s gone (%s); no faults from now on",
                         path, exc.strerror)
                self._file_text = None
                self._file_signature = None
                self.set_rules(None)
            return
        signature = (st.st_mtime_ns, st.st_size, st.st_ino)
        # A file rewritten within the timestamp granularity (milliseconds on most file
        # systems) with the same size may keep its signature: while its mtime is recent, read
        # it anyway and compare contents (git's "racy" files).
        recent = time.time() - st.st_mtime < RACY_SECONDS
        if signature == self._file_signature and not recent:
            return
        self._file_signature = signature
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            text = f"unreadable: {exc}"
        if text == self._file_text:
            return
        self._file_text = text
        try:
            rules = parse_rules(json.loads(text) if text.strip() else None)
        except ValueError as exc:  # RuleError and JSONDecodeError are ValueErrors
            self._counts["rules_rejected"] += 1
            log.warning("faulty transport: control file %s is malformed, keeping the previous rules: %s",
                        path, exc)
            return
        self.set_rules(rules)
        log.info("faulty transport: rules from %s: %d rule(s), %d partition(s)",
                 path, len(rules.rules), len(rules.partitions))


def _open_inner(name: str, options: dict[str, Any]) -> Any:
    # Imported here: plugin loading is only needed when a faulty transport is opened.
    from keyval.plugin_api.loading import build_plugin_manager, choose_transport

    if name == "faulty":
        raise ConfigError("transport_options.inner: the faulty transport cannot wrap itself")
    backend = choose_transport(build_plugin_manager(), name)
    return backend.factory(options)


def open_faulty(options: dict[str, Any]) -> FaultyTransport:
    return FaultyTransport(options)


@hookimpl
def keyval_transport_backends() -> list[TransportBackend]:
    return [TransportBackend("faulty", open_faulty,
                             "fault injection (drop, delay, duplicate, partition) around another transport")]
