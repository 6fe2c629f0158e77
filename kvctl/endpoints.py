"""Which cluster kvctl talks to: ``--endpoints``, else ``$KVCTL_ENDPOINTS``, else the
endpoints file ``kvctl local up`` wrote in ``./.keyval`` (or the command's ``--dir``)."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

from keyval.wire_bounds import parse_address
from keyval.errors import ConfigError
from kvctl.localcluster import LocalCluster
from kvctl.output import FAILED, UNREACHABLE, USAGE, Failure, Settings

ENV = "KVCTL_ENDPOINTS"
LOCAL_DIR = ".keyval"
HOW_TO_POINT = (f"pass --endpoints HOST:PORT[,HOST:PORT...], set ${ENV}, "
                f"or start a local cluster here with `kvctl local up`")


@dataclass(frozen=True)
class Endpoints:
    addresses: list[str]
    source: str  # for messages: where the addresses came from


def parse_list(text: str, what: str) -> list[str]:
    """HOST:PORT items separated by commas or whitespace (the endpoints file has one a line)."""
    try:
        return [parse_address(item, what) for item in re.split(r"[,\s]+", text) if item]
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


def resolve(settings: Settings, local_dir: str | None = None) -> Endpoints:
    if settings.endpoints:
        return Endpoints(settings.endpoints, "--endpoints")
    env = os.environ.get(ENV, "").strip()
    if env:
        try:
            return Endpoints(parse_list(env, f"${ENV}"), f"${ENV}")
        except ValueError as exc:
            raise Failure(str(exc), USAGE, "usage") from None
    local = LocalCluster(local_dir or LOCAL_DIR)
    try:
        text = local.endpoints_file.read_text()
    except FileNotFoundError:
        raise Failure(f"no cluster to talk to: {HOW_TO_POINT}", UNREACHABLE, "no_endpoints") from None
    shown = f"{local.shown}/endpoints"
    try:
        addresses = parse_list(text, shown)
    except ValueError as exc:
        raise Failure(f"{exc}; fix it or run `kvctl local up` again", FAILED) from None
    if not addresses:
        raise Failure(f"{shown} lists no endpoint: {HOW_TO_POINT}", UNREACHABLE, "no_endpoints")
    spec = local.load()
    # Fail at once, not after the timeout, when the file belongs to a local cluster that's down.
    if spec is not None and not local.running(spec):
        raise Failure(f"the local cluster in {local.shown} is not running; start it with `kvctl local up` "
                      f"(or point kvctl elsewhere with --endpoints or ${ENV})", UNREACHABLE, "unreachable")
    return Endpoints(addresses, shown)
