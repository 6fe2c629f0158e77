"""Placeholder commands for operations not built yet: they say so and exit 1."""
from __future__ import annotations

import json

import click

from kvctl.options import global_options
from kvctl.output import settings

NOT_YET = "not implemented yet (cluster operations arrive with issue #6)"


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
