"""``kvctl cluster replace OLD NEW ADDR``: add NEW → wait for catch-up → promote → remove OLD.

Each step first looks at the membership and skips what is already done, so a replace that
was interrupted (Ctrl-C, a lost connection, a leader change) is finished by running the same
command again. Progress goes to stdout, or to stderr with ``--json`` (whose one document,
the outcome, goes to stdout).
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

import click

from keyval.client import AsyncClient
from keyval.errors import RequestRefused
from kvctl.cluster_client import add_member, admin, check_usage, run
from kvctl.output import UNREACHABLE, USAGE, Failure, emit, handles_errors, settings

REPLACE_TIMEOUT = 300.0
PROGRESS_EVERY = 2.0
POLL = 0.25
#: refusals that pass by themselves: another change (e.g. the auto-promotion) is committing
TRANSIENT = ("in progress", "has not caught up", "has not committed an entry of its term")


def _say(line: str) -> None:
    click.echo(line, err=settings().json)


async def _members(client: AsyncClient, deadline: float) -> dict[str, dict[str, Any]]:
    doc = await admin(client, deadline, "cluster_status")
    return {m["id"]: m for m in doc["members"]}


async def _replace(client: AsyncClient, deadline: float, old: str, new: str, addr: str,
                   threshold: int | None) -> dict[str, Any]:
    steps: dict[str, str] = {}
    members = await _members(client, deadline)
    if old not in members and new not in members:
        raise Failure(f"{old} is not a member of the cluster (members: {', '.join(sorted(members))}); "
                      f"nothing to replace")
    _say(f"Replacing {old} with {new} ({addr})")

    if new in members:
        steps["add"] = f"{new} is already a {members[new]['type'].lower()}: skipped"
    else:
        result = await add_member(client, deadline, new, addr, catchup_threshold=threshold)
        steps["add"] = result["message"].split(";")[0]
    _say(f"[1/4] {steps['add']}")

    members = await _members(client, deadline)
    if new not in members:
        raise Failure(f"{new} is not a member any more (was it removed meanwhile?); run the replace again")
    if members[new]["type"] == "Voter":
        steps["catch_up"] = steps["promote"] = f"{new} is already a voter: skipped"
        _say(f"[2/4] {steps['catch_up']}")
    else:
        steps["catch_up"], steps["promote"] = await _catch_up_and_promote(client, deadline, new, threshold)
        _say(f"[2/4] {steps['catch_up']}")
    _say(f"[3/4] {steps['promote']}")

    members = await _members(client, deadline)
    if old in members:
        result = await _retrying(lambda: admin(client, deadline, "remove", id=old, force=True), deadline)
        steps["remove"] = result["message"]
    else:
        steps["remove"] = f"{old} is not a member any more: skipped"
    _say(f"[4/4] {steps['remove']}")

    doc = await admin(client, deadline, "cluster_status")
    return {"old": old, "new": new, "address": addr, "steps": steps, "voters": doc["voters"],
            "learners": doc["learners"], "quorum": doc["quorum"], "leader": doc["leader"],
            "message": f"replaced {old} with {new}: voters {', '.join(doc['voters'])} (quorum {doc['quorum']})"}


async def _catch_up_and_promote(client: AsyncClient, deadline: float, new: str,
                                threshold: int | None) -> tuple[str, str]:
    """Wait until NEW is caught up, then promote it (or find it promoted automatically)."""
    started = last_said = time.monotonic()
    said_waiting = False
    while True:
        m = (await _members(client, deadline)).get(new)
        if m is None:
            raise Failure(f"{new} was removed while it was catching up; run the replace again")
        waited = time.monotonic() - started
        if m["type"] == "Voter":
            return f"{new} caught up in {waited:.1f}s", f"{new} was promoted to voter automatically"
        caught_up = m["caught_up"] if threshold is None else (m["match_index"] > 0 and m["lag"] <= threshold)
        if caught_up:
            try:
                result = await admin(client, deadline, "promote", id=new, catchup_threshold=threshold)
            except RequestRefused as exc:
                if not any(t in str(exc) for t in TRANSIENT):
                    raise
            else:
                return f"{new} caught up in {waited:.1f}s", result["message"]
        elif not said_waiting or time.monotonic() - last_said >= PROGRESS_EVERY:
            _say(f"[2/4] waiting for {new} to catch up: {m['lag']} entries behind "
                 f"(match index {m['match_index']}, {m['bytes_replicated']} bytes replicated)")
            said_waiting, last_said = True, time.monotonic()
        if time.monotonic() + POLL >= deadline:
            raise Failure(f"{new} did not catch up in time ({m['lag']} entries behind); run the same "
                          f"replace again to keep waiting", UNREACHABLE, "timeout")
        await asyncio.sleep(POLL)


async def _retrying(attempt, deadline: float) -> dict[str, Any]:
    while True:
        try:
            return await attempt()
        except RequestRefused as exc:
            if not any(t in str(exc) for t in TRANSIENT) or time.monotonic() + POLL >= deadline:
                raise
        await asyncio.sleep(POLL)


@handles_errors
def replace(old: str, new: str, addr: str, catchup_threshold: int | None) -> None:
    check_usage((old, new), addr)
    if old == new:
        raise Failure("OLD and NEW must be different members", USAGE, "usage")
    budget = settings().timeout or REPLACE_TIMEOUT
    result = run(lambda client, deadline: _replace(client, deadline, old, new, addr, catchup_threshold), budget)
    if settings().json:
        emit(result)
    else:
        click.echo(result["message"])
