"""The ``kvctl`` command: data, cluster status and membership, maintenance, a local dev cluster.

Exit codes: 0 success; 1 refused or failed; 2 bad usage; 3 no reachable cluster or timeout.
With ``--json`` every error, usage errors included, is one ``{"error": ...}`` document.

Operators' shell loops and Ansible call kvctl hundreds of times, so a command imports only its
own module: the table below names where each command lives, and ``kvctl --help`` lists them
from it without importing any.
"""
from __future__ import annotations

import importlib
import json
import sys

import click

from keyval import __version__
from kvctl.options import group

#: name -> ("module:function" that adds the command, and its siblings, to the root group;
#: the first sentence of its help, which ``kvctl --help`` shows). tests/kvctl/test_kvctl_lazy.py
#: holds each sentence to the one the command itself has.
COMMANDS: dict[str, tuple[str, str]] = {
    "backup": ("kvctl.backup:add_backup_commands",
               "Write a consistent backup of the cluster's data to PATH (a .tar.gz)."),
    "cluster": ("kvctl.cluster:add_cluster_commands", "Cluster status and membership."),
    "compact": ("kvctl.maintenance:add_maintenance_commands",
                "Snapshot every member at its applied index and discard its log up to it."),
    "delete": ("kvctl.data:add_data_commands", "Delete KEY (exit 0 whether or not it existed; says which)."),
    "get": ("kvctl.data:add_data_commands", "Print the value of KEY (exit 1 if it is missing)."),
    "local": ("kvctl.local:add_local_commands", "A development cluster of background processes on this machine."),
    "put": ("kvctl.data:add_data_commands", "Store VALUE under KEY (prints OK)."),
    "restore": ("kvctl.backup:add_backup_commands",
                "Replace all the cluster's data with the backup at PATH (checked first)."),
    "scan": ("kvctl.data:add_data_commands", "List keys and values in key order, one `key value` a line."),
    "snapshot": ("kvctl.maintenance:add_maintenance_commands", "Snapshots of the state machine."),
    "status": ("kvctl.node_status:add_status_command",
               "Each endpoint's own status: role, term, indexes, its version and its peers' versions "
               "(--json: the nodes' status documents)."),
}


class Kvctl(click.Group):
    """The root group: loads a command's module when the command is used, and reports click's
    usage errors as JSON when ``--json`` was given."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in COMMANDS:
            module, _, function = COMMANDS[name][0].partition(":")
            getattr(importlib.import_module(module), function)(self)
        return self.commands.get(name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # As click's own, from the table: a stand-in command per name shortens the sentence
        # to the terminal's width exactly as the real command would.
        limit = formatter.width - 6 - max(map(len, COMMANDS))
        rows = [(name, click.Command(name, help=COMMANDS[name][1]).get_short_help_str(limit))
                for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

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


def build_cli() -> click.Group:
    cli = group("kvctl", "Control and query a KeyVal cluster.", Kvctl)
    click.version_option(__version__, "--version", prog_name="kvctl", message="%(prog)s %(version)s")(cli)
    return cli


def main(argv: list[str] | None = None) -> None:
    build_cli().main(args=argv, prog_name="kvctl")


if __name__ == "__main__":
    main()
