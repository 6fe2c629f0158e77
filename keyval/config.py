"""A node's configuration: the YAML config file merged with ``keyval serve`` flags.

The file takes the flags' names with underscores (``peer_addr``, ``data_dir``,
``bootstrap`` as a mapping of id to address, ...); a flag given on the command line wins.
Every problem is a ``ConfigError`` whose message names the offending key.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from keyval.client.protocol import MAX_FRAME
from keyval.errors import ConfigError
from keyval.runtime.event_loop import EVENT_LOOPS
from keyval.wire_bounds import parse_address, parse_node_id

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class NodeConfig:
    id: str
    peer_addr: str
    client_addr: str
    data_dir: str | None = None
    #: HTTP address for /metrics and /health (None: not served)
    metrics_addr: str | None = None
    bootstrap: dict[str, str] = field(default_factory=dict)
    transport: str = "tcp"
    storage: str = "segment"
    catchup_threshold: int = 100
    #: promote a learner as soon as it is caught up (kvctl cluster add can override per node)
    auto_promote: bool = True
    #: membership changes never leave fewer voters than this
    min_voters: int = 1
    #: seconds a member may be behind with no replication progress before the leader calls it
    #: stuck (`kvctl cluster health`, /health, a log line)
    stuck_after: float = 10.0
    log_file: str | None = None
    log_level: str = "INFO"
    #: auto (uvloop when installed), uvloop or asyncio; only settable in the config file
    event_loop: str = "auto"
    #: The cluster secret (mode 0600) that authenticates peer traffic (docs/security.md)
    secret_file: str | None = None
    #: Run without a cluster secret: anyone who reaches the peer port speaks for the cluster
    insecure_peers: bool = False
    #: TLS on the client port: certificate and key; with client_ca, clients must present a
    #: certificate it signed (mutual TLS)
    client_cert: str | None = None
    client_key: str | None = None
    client_ca: str | None = None
    #: Tokens with roles (read, readwrite, admin) that clients must present on the client port
    tokens_file: str | None = None
    #: Client-port limits (keyval/clientport/limits.py). Connections beyond the maximum are
    #: refused; it is lowered to what the descriptor limit leaves (keyval/clientport/descriptors.py).
    max_client_connections: int = 4096
    #: seconds without a request (or inside one unfinished frame) before a connection is closed
    client_idle_timeout: float = 300.0
    #: bytes of an unfinished frame one connection may hold (the largest request), and all together
    client_frame_bytes: int = MAX_FRAME
    client_buffer_bytes: int = 256 << 20
    #: file descriptors kept out of every connection limit, for storage and the node's own use
    reserved_descriptors: int = 256
    #: bytes of the data dir's filesystem kept free: below it the NOSPACE alarm is raised and
    #: client writes are refused (keyval/runtime/space.py); a size such as 64MiB, 0 to only
    #: react to a write failing
    space_reserve: int = 64 << 20
    # Handed to the chosen backend's factory; only settable in the config file.
    storage_options: dict[str, Any] = field(default_factory=dict)
    transport_options: dict[str, Any] = field(default_factory=dict)


KEYS = tuple(NodeConfig.__dataclass_fields__)
REQUIRED = ("id", "peer_addr", "client_addr")
PATH_KEYS = ("secret_file", "client_cert", "client_key", "client_ca", "tokens_file")
#: A node's settings are a few dozen values; the bound is far above any real file.
MAX_VALUES = 10_000


def parse_bootstrap(value: str | dict[str, str]) -> dict[str, str]:
    """``ID=HOST:PORT,ID=HOST:PORT,...`` (or an already split mapping) to ``{id: address}``."""
    if isinstance(value, dict):
        pairs = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, str):
        pairs = []
        for item in value.split(","):
            node_id, sep, address = item.strip().partition("=")
            if not sep:
                raise ConfigError(f"bootstrap: expected ID=HOST:PORT, got {item.strip()!r}")
            pairs.append((node_id.strip(), address.strip()))
    else:
        raise ConfigError(f"bootstrap: expected ID=HOST:PORT,... or a mapping, got {value!r}")
    members: dict[str, str] = {}
    for node_id, address in pairs:
        parse_node_id(node_id, "bootstrap")
        if node_id in members:
            raise ConfigError(f"bootstrap: node {node_id!r} is listed twice")
        members[node_id] = parse_address(address, f"bootstrap {node_id}")
    if not members:
        raise ConfigError("bootstrap: no members given")
    return members


def read_config_file(path: str | Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text (byte {exc.start} is not)") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise ConfigError(f"config file {str(path)!r} nests lists or mappings too deeply") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of settings")
    if _exceeds_values(data, MAX_VALUES):
        # YAML aliases can repeat a part without bound ("billion laughs"); anything that
        # walked or printed such a value whole would never finish.
        raise ConfigError(f"config file {str(path)!r} holds more than {MAX_VALUES} values (counting what "
                          f"YAML aliases repeat)")
    unknown = sorted(set(map(str, data)) - set(KEYS))
    if unknown:
        raise ConfigError(f"config file {str(path)!r}: unknown key(s) {', '.join(unknown)}; known: {', '.join(KEYS)}")
    return data


def _exceeds_values(data: Any, limit: int) -> bool:
    """Whether ``data`` holds more than ``limit`` values, each alias counted again."""
    pending, seen = [data], 0
    while pending:
        seen += 1
        if seen > limit:
            return True
        item = pending.pop()
        if isinstance(item, dict):
            pending += item.keys()
            pending += item.values()
        elif isinstance(item, list):
            pending += item
    return False


def merge_settings(config_file: str | Path | None, flags: dict[str, Any]) -> dict[str, Any]:
    """The config file's settings (if any) overridden by ``flags``; a None flag was not given."""
    values = read_config_file(config_file) if config_file else {}
    values.update({k: v for k, v in flags.items() if v is not None})
    return values


def load_node_config(config_file: str | Path | None, flags: dict[str, Any]) -> NodeConfig:
    return node_config(merge_settings(config_file, flags))


def node_config(settings: dict[str, Any]) -> NodeConfig:
    """Check merged settings and turn them into a ``NodeConfig``."""
    values = dict(settings)
    missing = [k for k in REQUIRED if values.get(k) in (None, "")]
    if missing:
        names = ", ".join("--" + k.replace("_", "-") for k in missing)
        raise ConfigError(f"missing required setting(s): {names} (or set them in --config)")
    values["id"] = parse_node_id(values["id"])
    for key in ("peer_addr", "client_addr"):
        values[key] = parse_address(values[key], key)
    if values.get("metrics_addr") in (None, ""):
        values["metrics_addr"] = None  # not served
    else:
        values["metrics_addr"] = parse_address(values["metrics_addr"], "metrics_addr")
    if values.get("bootstrap") not in (None, "", {}):
        values["bootstrap"] = parse_bootstrap(values["bootstrap"])
    else:
        values.pop("bootstrap", None)
    values["log_level"] = _log_level(values.get("log_level", "INFO"))
    threshold = values.get("catchup_threshold", 100)
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 0:
        raise ConfigError(f"catchup_threshold: expected a whole number >= 0, got {threshold!r}")
    min_voters = values.get("min_voters", 1)
    if isinstance(min_voters, bool) or not isinstance(min_voters, int) or min_voters < 1:
        raise ConfigError(f"min_voters: expected a whole number >= 1, got {min_voters!r}")
    stuck_after = values.get("stuck_after", NodeConfig.stuck_after)
    if isinstance(stuck_after, bool) or not isinstance(stuck_after, (int, float)) or not 0 < stuck_after < 10**9:
        raise ConfigError(f"stuck_after: expected a number of seconds > 0, got {stuck_after!r}")
    values["stuck_after"] = float(stuck_after)
    _check_client_limits(values)
    values["space_reserve"] = _size(values, "space_reserve")
    for key in ("auto_promote", "insecure_peers"):
        if not isinstance(values.get(key, False), bool):
            raise ConfigError(f"{key}: expected true or false, got {values[key]!r}")
    loop = values.get("event_loop", "auto")
    if loop not in EVENT_LOOPS:
        raise ConfigError(f"event_loop: {loop!r} is not one of {', '.join(EVENT_LOOPS)}")
    for key in ("storage_options", "transport_options"):
        if not isinstance(values.get(key, {}), dict):
            raise ConfigError(f"{key}: expected a mapping")
    for key in ("data_dir", "log_file", "transport", "storage", *PATH_KEYS):
        if key in values and values[key] is not None:
            values[key] = _path_or_name(key, values[key])
    if bool(values.get("client_cert")) != bool(values.get("client_key")):
        raise ConfigError("client_cert and client_key must be given together")
    if values.get("client_ca") and not values.get("client_cert"):
        raise ConfigError("client_ca needs client_cert and client_key (TLS on the client port)")
    if values.get("secret_file") and values.get("insecure_peers"):
        raise ConfigError("secret_file and insecure_peers contradict each other; give one")
    return NodeConfig(**values)


MIN_FRAME_BYTES = 4096
MIN_RESERVED_DESCRIPTORS = 32


def _whole(values: dict[str, Any], key: str, low: int, high: int | None = None) -> int:
    value = values.get(key, getattr(NodeConfig, key))
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ConfigError(f"{key}: expected a whole number {bound}, got {value!r}")
    return value


_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
               "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30}


def _size(values: dict[str, Any], key: str) -> int:
    """A byte count: a whole number, or a string such as '64MiB' (units k, m, g: powers of 1024)."""
    value = values.get(key, getattr(NodeConfig, key))
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        number = text.rstrip("abcdefghijklmnopqrstuvwxyz").strip()
        unit = text[len(number):].strip()
        if number.isdigit() and unit in _SIZE_UNITS:
            return int(number) * _SIZE_UNITS[unit]
    raise ConfigError(f"{key}: expected a size in bytes such as 67108864 or '64MiB', got {value!r}")


def _check_client_limits(values: dict[str, Any]) -> None:
    _whole(values, "max_client_connections", 1)
    _whole(values, "reserved_descriptors", MIN_RESERVED_DESCRIPTORS)
    frame = _whole(values, "client_frame_bytes", MIN_FRAME_BYTES, MAX_FRAME)
    if _whole(values, "client_buffer_bytes", 1) < frame:
        raise ConfigError(f"client_buffer_bytes: must be at least client_frame_bytes ({frame}), "
                          f"got {values['client_buffer_bytes']!r}")
    timeout = values.get("client_idle_timeout", NodeConfig.client_idle_timeout)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < 10**9:
        raise ConfigError(f"client_idle_timeout: expected a number of seconds > 0, got {timeout!r}")
    values["client_idle_timeout"] = float(timeout)


def _path_or_name(key: str, value: Any) -> str:
    # A number is taken as written (a directory named 2024); a list, a mapping, a boolean or
    # binary data is no path, and a NUL character would only fail later, deep in a system call.
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ConfigError(f"{key}: expected a path or a name, got {value!r}")
    text = str(value)
    if "\0" in text:
        raise ConfigError(f"{key}: {text!r} contains a NUL character")
    return text


def _log_level(level: Any) -> str:
    name = str(level).upper()
    if name not in LOG_LEVELS:
        raise ConfigError(f"log_level: {level!r} is not one of {', '.join(LOG_LEVELS)}")
    return name
