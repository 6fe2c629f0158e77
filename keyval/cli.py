"""The ``keyval`` command: the server and its offline tools.

Exit codes: 0 success, 1 the operation failed (for ``keyval plugins``: a plugin failed to load),
2 bad usage (click's own and ours).
"""
from __future__ import annotations

import json
import os
import logging
import sys
from pathlib import Path

import click

from keyval import __version__
from keyval.runtime import event_loop
from keyval.config import NodeConfig, merge_settings, node_config
from keyval.plugin_api.contracts import IncompleteBackend
from keyval.errors import KeyvalError, StorageError
from keyval.peer.secret import with_peer_secret
from keyval.plugin_api import loading as plugin_loading
from keyval.plugin_api.loading import build_plugin_manager, choose_storage, choose_transport, list_plugins

USAGE_ERROR = 2


def fail(ctx: click.Context, message: str, code: int = 1) -> None:
    """One line on stderr, prefixed by the command, then exit: no traceback, no usage dump."""
    click.echo(f"{ctx.command_path}: {message}", err=True)
    ctx.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="keyval", message="%(prog)s %(version)s")
def cli() -> None:
    """KeyVal: a strongly consistent key-value store replicated with Raft.

    `keyval serve` runs one node; `kvctl` talks to a running cluster.
    """


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def plugins(ctx: click.Context, as_json: bool) -> None:
    """List the storage and transport plugins found, built-in and third-party.

    Exits 1 if any plugin failed to load (each is listed with its reason), else 0.
    """
    # Failures are part of this command's output; don't repeat them as log warnings.
    logging.getLogger(plugin_loading.__name__).setLevel(logging.ERROR)
    rows, failures = list_plugins(build_plugin_manager())
    if as_json:
        click.echo(json.dumps({"plugins": rows, "failures": failures}, indent=2))
    else:
        columns = ("kind", "name", "package", "version", "description")
        table = [[c.upper() for c in columns]] + [[row[c] for c in columns] for row in rows]
        widths = [max(len(line[i]) for line in table) for i in range(len(columns) - 1)]
        for line in table:
            click.echo("  ".join(cell.ljust(w) for cell, w in zip(line, widths)) + "  " + line[-1])
        if failures:
            click.echo(f"\n{len(failures)} plugin(s) failed to load:")
            for failure in failures:
                click.echo(f"  {failure}")
    if failures:
        # stdout may go to a parser: the exit code and this line say that something is wrong.
        where = "in failures" if as_json else "above"
        fail(ctx, f"{len(failures)} plugin(s) failed to load (listed {where})")


@cli.command()
@click.option("--config", "config_file", metavar="FILE", help="YAML file with the same settings (underscored keys).")
@click.option("--id", "id", metavar="ID", help="This node's id, e.g. node1.")
@click.option("--peer-addr", metavar="HOST:PORT", help="Raft address other nodes reach this node on.")
@click.option("--client-addr", metavar="HOST:PORT", help="Address kvctl and clients connect to.")
@click.option("--data-dir", metavar="DIR", help="Where the log, snapshots and state live.")
@click.option("--metrics-addr", metavar="HOST:PORT", help="Serve Prometheus /metrics and /health here.")
@click.option("--bootstrap", metavar="ID=HOST:PORT,...", help="Initial voters of a new cluster.")
@click.option("--transport", metavar="NAME", help="Transport backend (default tcp; see `keyval plugins`).")
@click.option("--storage", metavar="NAME", help="Storage backend (default segment; see `keyval plugins`).")
@click.option("--catchup-threshold", type=click.IntRange(min=0), metavar="N",
              help="Log entries a learner may lag and still count as caught up (default 100).")
@click.option("--log-file", metavar="PATH", help="Log here instead of stderr.")
@click.option("--log-level", metavar="LEVEL", help="DEBUG, INFO (default), WARNING, ERROR or CRITICAL.")
@click.option("--secret-file", metavar="PATH",
              help="The cluster secret (mode 0600) that authenticates peer traffic; see docs/security.md.")
@click.option("--insecure-peers", is_flag=True, default=None,
              help="Run without a cluster secret: anyone who reaches the peer port can speak for the cluster.")
@click.option("--client-cert", metavar="FILE", help="TLS certificate for the client port.")
@click.option("--client-key", metavar="FILE", help="Private key of --client-cert.")
@click.option("--client-ca", metavar="FILE", help="CA whose certificates clients must present (mutual TLS).")
@click.option("--tokens-file", metavar="FILE", help="Client tokens with roles (read, readwrite, admin).")
@click.option("--max-client-connections", type=int, metavar="N",
              help="Client connections served at once; more are refused (default 4096, lowered to fit ulimit -n).")
@click.option("--client-idle-timeout", type=float, metavar="SECONDS",
              help="Close a client connection idle, or inside one unfinished request, this long (default 300).")
@click.option("--client-buffer-bytes", type=int, metavar="BYTES",
              help="Bytes of unfinished requests all client connections may hold together (default 256 MiB).")
@click.option("--space-reserve", metavar="SIZE",
              help="Free space kept on the data dir's filesystem: below it client writes are refused "
                   "(NOSPACE alarm) until space is freed (default 64MiB; 0: only when a write fails).")
@click.option("--check-config", is_flag=True,
              help="Only check the settings and the files they name (secret, TLS, tokens): exit 0 if good, 2 if not.")
@click.pass_context
def serve(ctx: click.Context, config_file: str | None, check_config: bool, **flags) -> None:
    """Run one KeyVal node in the foreground (SIGTERM or SIGINT stops it cleanly)."""
    try:
        settings = merge_settings(config_file, flags)
        if "event_loop" not in settings and os.environ.get("KEYVAL_EVENT_LOOP"):
            settings["event_loop"] = os.environ["KEYVAL_EVENT_LOOP"]
        loaded = build_plugin_manager()
        # Backends first: a wrong name is the likeliest mistake and its message lists the choices.
        choose_storage(loaded, str(settings.get("storage", NodeConfig.storage)))
        choose_transport(loaded, str(settings.get("transport", NodeConfig.transport)))
        config = with_peer_secret(node_config(settings), create=not check_config)
        event_loop.loop_factory(config.event_loop)  # uvloop asked for but missing: say so now
        if check_config:
            from keyval.clientport.auth import ClientSecurity

            ClientSecurity.from_config(config, None)  # reads the secret, tokens and TLS files
    except KeyvalError as exc:
        fail(ctx, str(exc), USAGE_ERROR)
    if check_config:
        click.echo(f"{ctx.command_path}: {config_file or 'the settings'}: good (node {config.id}, "
                   f"peers {config.peer_addr}, clients {config.client_addr})")
        ctx.exit(0)
    from keyval.server import run, setup_logging

    try:
        setup_logging(config)
    except KeyvalError as exc:
        fail(ctx, str(exc), USAGE_ERROR)
    try:
        code = event_loop.run(run(config, loaded), config.event_loop)
    except IncompleteBackend as exc:  # the chosen plugin is unusable: fix the choice, like a bad flag
        fail(ctx, str(exc), USAGE_ERROR)
    except KeyvalError as exc:
        fail(ctx, str(exc))
    ctx.exit(code)


@cli.command()
@click.option("--data-dir", required=True, metavar="DIR", help="The data dir of the surviving node.")
@click.option("--force-new-cluster", is_flag=True,
              help="Rewrite the membership so this node alone is the voter, keeping its data.")
@click.option("--id", "node_id", metavar="ID", help="This node's id (default: the one its data dir records).")
@click.option("--storage", default=NodeConfig.storage, show_default=True, metavar="NAME",
              help="The storage backend the node runs with.")
@click.option("--dry-run", is_flag=True, help="Only show what the data dir holds and what would change.")
@click.pass_context
def recover(ctx: click.Context, data_dir: str, force_new_cluster: bool, node_id: str | None, storage: str,
            dry_run: bool) -> None:
    """Offline recovery when quorum is lost for good (the node must be stopped).

    See docs/recovery.md for the whole procedure.
    """
    if not force_new_cluster:
        fail(ctx, "nothing to do: pass --force-new-cluster to make this node the only voter", USAGE_ERROR)
    if not Path(data_dir).is_dir():
        fail(ctx, f"data dir {data_dir!r} does not exist")
    from keyval.plugin_api.contracts import open_backend
    from keyval.ops.recover import force_new_cluster as make_sole_voter
    from keyval.plugin_api.storage import Storage

    try:
        plugins = build_plugin_manager()
        backend = choose_storage(plugins, storage)
        recovery = make_sole_voter(data_dir, lambda d: open_backend(
            plugins, "storage", storage, Storage, lambda: backend.factory(d, {})), node_id, dry_run)
    except IncompleteBackend as exc:  # as keyval serve: the chosen plugin is unusable, like a bad flag
        fail(ctx, str(exc), USAGE_ERROR)
    except (KeyvalError, StorageError, OSError) as exc:
        fail(ctx, str(exc))
    except Exception as exc:  # noqa: BLE001 - a damaged data dir gets one line, not a traceback
        fail(ctx, f"recovery failed on data dir {data_dir!r}: {type(exc).__name__}: {exc}; restore this "
                  f"node from a backup or recover another survivor")
    for line in recovery.describe():
        click.echo(line)


@cli.group()
def secret() -> None:
    """Cluster secrets: the key every member authenticates its peer traffic with."""


@secret.command("create")
@click.argument("path", metavar="FILE")
@click.pass_context
def secret_create(ctx: click.Context, path: str) -> None:
    """Write a new random cluster secret to FILE (mode 0600; never overwrites).

    Copy it to every node of the cluster and start each with --secret-file FILE.
    """
    from keyval.peer.secret import create_secret

    try:
        create_secret(path)
    except KeyvalError as exc:
        fail(ctx, str(exc))
    click.echo(f"wrote a new cluster secret to {path}; copy it (mode 0600) to every node and start each with "
               f"--secret-file")


@cli.command("plugin-check")
@click.argument("name")
@click.option("--base-port", type=click.IntRange(1, 64535 - 10), default=None, metavar="P",
              help="nodeN listens on P+N (peer) and P+1000+N (client); default: a free range.")
@click.option("--dir", "workdir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Keep the cluster's data and logs here (default: a temporary dir, removed if every step passes).")
@click.pass_context
def plugin_check(ctx: click.Context, name: str, base_port: int | None, workdir: str | None) -> None:
    """Smoke-test storage plugin NAME on a real 3-node local cluster: write, restart a node,
    snapshot, compact, restart every node, read back. One line per step; exit 0 if all pass."""
    from keyval.plugin_check import run_plugin_check

    ctx.exit(run_plugin_check(name, base_port, workdir, click.echo))


@cli.command(
    add_help_option=False,  # `keyval simulate --help` is the simulator's help
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def simulate(ctx: click.Context, args: tuple[str, ...]) -> None:
    """Run the deterministic cluster simulator (arguments go to it; try --help)."""
    try:
        from keyval.testing.simulator import main as simulator_main
    except ModuleNotFoundError as exc:
        if exc.name not in ("keyval.testing", "keyval.testing.simulator"):
            raise
        fail(ctx, f"the simulator is not available ({exc})")
    ctx.exit(simulator_main([*args, *ctx.args]) or 0)


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="keyval")


if __name__ == "__main__":
    sys.exit(main())
