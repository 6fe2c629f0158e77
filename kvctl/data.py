"""``kvctl put | get | delete | scan``: the data commands.

Keys and values are taken as typed (bytes, so non-UTF-8 arguments survive) and shown as
UTF-8 text, with backslash escapes for bytes that aren't valid UTF-8.
"""
from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, TypeVar

import click

from keyval.client import AsyncClient
from keyval.errors import Unreachable
from kvctl.endpoints import resolve
from kvctl.options import arg, command, opt
from kvctl.output import UNREACHABLE, Failure, emit, handles_errors, raw, settings, text
from kvctl.route import to_leader

T = TypeVar("T")


def with_client(call: Callable[[AsyncClient], Awaitable[T]]) -> T:
    """Run one request against the cluster kvctl was pointed at, within --timeout."""
    s = settings()
    endpoints = resolve(s)
    timeout = s.request_timeout()

    async def run() -> T:
        async with to_leader(endpoints.addresses, timeout) as client:
            return await call(client)

    try:
        return asyncio.run(run())
    except Unreachable:
        raise Failure(f"no KeyVal node answered at {', '.join(endpoints.addresses)} within {timeout:g}s "
                      f"(endpoints from {endpoints.source})", UNREACHABLE, "unreachable") from None


@handles_errors
def put(key: str, value: str) -> None:
    revision = with_client(lambda c: c.put(raw(key), raw(value)))
    if settings().json:
        emit({"key": text(raw(key)), "value": text(raw(value)), "revision": revision})
    else:
        click.echo("OK")


@handles_errors
def get(key: str) -> None:
    item = with_client(lambda c: c.get_item(raw(key)))
    if item is None:
        raise Failure(f"key not found: {text(raw(key))}", code="not_found")
    if settings().json:
        emit({"key": text(item.key), "value": text(item.value), "revision": item.revision})
    else:
        click.echo(text(item.value))


@handles_errors
def delete(key: str) -> None:
    existed, revision = with_client(lambda c: c.delete_with_revision(raw(key)))
    shown = text(raw(key))
    if settings().json:
        emit({"key": shown, "deleted": existed, "revision": revision})
    else:
        click.echo(f"deleted {shown}" if existed else f"{shown} did not exist; nothing deleted")


@handles_errors
def scan(prefix: str, limit: int | None) -> None:
    items = with_client(lambda c: c.scan(raw(prefix), limit or 0))
    if settings().json:
        emit([{"key": text(i.key), "value": text(i.value), "revision": i.revision} for i in items])
        return
    for item in items:
        click.echo(f"{text(item.key)} {text(item.value)}")


def add_data_commands(cli: click.Group) -> None:
    cli.add_command(command("put", "Store VALUE under KEY (prints OK).", put, arg("key"), arg("value")))
    cli.add_command(command("get", "Print the value of KEY (exit 1 if it is missing).", get, arg("key")))
    cli.add_command(command("delete", "Delete KEY (exit 0 whether or not it existed; says which).",
                            delete, arg("key")))
    cli.add_command(command(
        "scan", "List keys and values in key order, one `key value` a line.", scan,
        opt("--prefix", default="", metavar="P", help="Only keys starting with P."),
        opt("--limit", type=click.IntRange(min=1), metavar="N", help="At most N keys.")))
