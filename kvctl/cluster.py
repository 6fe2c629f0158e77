"""``kvctl cluster ...``: status (info, health, members, member, leader) and membership
(add, promote, remove, replace, transfer — in ``kvctl.cluster_change``).

Status comes from the leader's view (``cluster_status``): only the leader knows how far
each member's log has come. ``health`` also works without a leader: then it asks every node
it can reach, and reports what is missing.
"""
from __future__ import annotations

import asyncio
from typing import Any

import click

from keyval.client import AsyncClient
from keyval.raft.quorum import majority
from kvctl import connect
from kvctl import cluster_show as show
from kvctl.cluster_alarms import add_alarms, member_statuses
from kvctl.cluster_change import add_change_commands
from kvctl.cluster_client import call, endpoints
from kvctl.options import arg, command, group, opt
from kvctl.output import UNREACHABLE, Failure, emit, handles_errors, settings

HEALTH_TIMEOUT = 3.0  # long enough for an election to finish, short enough for a probe


def _status() -> dict[str, Any]:
    doc = call("cluster_status")
    # A leader running 0.1.0 reports no versions: unknown, as for a member that did not say.
    for m in doc.get("members", []):
        m.setdefault("version", None)
        m.setdefault("protocol", None)
    return doc


def _out(document: Any, text: str) -> None:
    if settings().json:
        emit(document)
    else:
        click.echo(text)


@handles_errors
def info() -> None:
    doc = _status()
    _out(doc, show.info(doc))


@handles_errors
def members() -> None:
    doc = _status()
    _out(doc["members"], show.members_table(doc["members"]))


@handles_errors
def member(id: str) -> None:
    doc = _status()
    found = next((m for m in doc["members"] if m["id"] == id), None)
    if found is None:
        known = ", ".join(m["id"] for m in doc["members"])
        raise Failure(f"{id} is not a member of the cluster (members: {known})", code="not_found")
    _out(found, show.member(found, doc))


@handles_errors
def leader() -> None:
    doc = _status()
    m = next(m for m in doc["members"] if m["is_leader"])
    out = {"id": m["id"], "peer_address": m["peer_address"], "client_address": m["client_address"],
           "term": doc["term"]}
    _out(out, show.leader(out))


@handles_errors
def health(max_lag: int, stuck_after: float | None) -> None:
    budget = settings().timeout or HEALTH_TIMEOUT
    # Without --stuck-after the leader applies its own (its config's stuck_after).
    extra = {} if stuck_after is None else {"stuck_after": stuck_after}
    try:
        doc = call("cluster_health", budget=budget, max_lag=max_lag, **extra)
    except Failure as failure:
        if failure.code != "no_leader":
            raise
        doc = asyncio.run(_leaderless_health(budget))
    add_alarms(doc, asyncio.run(member_statuses(list(endpoints().addresses), min(1.0, budget))))
    _out(doc, show.health(doc))
    if not doc["healthy"]:
        click.get_current_context().exit(1)


async def _leaderless_health(timeout: float) -> dict[str, Any]:
    """No node says it leads: report what the nodes that answer say about the membership."""
    addresses = list(endpoints().addresses)
    async with connect.client(addresses, timeout=min(1.0, timeout)) as client:
        found = await _statuses(client, addresses)
        # Members the endpoints did not list are still members: ask them too.
        known = {a for s in found.values() if s for a in s["client_addresses"].values()}
        extra = sorted(known - set(addresses))
        found.update(await _statuses(client, extra))
    answered = {s["id"]: s for s in found.values() if s is not None}
    if not answered:
        raise Failure(f"no KeyVal node answered at {', '.join(addresses)}", UNREACHABLE, "unreachable")
    # The configuration of the most advanced node that answered is the one in force.
    latest = max(answered.values(), key=lambda s: (s["term"], s["commit_index"]))
    voters, learners = latest["voters"], latest["learners"]
    reachable = [n for n in voters + learners if n in answered]
    reachable_voters = [n for n in voters if n in answered]
    quorum = majority(len(voters))
    issues = [f"No leader elected: {len(reachable)} of {len(voters) + len(learners)} members answer "
              f"and none of them leads"]
    if len(reachable_voters) < quorum:
        issues.append(f"Quorum lost: only {len(reachable_voters)} of {len(voters)} voters are reachable "
                      f"(a quorum needs {quorum})")
    clients = latest["client_addresses"]
    for node in sorted(set(voters + learners) - set(answered)):
        issues.append(f"Member {node} is unreachable: it does not answer at {clients.get(node, 'an unknown address')}")
    return {"healthy": False, "leader": None, "quorum_available": len(reachable_voters) >= quorum,
            "healthy_members": len(reachable), "total_members": len(voters) + len(learners),
            "voters": len(voters), "healthy_voters": len(reachable_voters), "quorum": quorum,
            "issues": issues, "term": latest["term"]}


async def _statuses(client: AsyncClient, addresses: list[str]) -> dict[str, dict | None]:
    replies = await asyncio.gather(*(client.status(a) for a in addresses), return_exceptions=True)
    return {a: (r if isinstance(r, dict) else None) for a, r in zip(addresses, replies)}


def add_cluster_commands(cli: click.Group) -> None:
    cluster = group("cluster", "Cluster status and membership.")
    cli.add_command(cluster)
    cluster.add_command(command("info", "Leader, term, commit index, voters, learners, quorum and members.", info))
    cluster.add_command(command(
        "health", "Whether the cluster is healthy, and every issue found (exit 1 if unhealthy).", health,
        opt("--max-lag", type=click.IntRange(min=0), default=1000, show_default=True, metavar="N",
            help="Report a follower this many entries behind the leader as lagging."),
        opt("--stuck-after", type=click.FloatRange(min=0, min_open=True, max=3600), default=None, metavar="SECONDS",
            help="Report a member behind the leader whose replication has not moved for this long as stuck "
                 "(default: the leader's stuck_after, 10).")))
    cluster.add_command(command("members", "List the members, with replication progress.", members))
    cluster.add_command(command("member", "Details of member ID, with a learner's catch-up status.", member,
                                arg("id")))
    cluster.add_command(command("leader", "The current leader and its addresses.", leader))
    add_change_commands(cluster)
