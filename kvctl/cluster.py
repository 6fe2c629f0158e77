"""``kvctl cluster ...``: status (info, health, members, member, leader) and membership."""
from __future__ import annotations

import click

from kvctl.options import arg, group
from kvctl.stubs import stub


def add_cluster_commands(cli: click.Group) -> None:
    cluster = group("cluster", "Cluster status and membership.")
    cli.add_command(cluster)
    stub(cluster, "info", "Leader, term, commit index, quorum and members.")
    stub(cluster, "health", "Whether the cluster is healthy (exit 1 if not).")
    stub(cluster, "members", "List the members.")
    stub(cluster, "member", "Details of one member, including learner catch-up.", arg("id"))
    stub(cluster, "leader", "The current leader.")
    stub(cluster, "add", "Add node ID at peer address ADDR as a learner.", arg("id"), arg("addr"))
    stub(cluster, "promote", "Promote a caught-up learner to voter.", arg("id"))
    stub(cluster, "remove", "Remove a member.", arg("id"))
    stub(cluster, "replace", "Add NEW at ADDR, wait for it to catch up, promote it, remove OLD.",
         arg("old"), arg("new"), arg("addr"))
    stub(cluster, "transfer", "Transfer leadership to member ID.", arg("id"))
