"""How kvctl's requests reach the leader.

A request goes to the endpoints in the order given; a follower answers ``not_leader`` with
the leader's client address and the client sends the request there next (the client goes to
the address named, keyval/client/client.py ``_call``), so a request to a follower costs one
more round trip, and nothing is asked before it. ``to_leader`` wraps that client and tells
"nothing answers" (Unreachable, worded by the caller) from "nodes answer but none leads"
(no_leader); both exit 3.

``find_leader`` is for the commands that need the leader's own status (its members' client
addresses): it asks one endpoint at a time, going where a follower points.
"""
from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from keyval.client import AsyncClient
from keyval.client.protocol import PERMISSION_DENIED
from keyval.errors import NoLeader, RequestRefused, Unreachable
from kvctl import connect
from kvctl.output import UNREACHABLE, Failure

PROBE_TIMEOUT = 1.0
RETRY_PAUSE = 0.1
NO_LEADER_MESSAGE = "the cluster has no leader right now (is a majority of its nodes running?)"


def no_leader() -> Failure:
    return Failure(NO_LEADER_MESSAGE, UNREACHABLE, "no_leader")


@asynccontextmanager
async def to_leader(endpoints: list[str], timeout: float) -> AsyncIterator[AsyncClient]:
    """A client for ``endpoints`` whose requests end up at the leader; what it raises inside
    becomes kvctl's failures (Unreachable is left to the caller, which knows where the
    endpoints came from)."""
    async with connect.client(list(endpoints), timeout=timeout) as client:
        try:
            yield client
        except NoLeader:
            raise no_leader() from None
        except Unreachable as exc:
            failure = _tls_failure(exc)
            if failure is None:
                raise
            raise failure from None


def _tls_failure(exc: Unreachable) -> Failure | None:
    """Say what is wrong with TLS, not just "no answer" (the client's reason for the last
    endpoint tried ends its message: "TLS with HOST:PORT failed: ...")."""
    reason = str(exc).partition("TLS with ")[2]
    if not reason:
        return None
    return Failure(f"cannot connect to {reason.partition(' failed')[0]}: TLS with {reason}", UNREACHABLE, "tls")


async def find_leader(endpoints: list[str], deadline: float) -> tuple[str, dict[str, Any]]:
    """(the leader's client address, its status), waiting until ``deadline`` for one."""
    answered = False
    async with connect.client(list(endpoints), timeout=PROBE_TIMEOUT) as probe:
        while True:
            queue = list(endpoints)
            asked: set[str] = set()
            while queue:
                endpoint = queue.pop(0)
                if endpoint in asked:
                    continue
                asked.add(endpoint)
                timeout = max(0.05, min(PROBE_TIMEOUT, deadline - time.monotonic()))
                status = await _status(probe, endpoint, timeout)
                if status is None:
                    continue
                answered = True
                if status["role"] == "leader":
                    return endpoint, status
                # A follower names the leader and knows its client address: ask it next.
                hint = status["client_addresses"].get(status["leader"]) if status.get("leader") else None
                if hint:
                    queue.insert(0, hint)
            if time.monotonic() + RETRY_PAUSE >= deadline:
                break
            await asyncio.sleep(RETRY_PAUSE)
    if not answered:
        raise Unreachable(f"no KeyVal node answered at {', '.join(endpoints)}")  # worded by the caller
    raise no_leader()


async def _status(client: AsyncClient, endpoint: str, timeout: float) -> dict[str, Any] | None:
    try:
        return await asyncio.wait_for(client.status(endpoint), timeout)
    except RequestRefused as exc:
        if exc.code == PERMISSION_DENIED:  # an answer, and the one to report
            raise
        return None
    except Unreachable as exc:
        failure = _tls_failure(exc)
        if failure is not None:
            raise failure from None
        return None
    except Exception:  # refused, reset, timed out: all mean "no answer"
        return None
