"""The nemesis's clients: concurrent put, get, delete and compare-and-set on a few keys, each
recorded as invoked and completed (ok), definitely not done (fail) or unknown — the history
``keyval.testing.linearizability`` checks.

Jepsen's rules for outcomes: a write answered is ok; one refused by its condition (revision
mismatch) failed; any other error (a timeout, the connection lost with the request sent) is
unknown, since the write may still apply — the client then carries on as a new process with a
new session. A failed read changed nothing and is recorded as failed.

Keys change every ``KEY_EPOCH`` seconds (``e<epoch>k<i>``), so each key's history stays small
enough for the checker however long the run (Jepsen's independent keys do the same). Beside
them every client writes now and then a key of its own that nothing overwrites (the ledger):
at the end each acknowledged one must be there.
"""
from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from keyval.client import AsyncClient
from keyval.errors import RevisionMismatch
from keyval.testing.linearizability import HistoryRecorder, Operation

KEYS = 3
KEY_EPOCH = 20.0
LEDGER_PREFIX = "ledger/"
#: a client's deadline for one operation, its retries included (drawn for each op): after it,
#: a write is unknown. Short ones make unknown outcomes for the checker to sort out.
OP_TIMEOUT = (0.3, 3.0)
THINK = (0.0, 0.05)
#: the chance, before each op, that a client reconnects, starting at another node
RECONNECT = 0.05
#: the op mix: weights of get, put, delete, cas (a get, then a put expecting what it read),
#: cas-delete (likewise, then a conditional delete), ledger (a put of a key of its own)
MIX = {"get": 30, "put": 25, "delete": 8, "cas": 17, "cas-delete": 5, "ledger": 15}
#: every READER_EVERY-th client only reads. A client that writes through a leader cut off
#: from its quorum waits out its timeout there; a reader keeps reading at it, and so meets
#: the moment a deposed leader would answer from stale state.
READER_EVERY = 2
READ_ONLY = {"get": 1}


class Workload:
    """``clients`` concurrent clients; one ``random.Random`` each, seeded from the run's seed,
    draws every choice (kind, key, pause) in the same order whatever the outcomes."""

    def __init__(self, seed: int, clients: int, endpoints: Callable[[], list[str]], clock: Callable[[], float]) -> None:
        self.seed = seed
        self.endpoints = endpoints
        self.now = clock
        self.history = HistoryRecorder()
        self.rngs = [random.Random(f"{seed}/client/{i}") for i in range(clients)]
        self.ledger_acked: dict[str, str] = {}
        self.ledger_tried: set[str] = set()
        self.counts = {"ok": 0, "fail": 0, "unknown": 0}
        #: unknown outcomes by the error's type, and anything the client raised unexpectedly
        self.errors: dict[str, int] = {}
        self.keys_used: set[str] = set()
        self._next_process = clients
        self._sessions = 0
        self._stopping = False
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run(i, rng), name=f"nemesis-client-{i}")
                       for i, rng in enumerate(self.rngs)]

    async def stop(self) -> None:
        """No new operations; the ones in flight end by their deadline."""
        self._stopping = True
        await asyncio.gather(*self._tasks)

    # -- one client --------------------------------------------------------------------------
    def _client(self, process: int, home: float) -> AsyncClient:
        """A client that tries the node at ``home`` (a fraction of the nodes) first: clients
        spread over the nodes as a real application's do, so while the cluster is split some
        start on each side (one that always began with the leader would follow it everywhere)."""
        endpoints = self.endpoints()
        first = int(home * len(endpoints)) % len(endpoints)
        # A session per connection: a new client's numbering starts again at 1, and a session
        # answers a number it has seen with its first answer (exactly-once retries).
        self._sessions += 1
        return AsyncClient(endpoints[first:] + endpoints[:first], timeout=OP_TIMEOUT[1],
                           client_id=f"nemesis-{self.seed}-p{process}-s{self._sessions}")

    async def _run(self, index: int, rng: random.Random) -> None:
        process = index
        client = self._client(process, index / len(self.rngs))
        written = 0
        mix = READ_ONLY if index % READER_EVERY == READER_EVERY - 1 else MIX
        kinds, weights = list(mix), list(mix.values())
        try:
            while not self._stopping:
                # Every draw happens, in this order, whatever the op: the seed fixes the choices.
                kind = rng.choices(kinds, weights)[0]
                slot = rng.randrange(KEYS)
                pause = rng.uniform(*THINK)
                timeout = rng.uniform(*OP_TIMEOUT)
                home = rng.random()
                if rng.random() < RECONNECT:
                    await client.close()
                    client = self._client(process, home)
                client.timeout = timeout
                written += 1
                value = f"{process}.{written}"
                key = f"e{int(self.now() // KEY_EPOCH)}k{slot}"
                if kind == "ledger":
                    done = await self._ledger(client, process, f"{LEDGER_PREFIX}{value}", value)
                elif kind == "get":
                    done = await self._get(client, process, key) is not False
                elif kind in ("cas", "cas-delete"):
                    seen = await self._get(client, process, key)
                    done = seen is False or await self._write(client, process, kind, key, value, seen)
                else:
                    done = await self._write(client, process, kind, key, value, None)
                if not done:
                    # Unknown outcome: a new process with a new session, as Jepsen does.
                    await client.close()
                    process = self._next_process
                    self._next_process += 1
                    client = self._client(process, home)
                await asyncio.sleep(pause)
        finally:
            await client.close()

    async def _get(self, client: AsyncClient, process: int, key: str):
        """(value, revision) read, None if absent, False if the read failed."""
        self.keys_used.add(key)
        handle = self.history.invoke(process, "get", key, None, self.now())
        try:
            item = await client.get_item(key)
        except Exception as exc:  # noqa: BLE001 - a read that failed changed nothing
            self.history.fail(handle)
            self._count("fail", exc)
            return False
        found = None if item is None else (item.value.decode(), item.revision)
        self.history.ok(handle, self.now(), None if found is None else found[0])
        self.counts["ok"] += 1
        return found

    async def _write(self, client: AsyncClient, process: int, kind: str, key: str, value: str,
                     seen: tuple[str, int] | None) -> bool:
        """Whether the outcome is known. ``seen``: for a cas, what the get before it read."""
        self.keys_used.add(key)
        expect = None if seen is None else seen[0]
        revision = 0 if seen is None else seen[1]
        recorded = value if kind in ("put", "cas") else None
        handle = self.history.invoke(process, kind, key, recorded, self.now(), expect)
        try:
            if kind == "put":
                await client.put(key, value)
            elif kind == "delete":
                await client.delete(key)
            elif kind == "cas":
                await client.put(key, value, expect_revision=revision)
            else:
                await client.delete(key, expect_revision=revision)
        except RevisionMismatch:
            self.history.fail(handle)
            self.counts["fail"] += 1
            return True
        except Exception as exc:  # noqa: BLE001 - any error leaves a write's outcome unknown
            self._count("unknown", exc)
            return False
        self.history.ok(handle, self.now())
        self.counts["ok"] += 1
        return True

    async def _ledger(self, client: AsyncClient, process: int, key: str, value: str) -> bool:
        self.ledger_tried.add(key)
        try:
            await client.put(key, value)
        except Exception as exc:  # noqa: BLE001
            self._count("unknown", exc)
            return False
        self.ledger_acked[key] = value
        self.counts["ok"] += 1
        return True

    def _count(self, outcome: str, exc: BaseException) -> None:
        self.counts[outcome] += 1
        name = type(exc).__name__
        self.errors[name] = self.errors.get(name, 0) + 1


# -- the history on disk -----------------------------------------------------------------------
def save_history(ops: list[Operation], path: Path) -> None:
    """One JSON object per line: Operation's fields (complete null: unknown; ok false: failed)."""
    with open(path, "w", encoding="utf-8") as f:
        for op in ops:
            f.write(json.dumps(asdict(op), separators=(",", ":")) + "\n")


def load_history(path: Path) -> list[Operation]:
    with open(path, encoding="utf-8") as f:
        return [Operation(**json.loads(line)) for line in f if line.strip()]


def elapsed_clock() -> Callable[[], float]:
    """Seconds since now, monotonic: the history's time."""
    start = time.monotonic()
    return lambda: time.monotonic() - start
