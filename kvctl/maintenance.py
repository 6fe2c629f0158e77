"""``kvctl snapshot create|list`` and ``kvctl compact``; backup and restore are in kvctl/backup.py.

Snapshots and compaction are per node, so ``snapshot create`` and ``compact`` ask every
member of the cluster (as the leader lists them) at its client address, all at once, and
print one line per node. A member that does not answer is reported, and the command exits 1
after the others did their part: running it again once the node is back is safe.
"""
from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, TypeVar

import click

from keyval.errors import ClientError, Unreachable
from kvctl import connect
from kvctl.endpoints import resolve
from kvctl.options import command, group, opt
from kvctl.output import FAILED, UNREACHABLE, Failure, emit, handles_errors, settings, table
from kvctl.route import find_leader

T = TypeVar("T")
#: Snapshots of a large store take a while; --timeout overrides.
OPERATION_TIMEOUT = 60.0
PROBE_TIMEOUT = 1.0


def run_on_cluster(work: Callable[[list[str], float], Awaitable[T]]) -> T:
    """Run ``work(endpoints, timeout)``; an unreachable cluster is exit 3."""
    s = settings()
    endpoints = resolve(s)
    timeout = s.timeout or OPERATION_TIMEOUT
    try:
        return asyncio.run(work(endpoints.addresses, timeout))
    except Unreachable:
        raise Failure(f"no KeyVal node answered at {', '.join(endpoints.addresses)} "
                      f"(endpoints from {endpoints.source})", UNREACHABLE, "unreachable") from None


async def leader_status(endpoints: list[str]) -> tuple[str, dict[str, Any]]:
    """The leader's client address and its status (members, their client addresses)."""
    return await find_leader(endpoints, time.monotonic() + settings().request_timeout())


def members_of(status: dict[str, Any]) -> list[str]:
    """The leader first, then the other voters and learners by id."""
    others = sorted((set(status["voters"]) | set(status["learners"])) - {status["id"]})
    return [status["id"], *others]


async def ask_node(node_id: str, address: str | None, op: str, timeout: float, **args: Any) -> dict[str, Any]:
    """One node's answer to ``op``, or ``{"node", "error"}``: never raises for one node."""
    if not address:
        return {"node": node_id, "error": f"{node_id}'s client address is not known yet"}
    async with connect.client([address], timeout=timeout) as client:
        try:
            # A quick probe first, so a node that is down costs a second, not the timeout.
            await asyncio.wait_for(client.status(address), PROBE_TIMEOUT)
        except (ClientError, OSError, asyncio.TimeoutError):
            return {"node": node_id, "error": f"{node_id} did not answer at {address}"}
        try:
            return await client.admin(op, timeout=timeout, **args)
        except ClientError as exc:
            return {"node": node_id, "error": f"{node_id}: {exc}"}


async def on_every_member(endpoints: list[str], op: str, timeout: float) -> tuple[str, list[dict[str, Any]]]:
    _, status = await leader_status(endpoints)
    addresses = status["client_addresses"]
    nodes = members_of(status)
    answers = await asyncio.gather(*(ask_node(n, addresses.get(n), op, timeout) for n in nodes))
    return status["id"], answers


def finish(answers: list[dict[str, Any]], what: str) -> None:
    """Exit 1 (after the per-node output) if any node failed."""
    failed = [a for a in answers if "error" in a]
    if not failed:
        return
    done = [a["node"] for a in answers if "error" not in a]
    message = (f"{'; '.join(a['error'] for a in failed)} — {what} on "
               f"{', '.join(done) if done else 'no node'}; run it again once every member is up")
    if settings().json:
        click.echo(json.dumps({"error": {"code": "partial", "message": message, "nodes": answers}}))
        click.get_current_context().exit(FAILED)
    raise Failure(message)


def human_size(size: int | None) -> str:
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _label(node: str, leader: str) -> str:
    return f"{node} (leader)" if node == leader else node


# -- commands ------------------------------------------------------------------------------
@handles_errors
def snapshot_create() -> None:
    leader, answers = run_on_cluster(lambda e, t: on_every_member(e, "snapshot_create", t))
    for a in answers:
        if "created" in a:
            a["created"] = iso(a["created"])
    if settings().json:
        if not any("error" in a for a in answers):
            emit(answers)
    else:
        rows = []
        for a in answers:
            if "error" in a:
                rows.append([_label(a["node"], leader), f"FAILED: {a['error']}"])
                continue
            verb = "snapshot at" if a["taken"] else "already had a snapshot at"
            rows.append([_label(a["node"], leader), f"{verb} index {a['index']} (term {a['term']}): "
                         f"{a['keys']} keys, {human_size(a['size'])}, {a['seconds']:.2f}s; "
                         f"log starts at {a['first_index']}"])
        click.echo(table(rows))
    finish(answers, "snapshots were taken")


@handles_errors
def snapshot_list(node: str | None) -> None:
    async def work(endpoints: list[str], timeout: float) -> dict[str, Any]:
        _, status = await leader_status(endpoints)
        target = node or status["id"]
        if target not in members_of(status):
            raise Failure(f"{target} is not a member of the cluster (members: {', '.join(members_of(status))})")
        answer = await ask_node(target, status["client_addresses"].get(target), "snapshot_list", timeout)
        if "error" in answer:
            raise Failure(answer["error"], UNREACHABLE if "did not answer" in answer["error"] else FAILED)
        return answer

    answer = run_on_cluster(work)
    snapshots = [{"node": answer["node"], "index": s["index"], "term": s["term"], "size": s["size"],
                  "created": iso(s["created"])} for s in answer["snapshots"]]
    if settings().json:
        emit(snapshots)
        return
    who = f"{answer['node']} ({answer['role']})"
    first, last = answer["first_index"], answer["last_index"]
    held = f"entries {first}..{last}" if first <= last else f"no entries (all up to {last} compacted)"
    click.echo(f"snapshots on {who}; its log holds {held}, applied index {answer['applied_index']}")
    if not snapshots:
        click.echo("none yet (`kvctl snapshot create` takes one)")
        return
    rows = [["INDEX", "TERM", "SIZE", "CREATED"]]
    rows += [[str(s["index"]), str(s["term"]), human_size(s["size"]), s["created"]] for s in snapshots]
    click.echo(table(rows))


@handles_errors
def compact() -> None:
    leader, answers = run_on_cluster(lambda e, t: on_every_member(e, "compact", t))
    if settings().json:
        if not any("error" in a for a in answers):
            emit(answers)
    else:
        rows = []
        for a in answers:
            if "error" in a:
                rows.append([_label(a["node"], leader), f"FAILED: {a['error']}"])
                continue
            rows.append([_label(a["node"], leader), f"first index {a['first_index_before']} -> "
                         f"{a['first_index_after']} (snapshot at index {a['snapshot_index']}, term {a['term']}; "
                         f"last index {a['last_index']})"])
        click.echo(table(rows))
    finish(answers, "the log was compacted")


def add_maintenance_commands(cli: click.Group) -> None:
    snapshot = group("snapshot", "Snapshots of the state machine.")
    cli.add_command(snapshot)
    snapshot.add_command(command(
        "create", "Take a snapshot now on every member (each at its applied index).", snapshot_create))
    snapshot.add_command(command(
        "list", "List one node's snapshots (default: the leader's).", snapshot_list,
        opt("--node", metavar="ID", help="List this member's snapshots instead.")))
    cli.add_command(command(
        "compact", "Snapshot every member at its applied index and discard its log up to it.", compact))

