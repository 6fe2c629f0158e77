"""How ``kvctl cluster`` commands reach the cluster: the leader's operations, within a budget.

Membership and status operations run on the leader: a follower sends the client on to it
(``kvctl.route``), as for the data commands. An operation that ran out of time on the server
comes back as a result marked ``timeout`` (not as an error the client would retry): that
becomes exit 3, like any timeout.

``--timeout`` bounds the whole command: finding the leader, the operation and its reply all
fit in it (the server is given what is left minus a small margin for the reply).
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable, TypeVar

from keyval.client import AsyncClient
from keyval.errors import ConfigError, KeyvalError, Unreachable
from keyval.wire_bounds import parse_address, parse_node_id
from kvctl import connect
from kvctl.endpoints import Endpoints, resolve
from kvctl.output import UNREACHABLE, USAGE, Failure, settings
from kvctl.route import to_leader

T = TypeVar("T")
#: what a reply may take beyond the time the server was given (at most this share of what is left)
MARGIN = 1.0
MARGIN_SHARE = 0.25
INTRODUCE_TIMEOUT = 1.0


def endpoints() -> Endpoints:
    return resolve(settings())


def run(call: Callable[[AsyncClient, float], Awaitable[T]], budget: float) -> T:
    """``call(client, deadline)`` with a client pointed at the leader; ``budget`` seconds in all."""
    where = endpoints()

    async def go() -> T:
        deadline = time.monotonic() + budget
        async with to_leader(where.addresses, budget) as client:
            return await call(client, deadline)

    try:
        return asyncio.run(go())
    except Unreachable:
        raise Failure(f"no KeyVal node answered at {', '.join(where.addresses)} within {budget:g}s "
                      f"(endpoints from {where.source})", UNREACHABLE, "unreachable") from None


async def admin(client: AsyncClient, deadline: float, op: str, **args: Any) -> dict[str, Any]:
    """One operation; the server gets the time left minus a margin for the reply."""
    remaining = max(0.05, deadline - time.monotonic())
    if "wait" not in args and op not in ("cluster_status", "cluster_health"):
        args["wait"] = server_wait(remaining)
    result = await client.admin(op, timeout=remaining, **{k: v for k, v in args.items() if v is not None})
    if result.get("timeout"):
        raise Failure(result.get("message", f"{op} timed out"), UNREACHABLE, "timeout")
    return result


def server_wait(remaining: float) -> float:
    """How long the server may take, out of ``remaining`` seconds, leaving time for the reply."""
    return round(max(0.05, remaining - min(MARGIN, remaining * MARGIN_SHARE)), 3)


async def introduce(node_id: str, cluster: dict[str, Any]) -> bool:
    """Best effort: if one of kvctl's endpoints is node ``node_id``, not yet a member, tell
    it where the members are, so it can answer the leader once added (a node that joins has
    no peer address until its first configuration arrives). True if it was told."""
    members = cluster["members"]
    known = {m["client_address"] for m in members}
    peers = {m["id"]: m["peer_address"] for m in members if m["peer_address"]}
    for endpoint in endpoints().addresses:
        if endpoint in known:
            continue
        try:
            async with connect.client([endpoint], timeout=INTRODUCE_TIMEOUT) as client:
                status = await client.status(endpoint)
                if status.get("id") != node_id:
                    continue
                result = await client.admin("introduce", peers=peers, cluster_id=cluster["cluster_id"])
                return bool(result.get("introduced"))
        except (KeyvalError, OSError, asyncio.TimeoutError):
            continue
    return False


def call(op: str, budget: float | None = None, **args: Any) -> dict[str, Any]:
    """One operation on the leader, within ``--timeout`` (or ``budget`` if given)."""
    budget = budget if budget is not None else settings().request_timeout()
    return run(lambda client, deadline: admin(client, deadline, op, **args), budget)


def check_usage(ids: tuple[str | None, ...] = (), address: str | None = None) -> None:
    """Bad ids or addresses are the user's typing, not the cluster's refusal: exit 2 here,
    before anything is sent."""
    try:
        for node_id in ids:
            if node_id is not None:
                parse_node_id(node_id, "ID")
        if address is not None:
            parse_address(address, "ADDR")
    except ConfigError as exc:
        raise Failure(f"{exc} (see --help)", USAGE, "usage") from None


async def add_member(client: AsyncClient, deadline: float, node_id: str, address: str, **options) -> dict:
    """Add the node. Its transport answers the leader at the address the leader's own
    traffic came from, so introducing it first (only possible when it is among kvctl's
    endpoints) is harmless but not needed, and never a reason to fail."""
    doc = await admin(client, deadline, "cluster_status")
    if all(m["id"] != node_id for m in doc["members"]):
        try:
            await introduce(node_id, doc)
        except Exception:  # noqa: BLE001 - best effort: the add below is what matters
            pass
    return await admin(client, deadline, "add", id=node_id, address=address, **options)
