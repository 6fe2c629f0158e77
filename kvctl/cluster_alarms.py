"""The alarms members raised (NOSPACE), for `kvctl cluster health`.

The leader's health document is its view of replication; whether a member's own disk is
filling up, or its writes keep failing, only that member knows (a follower stuck retrying a
write looks merely unreachable to the leader). So kvctl asks each member's status itself:
the endpoints it was given, then every client address they name.
"""
from __future__ import annotations

import asyncio
from typing import Any

from kvctl import connect


async def member_statuses(addresses: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    """The status of every member that answers within ``timeout``, by node id."""
    async with connect.client(addresses, timeout=timeout) as client:
        found = await _statuses(client, addresses)
        named = {a for s in found.values() if s for a in s.get("client_addresses", {}).values()}
        found.update(await _statuses(client, sorted(named - set(addresses))))
    return {s["id"]: s for s in found.values() if s is not None}


async def _statuses(client, addresses: list[str]) -> dict[str, dict | None]:
    replies = await asyncio.gather(*(client.status(a) for a in addresses), return_exceptions=True)
    return {a: (r if isinstance(r, dict) else None) for a, r in zip(addresses, replies)}


def add_alarms(doc: dict[str, Any], statuses: dict[str, dict[str, Any]]) -> None:
    """Name in ``doc`` (a health document) every member with an alarm raised or a write
    failing: under ``alarms`` ({id: [names]}) and as issues, which make it unhealthy."""
    alarms: dict[str, list[str]] = {}
    for node, status in sorted(statuses.items()):
        raised = status.get("alarms") or []  # a node older than alarms says nothing
        reasons = status.get("alarm_reasons") or {}
        if raised:
            alarms[node] = raised
        for name in raised:
            doc["issues"].append(f"Member {node} has the {name} alarm raised: {reasons.get(name) or 'no reason given'}"
                                 f"; it refuses client writes while it leads")
        failing = (status.get("space") or {}).get("persist_error")
        if failing:
            doc["issues"].append(f"Member {node} cannot write to its disk ({failing}): it retries, and "
                                 f"acknowledges nothing meanwhile")
    doc["alarms"] = alarms
    if doc["issues"]:
        doc["healthy"] = False
