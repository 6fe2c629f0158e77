"""``kvctl status``: each endpoint's own status document, as the node reports it.

Unlike ``kvctl cluster ...`` (the leader's view), this asks every node named by
``--endpoints`` about itself: its role, term, indexes, its KeyVal ``version`` and, in
``peer_versions``, the release and protocol version of every peer it has heard from — what a
rolling upgrade checks node by node. A node that does not answer is listed with an
``error``; exit 3 when none answers.
"""
from __future__ import annotations

import asyncio
from typing import Any

import click

from kvctl import connect
from kvctl.cluster_client import endpoints
from kvctl.options import command
from kvctl.output import UNREACHABLE, Failure, emit, handles_errors, settings, table


async def _ask(addresses: list[str], timeout: float) -> list[Any]:
    async with connect.client(addresses, timeout=timeout) as client:
        return await asyncio.gather(*(client.status(a) for a in addresses), return_exceptions=True)


@handles_errors
def status() -> None:
    where = endpoints()
    timeout = settings().request_timeout()
    replies = asyncio.run(_ask(where.addresses, timeout))
    docs: list[dict[str, Any]] = []
    for address, reply in zip(where.addresses, replies):
        if isinstance(reply, dict):
            # A node of 0.1.0 has no version field: null, as in `cluster members`.
            docs.append({"endpoint": address, "version": None, **reply})
        else:
            docs.append({"endpoint": address, "error": str(reply) or type(reply).__name__})
    if all("error" in d for d in docs):
        raise Failure(f"no KeyVal node answered at {', '.join(where.addresses)} within {timeout:g}s "
                      f"(endpoints from {where.source})", UNREACHABLE, "unreachable")
    if settings().json:
        emit(docs)
        return
    rows = [["ENDPOINT", "ID", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "VERSION"]]
    for d in docs:
        if "error" in d:
            rows.append([d["endpoint"], "-", f"unreachable: {d['error']}", "", "", "", "", ""])
        else:
            rows.append([d["endpoint"], d["id"], d["role"], str(d["term"]), d["leader"] or "-",
                         str(d["commit_index"]), str(d["applied_index"]), d["version"] or "-"])
    click.echo(table(rows))


def add_status_command(cli: click.Group) -> None:
    cli.add_command(command("status", "Each endpoint's own status: role, term, indexes, its version and its "
                            "peers' versions (--json: the nodes' status documents).", status))
