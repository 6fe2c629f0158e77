"""Building blocks of kvctl's commands: the global options every command and group carries.

``--endpoints``, ``--json``, ``--timeout`` and the credentials work before or after the subcommand, so each
command (and group) declares them; only a value typed on the command line is remembered in
the root's Settings, so a default on the subcommand can't undo a group option. The last one
given wins.
"""
from __future__ import annotations

from typing import Callable

import click
from click.core import ParameterSource

from kvctl.output import DEFAULT_TIMEOUT, settings


def _remember(ctx: click.Context, param: click.Parameter, value):
    if ctx.get_parameter_source(param.name) is ParameterSource.COMMANDLINE:
        setattr(settings(ctx), param.name, value)
    return value


def _endpoints(ctx: click.Context, param: click.Parameter, value: str | None):
    if value is None:
        return None
    from kvctl.endpoints import parse_list  # only when given: `kvctl --version` reads no endpoints

    try:
        endpoints = parse_list(value, "--endpoints")
    except ValueError as exc:
        raise click.BadParameter(str(exc).removeprefix("--endpoints: ")) from None
    if not endpoints:
        raise click.BadParameter("no endpoint given")
    return _remember(ctx, param, endpoints)


def global_options() -> list[click.Option]:
    return [
        click.Option(["--endpoints"], metavar="HOST:PORT[,HOST:PORT...]", expose_value=False,
                     callback=_endpoints, help="Cluster client addresses (default: $KVCTL_ENDPOINTS, "
                     "then ./.keyval/endpoints of a local dev cluster)."),
        click.Option(["--json"], is_flag=True, expose_value=False, callback=_remember,
                     help="Print one JSON document on stdout."),
        click.Option(["--timeout"], type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
                     expose_value=False, callback=_remember,
                     help=f"Give up after this long (default {DEFAULT_TIMEOUT:g}; `local up`/`start` 20)."),
        click.Option(["--cacert"], metavar="FILE", expose_value=False, callback=_remember,
                     help="Connect with TLS, checking the nodes' certificates against this CA."),
        click.Option(["--cert", "cert_file"], metavar="FILE", expose_value=False, callback=_remember,
                     help="Client certificate for mutual TLS (with --key)."),
        click.Option(["--key", "key_file"], metavar="FILE", expose_value=False, callback=_remember,
                     help="Private key of --cert."),
        click.Option(["--token-file"], metavar="FILE", expose_value=False, callback=_remember,
                     help="File holding the client token (default: $KVCTL_TOKEN; a `local up --secure` "
                     "cluster's admin token when run in its directory)."),
    ]


def group(name: str, help: str, cls: type[click.Group] = click.Group) -> click.Group:
    return cls(name, help=help, params=global_options(),
               context_settings={"help_option_names": ["-h", "--help"]})


def command(name: str, help: str, callback: Callable, *params: click.Parameter) -> click.Command:
    return click.Command(name, help=help, callback=callback, params=[*params, *global_options()])


def arg(name: str, **kw) -> click.Argument:
    return click.Argument([name], **kw)


def opt(*decls: str, **kw) -> click.Option:
    return click.Option(list(decls), **kw)
