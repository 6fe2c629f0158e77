"""The ``kvctl`` command: data, cluster status and membership, maintenance, a local dev cluster.

Exit codes: 0 success; 1 refused or failed; 2 bad usage; 3 no reachable cluster or timeout.
The global options ``--endpoints``, ``--json`` and ``--timeout`` work before or after the
subcommand, so every command (and group) carries them; the last one given wins.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import click
from click.core import ParameterSource

from keyval import __version__
from keyval.config import parse_address
from keyval.errors import ConfigError

DEFAULT_TIMEOUT = 5.0
NOT_YET = "not implemented yet (arrives with the node runtime, issue #5)"


@dataclass
class Settings:
    endpoints: list[str] | None = None  # None: $KVCTL_ENDPOINTS, then ./.keyval/endpoints
    json: bool = False
    timeout: float = DEFAULT_TIMEOUT


def _settings(ctx: click.Context) -> Settings:
    return ctx.find_root().ensure_object(Settings)


def _remember(ctx: click.Context, param: click.Parameter, value):
    # Only what was typed counts, so a default on the subcommand can't undo a group option.
    if ctx.get_parameter_source(param.name) is ParameterSource.COMMANDLINE:
        setattr(_settings(ctx), param.name, value)
    return value


def _endpoints(ctx: click.Context, param: click.Parameter, value: str | None):
    if value is None:
        return None
    try:
        endpoints = [parse_address(e.strip(), "--endpoints") for e in value.split(",") if e.strip()]
    except ConfigError as exc:
        raise click.BadParameter(str(exc).removeprefix("--endpoints: ")) from None
    if not endpoints:
        raise click.BadParameter("no endpoint given")
    return _remember(ctx, param, endpoints)


def global_options() -> list[click.Option]:
    return [
        click.Option(["--endpoints"], metavar="HOST:PORT[,HOST:PORT...]", expose_value=False,
                     callback=_endpoints, help="Cluster client addresses (default: $KVCTL_ENDPOINTS, "
                     "then the local dev cluster's)."),
        click.Option(["--json"], is_flag=True, expose_value=False, callback=_remember,
                     help="Print one JSON document on stdout."),
        click.Option(["--timeout"], type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
                     expose_value=False, callback=_remember,
                     help=f"Give up after this long (default {DEFAULT_TIMEOUT:g})."),
    ]


def not_implemented(**_) -> None:
    ctx = click.get_current_context()
    message = f"{ctx.command_path}: {NOT_YET}"
    if _settings(ctx).json:
        click.echo(json.dumps({"error": {"code": "not_implemented", "message": message}}))
    else:
        click.echo(message, err=True)
    ctx.exit(1)


def group(name: str, help: str) -> click.Group:
    return click.Group(name, help=help, params=global_options(),
                       context_settings={"help_option_names": ["-h", "--help"]})


def stub(parent: click.Group, name: str, help: str, *params: click.Parameter) -> None:
    parent.add_command(click.Command(name, help=help, callback=not_implemented,
                                     params=[*params, *global_options()]))


def arg(name: str, **kw) -> click.Argument:
    return click.Argument([name], **kw)


def opt(*decls: str, **kw) -> click.Option:
    return click.Option(list(decls), **kw)


def local_dir() -> click.Option:
    return opt("--dir", default=".keyval", show_default=True, metavar="DIR",
               help="Where the dev cluster keeps its data, logs and endpoints.")


def build_cli() -> click.Group:
    cli = group("kvctl", "Control and query a KeyVal cluster.")
    click.version_option(__version__, "--version", prog_name="kvctl", message="%(prog)s %(version)s")(cli)

    stub(cli, "put", "Store VALUE under KEY.", arg("key"), arg("value"))
    stub(cli, "get", "Print the value of KEY (exit 1 if it is missing).", arg("key"))
    stub(cli, "delete", "Delete KEY.", arg("key"))
    stub(cli, "scan", "List keys and values in key order.",
         opt("--prefix", default="", metavar="P", help="Only keys starting with P."),
         opt("--limit", type=click.IntRange(min=1), metavar="N", help="At most N keys."))

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

    local = group("local", "A development cluster of background processes on this machine.")
    cli.add_command(local)
    stub(local, "up", "Start a new N-node cluster.",
         opt("--nodes", type=click.IntRange(min=1), default=3, show_default=True, metavar="N"),
         local_dir(),
         opt("--base-port", type=click.IntRange(1, 64535), default=7000, show_default=True, metavar="P",
             help="nodeN listens on P+N (peer) and P+1000+N (client)."))
    stub(local, "start", "Start node ID (a new one starts uninitialised).", arg("id"), local_dir())
    stub(local, "stop", "Stop node ID.", arg("id"), local_dir())
    stub(local, "status", "Show the local nodes and whether they run.", local_dir())
    stub(local, "down", "Stop every local node.", local_dir())
    return cli


def main(argv: list[str] | None = None) -> None:
    build_cli().main(args=argv, prog_name="kvctl")


if __name__ == "__main__":
    main()
