"""The ``kvctl`` command: data, cluster status and membership, maintenance, a local dev cluster.

Exit codes: 0 success; 1 refused or failed; 2 bad usage; 3 no reachable cluster or timeout.
With ``--json`` every error, usage errors included, is one ``{"error": ...}`` document.
"""
from __future__ import annotations

import json
import sys

import click

from keyval import __version__
from kvctl.data import add_data_commands
from kvctl.local import add_local_commands
from kvctl.options import arg, global_options, group, opt
from kvctl.output import settings

NOT_YET = "not implemented yet (arrives with the node runtime, issue #5)"


class Kvctl(click.Group):
    """The root group; it reports click's usage errors as JSON when ``--json`` was given."""

    def main(self, args=None, prog_name=None, **extra):
        args = list(sys.argv[1:] if args is None else args)
        try:
            code = super().main(args, prog_name, standalone_mode=False, **extra)
        except click.ClickException as exc:
            if "--json" in args:
                usage = exc.exit_code == 2
                click.echo(json.dumps({"error": {"code": "usage" if usage else "failed", "message": exc.format_message()}}))
            else:
                exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        # Without standalone mode click returns ctx.exit()'s code (our callbacks return None).
        sys.exit(code if isinstance(code, int) else 0)


def not_implemented(**_) -> None:
    ctx = click.get_current_context()
    message = f"{ctx.command_path}: {NOT_YET}"
    if settings(ctx).json:
        click.echo(json.dumps({"error": {"code": "not_implemented", "message": message}}))
    else:
        click.echo(message, err=True)
    ctx.exit(1)


def stub(parent: click.Group, name: str, help: str, *params: click.Parameter) -> None:
    parent.add_command(click.Command(name, help=help, callback=not_implemented,
                                     params=[*params, *global_options()]))


def build_cli() -> click.Group:
    cli = group("kvctl", "Control and query a KeyVal cluster.", Kvctl)
    click.version_option(__version__, "--version", prog_name="kvctl", message="%(prog)s %(version)s")(cli)

    add_data_commands(cli)

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

    snapshot = group("snapshot", "Snapshots of the state machine.")
    cli.add_command(snapshot)
    stub(snapshot, "create", "Take a snapshot now.")
    stub(snapshot, "list", "List the snapshots.")
    stub(cli, "compact", "Discard log entries covered by the latest snapshot.")

    stub(cli, "backup", "Write a backup of the cluster's data to PATH.", arg("path"))
    stub(cli, "restore", "Restore the cluster's data from the backup at PATH.", arg("path"),
         opt("--yes", is_flag=True, help="Don't ask for confirmation."))

    add_local_commands(cli)
    return cli


def main(argv: list[str] | None = None) -> None:
    build_cli().main(args=argv, prog_name="kvctl")


if __name__ == "__main__":
    main()
