"""``kvctl cluster add | promote | remove | transfer | replace``: membership changes.

Each asks the leader, which checks the change against the membership policy
(``keyval.cluster.MembershipManager``) and refuses, in one sentence, what is unsafe. A
change that is already in place succeeds and says so, so every command is safe to repeat.
"""
from __future__ import annotations

import click

from kvctl.cluster_client import add_member, call, check_usage, run
from kvctl.cluster_replace import REPLACE_TIMEOUT, replace
from kvctl.options import arg, command, opt
from kvctl.output import DEFAULT_TIMEOUT, emit, handles_errors, settings

TRANSFER_TIMEOUT = 10.0


def _report(result: dict) -> None:
    if settings().json:
        emit(result)
    else:
        click.echo(result.get("message", "done"))


@handles_errors
def add(id: str, addr: str, catchup_threshold: int | None, auto_promote: bool | None) -> None:
    check_usage((id,), addr)
    budget = settings().request_timeout()
    _report(run(lambda client, deadline: add_member(client, deadline, id, addr, catchup_threshold=catchup_threshold,
                                                    auto_promote=auto_promote), budget))


@handles_errors
def promote(id: str, catchup_threshold: int | None) -> None:
    check_usage((id,))
    _report(call("promote", id=id, catchup_threshold=catchup_threshold))


@handles_errors
def remove(id: str, force: bool) -> None:
    check_usage((id,))
    # --force on the leader is a transfer and then a removal: by default allow for both.
    budget = (settings().timeout or 2 * DEFAULT_TIMEOUT) if force else None
    _report(call("remove", budget=budget, id=id, force=force or None))


@handles_errors
def transfer(id: str | None) -> None:
    check_usage((id,))
    _report(call("transfer", budget=settings().timeout or TRANSFER_TIMEOUT, id=id))


def _threshold() -> click.Option:
    return opt("--catchup-threshold", type=click.IntRange(min=0), metavar="N",
               help="Caught up means within N log entries of the leader (default: the leader's "
                    "catchup_threshold, 100 unless configured).")


def add_change_commands(cluster: click.Group) -> None:
    cluster.add_command(command(
        "add", "Add node ID, reachable at peer address ADDR, as a learner (non-voting); it is promoted to "
        "voter once caught up.", add, arg("id"), arg("addr"), _threshold(),
        opt("--auto-promote/--no-auto-promote", default=None,
            help="Promote it automatically once caught up (default: the leader's auto_promote, on).")))
    cluster.add_command(command(
        "promote", "Promote learner ID to voter (refused until it has caught up).", promote, arg("id"),
        _threshold()))
    cluster.add_command(command(
        "remove", "Remove member ID (refused if unsafe: the last voter, below min_voters, a quorum left "
        "without enough healthy voters, or the leader without --force).", remove, arg("id"),
        opt("--force", is_flag=True, help="If ID is the leader: transfer leadership away first, then remove it "
            f"(then the default --timeout is {2 * DEFAULT_TIMEOUT:g}, time for both).")))
    cluster.add_command(command(
        "replace", "Replace OLD by NEW at ADDR: add NEW as a learner, wait for it to catch up, promote it, "
        "remove OLD. Safe to run again after an interruption: steps already done are skipped. Takes at "
        f"most --timeout seconds in all (default {REPLACE_TIMEOUT:g}).", replace,
        arg("old"), arg("new"), arg("addr"), _threshold()))
    cluster.add_command(command(
        "transfer", "Transfer leadership to voter ID (default: the most caught-up healthy voter); waits "
        f"until it leads, at most --timeout seconds (default {TRANSFER_TIMEOUT:g}).", transfer,
        arg("id", required=False)))
