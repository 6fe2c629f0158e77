"""The ``kvctl`` command: data, cluster status and membership, maintenance, a local dev cluster.

Exit codes: 0 success; 1 refused or failed; 2 bad usage; 3 no reachable cluster or timeout.
With ``--json`` every error, usage errors included, is one ``{"error": ...}`` document.
"""
from __future__ import annotations

import json
import sys

import click

from keyval import __version__
from kvctl.backup import add_backup_commands
from kvctl.cluster import add_cluster_commands
from kvctl.data import add_data_commands
from kvctl.local import add_local_commands
from kvctl.maintenance import add_maintenance_commands
from kvctl.node_status import status
from kvctl.options import command, group


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


def build_cli() -> click.Group:
    cli = group("kvctl", "Control and query a KeyVal cluster.", Kvctl)
    click.version_option(__version__, "--version", prog_name="kvctl", message="%(prog)s %(version)s")(cli)

    add_data_commands(cli)

    add_cluster_commands(cli)
    cli.add_command(command("status", "Each endpoint's own status: role, term, indexes, its version and its "
                            "peers' versions (--json: the nodes' status documents).", status))
    add_maintenance_commands(cli)
    add_backup_commands(cli)
    add_local_commands(cli)
    return cli


def main(argv: list[str] | None = None) -> None:
    build_cli().main(args=argv, prog_name="kvctl")


if __name__ == "__main__":
    main()
