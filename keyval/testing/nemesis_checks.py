"""The nemesis's end: after the heal, the cluster must settle; then every key is read once more
(into the history), every acknowledged ledger write must be there, and every member must hold
the same data at the same applied index."""
from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterable

from keyval.client import AsyncClient

from .nemesis_clients import LEDGER_PREFIX, Workload
from .nemesis_cluster import Cluster

SETTLE_TIMEOUT = 60.0
FINAL_TIMEOUT = 20.0
_LEADER_LINE = re.compile(r"node (\S+) term (\d+): leader,")


class CheckFailed(Exception):
    """A check found a violation; the message says which, in one line."""


async def settle(cluster: Cluster, timeout: float = SETTLE_TIMEOUT) -> tuple[str, int]:
    """Wait until one leader's members all run and have applied its commit index: (leader, index)."""
    deadline = time.monotonic() + timeout
    seen = "no status"
    while time.monotonic() < deadline:
        statuses = await cluster.statuses()
        leaders = [s for s in statuses.values() if s["role"] == "leader"]
        if leaders:
            lead = max(leaders, key=lambda s: s["term"])
            members = set(lead["voters"]) | set(lead["learners"])
            applied = {m: statuses[m]["applied_index"] if m in statuses else "no answer" for m in sorted(members)}
            seen = f"leader {lead['id']} term {lead['term']} commit {lead['commit_index']}, applied {applied}"
            if all(isinstance(a, int) and a >= lead["commit_index"] for a in applied.values()) and \
                    len(set(applied.values())) == 1:
                return lead["id"], lead["commit_index"]
        else:
            seen = f"no leader among {sorted(statuses)}"
        await asyncio.sleep(0.5)
    raise CheckFailed(f"the healed cluster did not settle within {timeout:g}s: {seen}")


async def final_reads(cluster: Cluster, workload: Workload) -> None:
    """One linearizable read of every key, recorded: the final state joins the history."""
    process = 1_000_000
    client = AsyncClient(cluster.endpoints(), timeout=FINAL_TIMEOUT, client_id="nemesis-final")
    try:
        for key in sorted(workload.keys_used):
            handle = workload.history.invoke(process, "get", key, None, workload.now())
            item = await client.get_item(key)
            workload.history.ok(handle, workload.now(), None if item is None else item.value.decode())
    finally:
        await client.close()


async def ledger_present(cluster: Cluster, workload: Workload) -> str:
    """Every acknowledged ledger write is there with its value; nothing there was never written."""
    client = AsyncClient(cluster.endpoints(), timeout=FINAL_TIMEOUT)
    try:
        found = {i.key.decode(): i.value.decode() for i in await client.scan(LEDGER_PREFIX)}
    finally:
        await client.close()
    lost = [k for k, v in workload.ledger_acked.items() if found.get(k) != v]
    if lost:
        raise CheckFailed(f"{len(lost)} of {len(workload.ledger_acked)} acknowledged writes lost, "
                          f"e.g. {', '.join(sorted(lost)[:5])}")
    invented = [k for k, v in found.items() if k not in workload.ledger_tried or v != k[len(LEDGER_PREFIX):]]
    if invented:
        raise CheckFailed(f"{len(invented)} ledger keys hold what no client wrote, e.g. {sorted(invented)[:5]}")
    return f"acked writes present {len(workload.ledger_acked)}/{len(workload.ledger_acked)}"


async def replicas_identical(cluster: Cluster, leader: str, index: int) -> str:
    """Each member's own state (a serializable scan of everything, and its revision) is the
    leader's: the state machines applied the same log."""
    statuses = await cluster.statuses()
    members = sorted(set(statuses[leader]["voters"]) | set(statuses[leader]["learners"]))
    states = {}
    for member in members:
        node = cluster.nodes[member]
        client = AsyncClient([node.client_addr], timeout=FINAL_TIMEOUT)
        try:
            items = await client.scan(b"", 0, serializable=True)
            status = await client.status(node.client_addr)
        finally:
            await client.close()
        if status["applied_index"] != index:
            raise CheckFailed(f"{member} moved from applied index {index} to {status['applied_index']} "
                              "while the replicas were compared (nothing should write now)")
        states[member] = (status["revision"], [(i.key, i.value, i.revision) for i in items])
    reference = states[leader]
    for member, state in states.items():
        if state != reference:
            raise CheckFailed(f"replica {member} differs from leader {leader} at applied index {index}: "
                              f"{_first_difference(reference, state)}")
    return f"replicas identical ({len(members)} at index {index}, {len(reference[1])} keys)"


def _first_difference(a, b) -> str:
    if a[0] != b[0]:
        return f"revision {a[0]} vs {b[0]}"
    left, right = dict((k, (v, r)) for k, v, r in a[1]), dict((k, (v, r)) for k, v, r in b[1])
    for key in sorted(set(left) | set(right)):
        if left.get(key) != right.get(key):
            return f"key {key!r}: {left.get(key)} vs {right.get(key)}"
    return "same items in another order"


def elections(log_texts: Iterable[str]) -> tuple[int, int]:
    """(terms in which some node became leader, the highest such term) from the node logs."""
    terms = {int(m.group(2)) for text in log_texts for m in _LEADER_LINE.finditer(text)}
    return len(terms), max(terms, default=0)
