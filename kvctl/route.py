"""Find the leader before a request, so kvctl's one request goes straight to it.

Why: right after a leader change, AsyncClient's redirect-following can bounce between
followers until its deadline, without pausing (in ``_call`` the ``not_leader`` target is
inserted at an index computed before the insert, so once the attempt count has wrapped
around the list the next try is a neighbour, not the leader). Asking every endpoint for its
status is cheap (any node answers it locally) and tells which node leads now; its client
address goes first, and the client's first try hits it. It also lets kvctl tell "nothing
answers" (unreachable) from "nodes answer but none leads" (no_leader); both exit 3.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

from keyval.client import AsyncClient
from keyval.client.protocol import PERMISSION_DENIED
from keyval.errors import RequestRefused, Unreachable
from kvctl import connect
from kvctl.output import UNREACHABLE, Failure

PROBE_TIMEOUT = 1.0
RETRY_PAUSE = 0.1


async def _status(client: AsyncClient, endpoint: str, timeout: float) -> dict[str, Any] | None:
    try:
        return await asyncio.wait_for(client.status(endpoint), timeout)
    except RequestRefused as exc:
        if exc.code == PERMISSION_DENIED:  # an answer, and the one to report
            raise
        return None
    except Unreachable as exc:
        reason = str(exc).rpartition(f"{endpoint}: ")[2]
        if "TLS" in reason or "certificate" in reason.lower():  # say what is wrong, not just "no answer"
            raise Failure(f"cannot connect to {endpoint}: {reason}", UNREACHABLE, "tls") from None
        return None
    except Exception:  # refused, reset, timed out, refused by the node: all mean "no answer"
        return None


async def leader_first(endpoints: list[str], deadline: float) -> list[str]:
    """``endpoints`` with the leader's client address first (added if it wasn't listed).
    Waits, until ``deadline``, for a node that says it is the leader."""
    answered = False
    async with connect.client(list(endpoints), timeout=PROBE_TIMEOUT) as probe:
        candidates = list(endpoints)
        while True:
            timeout = max(0.05, min(PROBE_TIMEOUT, deadline - time.monotonic()))
            replies = await asyncio.gather(*(_status(probe, e, timeout) for e in candidates))
            for endpoint, status in zip(candidates, replies):
                if status is not None and status["role"] == "leader":
                    return [endpoint] + [e for e in endpoints if e != endpoint]
            known = [s for s in replies if s is not None]
            answered = answered or bool(known)
            # A follower names the leader and knows its client address: ask it next round.
            hints = [s["client_addresses"].get(s["leader"]) for s in known if s.get("leader")]
            candidates = list(dict.fromkeys([*endpoints, *filter(None, hints)]))
            if time.monotonic() + RETRY_PAUSE >= deadline:
                break
            await asyncio.sleep(RETRY_PAUSE)
    if not answered:
        raise Unreachable(f"no KeyVal node answered at {', '.join(endpoints)}")  # worded by the caller
    raise Failure("the cluster has no leader right now (is a majority of its nodes running?)",
                  UNREACHABLE, "no_leader")
