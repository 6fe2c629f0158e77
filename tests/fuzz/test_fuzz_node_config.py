"""Fuzzing the node config loader (keyval/config.py: the YAML file and the settings in it,
with the segment storage's, the tcp and the udp transport's options it hands on).

Two kinds of input: a real config file's bytes, damaged (and plain random bytes); and
well-formed YAML whose settings hold values of any type and shape. Only ConfigError may
come out, in time; a config that loads holds the types the node relies on.
"""
from __future__ import annotations

import math
import os
import tempfile

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from fuzz_mutations import damaged, note, strange_bytes, within
from keyval.config import KEYS, LOG_LEVELS, PATH_KEYS, NodeConfig, load_node_config
from keyval.errors import ConfigError
from keyval_plugins.storage.segment.options import SegmentOptions, parse_options
from keyval_plugins.transport.tcp_options import KNOWN as TCP_OPTIONS
from keyval_plugins.transport.tcp_options import parse_tcp_options
from keyval_plugins.transport.udp_options import UdpOptions

FUZZ = settings.get_profile("keyval-fuzz")

REAL_CONFIG = b"""\
# node1 of a three-node cluster
id: node1
peer_addr: 10.0.0.1:7001
client_addr: 0.0.0.0:8001
metrics_addr: 127.0.0.1:9101
data_dir: /var/lib/keyval
bootstrap:
  node1: 10.0.0.1:7001
  node2: 10.0.0.2:7001
  node3: "[fd00::3]:7001"
storage: segment
transport: tcp
secret_file: /etc/keyval/cluster.secret
log_level: info
event_loop: auto
catchup_threshold: 200
min_voters: 3
max_client_connections: 1024
client_idle_timeout: 120.5
storage_options:
  segment_size: 64MiB
  snapshots_keep: 3
  snapshot_level: 5
  cache_bytes: 16777216
transport_options:
  queue_size: 2048
  reconnect_min: 0.1
  reconnect_max: 3
  tls_refused: [node:old-node, "serial:0a1b"]
"""
NESTING = (b"[", b"{a: ", b"- ", b"? ")
SEGMENT_OPTIONS = tuple(SegmentOptions.__dataclass_fields__)
UDP_OPTIONS = tuple(UdpOptions.__dataclass_fields__)


def loaded(text: bytes) -> NodeConfig:
    """The whole loader: file, settings, and the options the built-in backends take."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "node.yaml")
        with open(path, "wb") as f:
            f.write(text)
        with within(5):
            try:
                config = load_node_config(path, {})
                parse_options(config.storage_options)
                # The transport options as either built-in transport would take them.
                options = {k: v for k, v in config.transport_options.items() if k in UDP_OPTIONS}
                for parse, offered in ((parse_tcp_options, config.transport_options), (UdpOptions.parse, options)):
                    try:
                        parse(offered)
                    except ConfigError:
                        pass
                return config
            except ConfigError as exc:
                assert "\n" not in str(exc)
                note("ConfigError")
                raise


def assert_well_typed(config: NodeConfig) -> None:
    assert isinstance(config.id, str) and isinstance(config.peer_addr, str) and isinstance(config.client_addr, str)
    for key in ("data_dir", "log_file", "metrics_addr", *PATH_KEYS):
        value = getattr(config, key)
        assert value is None or (isinstance(value, str) and "\0" not in value), f"{key}: {value!r}"
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in config.bootstrap.items())
    assert config.log_level in LOG_LEVELS
    assert isinstance(config.storage_options, dict) and isinstance(config.transport_options, dict)
    assert isinstance(config.client_idle_timeout, float) and math.isfinite(config.client_idle_timeout)


@settings(FUZZ)
@given(data=st.data())
def test_a_damaged_config_file_is_refused_or_loads_well_typed(data):
    try:
        config = loaded(data.draw(damaged(REAL_CONFIG, nest=NESTING)))
    except ConfigError:
        return
    assert_well_typed(config)


@settings(FUZZ)
@given(raw=strange_bytes(b"id: node1\n"))
def test_strange_bytes_as_a_config_file_are_refused(raw):
    try:
        config = loaded(raw)
    except ConfigError:
        return
    assert_well_typed(config)


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-(2**70), 2**70), st.floats(),
    st.sampled_from([float("inf"), float("-inf"), float("nan"), 0.0, -1, 2**64]),
    st.text(max_size=20), st.sampled_from(["node1", "10.0.0.1:7001", "64MiB", "auto", "debug", "a\0b", "[::1]:1"]),
    st.binary(max_size=8),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.text(max_size=8), st.integers()), inner, max_size=4)))


@settings(FUZZ)
@given(data=st.data())
def test_settings_of_any_type_are_refused_or_load_well_typed(data):
    doc = yaml.safe_load(REAL_CONFIG)
    for _ in range(data.draw(st.integers(1, 4))):
        where = data.draw(st.sampled_from(("settings", "storage_options", "transport_options")))
        if where == "settings":
            doc[data.draw(st.sampled_from(KEYS))] = data.draw(values)
        elif isinstance(doc.get(where), dict):
            names = SEGMENT_OPTIONS if where == "storage_options" else TCP_OPTIONS + UDP_OPTIONS
            doc[where][data.draw(st.sampled_from(names))] = data.draw(values)
    try:
        config = loaded(yaml.safe_dump(doc).encode())
    except ConfigError:
        return
    assert_well_typed(config)


def test_a_yaml_alias_bomb_is_refused_in_time():
    # Nine levels of ten aliases each: 10**9 items if anything walks or prints it whole.
    levels = ["&l0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"&l{n} [{', '.join([f'*l{n - 1}'] * 10)}]" for n in range(1, 9)]
    text = REAL_CONFIG.replace(b"id: node1", f"id: [{', '.join(levels)}]".encode())
    with pytest.raises(ConfigError):
        loaded(text)


def test_deep_nesting_is_refused():
    with pytest.raises(ConfigError):
        loaded(REAL_CONFIG.replace(b"id: node1", b"id: " + b"[" * 5000 + b"]" * 5000))
