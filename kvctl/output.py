"""What every kvctl command shares: its settings, how it prints, how it fails.

Exit codes (the interface's): 0 success; 1 refused or failed; 2 bad usage; 3 no reachable
cluster or a timeout. An error is one sentence on stderr, or with ``--json`` one
``{"error": {"code", "message"}}`` document on stdout; never a traceback.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import click

if TYPE_CHECKING:
    from keyval.errors import ClientError

DEFAULT_TIMEOUT = 5.0

OK = 0
FAILED = 1
USAGE = 2
UNREACHABLE = 3


@dataclass
class Settings:
    endpoints: list[str] | None = None  # None: $KVCTL_ENDPOINTS, then ./.keyval/endpoints
    json: bool = False
    timeout: float | None = None  # None: each command's own default
    cacert: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    token_file: str | None = None  # None: $KVCTL_TOKEN, then a secure local cluster's admin token
    #: kvctl.connect's credentials, resolved once per command
    credentials: dict[str, Any] = field(default_factory=dict)

    def request_timeout(self) -> float:
        return DEFAULT_TIMEOUT if self.timeout is None else self.timeout


def settings(ctx: click.Context | None = None) -> Settings:
    ctx = ctx or click.get_current_context()
    return ctx.find_root().ensure_object(Settings)


class Failure(Exception):
    """A command could not do its job; ``message`` is one sentence a person can act on."""

    def __init__(self, message: str, exit_code: int = FAILED, code: str = "failed") -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.code = code


def from_client_error(exc: ClientError) -> Failure:
    # Here, not at the top: `kvctl --version` and `--help` load this module and talk to no
    # node; a command that does has loaded these (and the wire protocol's msgspec) already.
    from keyval.client.protocol import DENIED_MESSAGE, PERMISSION_DENIED
    from keyval.errors import RequestRefused, Timeout, Unreachable

    if isinstance(exc, Unreachable):
        return Failure(str(exc), UNREACHABLE, exc.code)
    if isinstance(exc, Timeout):
        return Failure(str(exc), UNREACHABLE, exc.code)
    if isinstance(exc, RequestRefused) and exc.code == PERMISSION_DENIED:
        return Failure(DENIED_MESSAGE, FAILED, PERMISSION_DENIED)  # nothing to add: it says nothing on purpose
    if isinstance(exc, RequestRefused):
        return Failure(f"the cluster refused: {exc}", FAILED, exc.code)
    return Failure(str(exc), FAILED, exc.code)


def report(ctx: click.Context, failure: Failure) -> None:
    if settings(ctx).json:
        click.echo(json.dumps({"error": {"code": failure.code, "message": failure.message}}))
    else:
        click.echo(f"{ctx.command_path}: {failure.message}", err=True)
    ctx.exit(failure.exit_code)


def handles_errors(fn: Callable) -> Callable:
    """Turn a command's Failure (and the client's errors) into the documented exit codes."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from keyval.errors import ClientError  # see from_client_error

        ctx = click.get_current_context()
        try:
            return fn(*args, **kwargs)
        except Failure as exc:
            report(ctx, exc)
        except ClientError as exc:
            report(ctx, from_client_error(exc))

    return wrapper


def emit(document: Any) -> None:
    click.echo(json.dumps(document, indent=2))


def text(data: bytes) -> str:
    """Keys and values are shown as UTF-8; bytes that aren't valid UTF-8 as backslash escapes."""
    return data.decode("utf-8", "backslashreplace")


def raw(arg: str) -> bytes:
    """A command-line argument as the bytes the user typed (Python decoded argv with
    surrogateescape, so non-UTF-8 bytes survive the round trip)."""
    return arg.encode("utf-8", "surrogateescape")


def table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)
