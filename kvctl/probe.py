"""Ask local nodes for their status, and wait until a starting cluster is usable."""
from __future__ import annotations

import asyncio
import subprocess
import time
from typing import Any

from kvctl import connect
from kvctl.localcluster import ClusterSpec, LocalCluster
from kvctl.output import Failure

Status = dict[str, Any]


async def statuses(local: LocalCluster, addresses: dict[str, str], timeout: float = 1.0) -> dict[str, Status | None]:
    """Each node's own status report, or None if it did not answer in time."""
    if not addresses:
        return {}
    async with connect.client(list(addresses.values()), timeout=timeout, local=local) as client:
        replies = await asyncio.gather(*(client.status(a) for a in addresses.values()), return_exceptions=True)
    return {node_id: (r if isinstance(r, dict) else None) for node_id, r in zip(addresses, replies)}


def member(status: Status | None) -> bool | None:
    if status is None:
        return None
    return status["id"] in status["voters"] or status["id"] in status["learners"]


def leader_of(found: dict[str, Status | None]) -> str | None:
    """The leader every member that answered agrees on, if there is one."""
    leaders = {s["leader"] for s in found.values() if s is not None and member(s)}
    return leaders.pop() if len(leaders) == 1 and None not in leaders else None


def usable(found: dict[str, Status | None]) -> bool:
    """Every node answers, its members agree on a leader, and that leader knows every
    member's client address, so a follower can point kvctl at it right away."""
    if not found or any(s is None for s in found.values()):
        return False
    leader = leader_of(found)
    if leader is None or found.get(leader) is None:
        return False
    status = found[leader]
    members = [n for n in found if n in status["voters"] or n in status["learners"]]
    return all(n in status["client_addresses"] for n in members)


async def wait_until_up(local: LocalCluster, spec: ClusterSpec, started: dict[str, subprocess.Popen],
                        running: list[str], want_leader: bool, timeout: float) -> dict[str, Status | None]:
    """Wait for the nodes in ``running`` (``started`` are the ones this kvctl launched, whose
    early exit is reported with the end of their log)."""
    addresses = {n: spec.nodes[n].client_address for n in running}
    deadline = time.monotonic() + timeout
    while True:
        for node_id, proc in started.items():
            if proc.poll() is not None:
                last = local.last_log_line(node_id)
                raise Failure(f"{node_id} exited while starting (exit code {proc.returncode})"
                              + (f": {last}" if last else "") + f" — see {local.shown_log(node_id)}")
        found = await statuses(local, addresses, timeout=min(1.0, max(0.1, deadline - time.monotonic())))
        if usable(found) if want_leader else all(s is not None for s in found.values()):
            return found
        if time.monotonic() > deadline:
            silent = [n for n, s in found.items() if s is None]
            if silent:
                logs = ", ".join(local.shown_log(n) for n in silent)
                raise Failure(f"{', '.join(silent)} did not answer within {timeout:g}s; see {logs}", 3, "timeout")
            raise Failure(f"the nodes did not elect a leader within {timeout:g}s; see the logs under {local.shown}/",
                          3, "timeout")
        await asyncio.sleep(0.1)
