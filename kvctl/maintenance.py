"""``kvctl snapshot create|list``, ``compact``, ``backup PATH``, ``restore PATH``."""
from __future__ import annotations

import click

from kvctl.options import arg, group, opt
from kvctl.stubs import stub


def add_maintenance_commands(cli: click.Group) -> None:
    snapshot = group("snapshot", "Snapshots of the state machine.")
    cli.add_command(snapshot)
    stub(snapshot, "create", "Take a snapshot now.")
    stub(snapshot, "list", "List the snapshots.")
    stub(cli, "compact", "Discard log entries covered by the latest snapshot.")
    stub(cli, "backup", "Write a backup of the cluster's data to PATH.", arg("path"))
    stub(cli, "restore", "Restore the cluster's data from the backup at PATH.", arg("path"),
         opt("--yes", is_flag=True, help="Don't ask for confirmation."))
