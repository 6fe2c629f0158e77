import pytest

from keyval.config import NodeConfig, load_node_config, parse_bootstrap
from keyval.wire_bounds import parse_address
from keyval.errors import ConfigError

REQUIRED = {"id": "node1", "peer_addr": "127.0.0.1:7001", "client_addr": "127.0.0.1:8001"}


def test_bootstrap_flag_and_mapping_forms():
    expected = {"node1": "127.0.0.1:7001", "node2": "localhost:7002", "node3": "[::1]:7003"}
    assert parse_bootstrap("node1=127.0.0.1:7001, node2=localhost:7002,node3=[::1]:7003") == expected
    assert parse_bootstrap(expected) == expected


@pytest.mark.parametrize("text,message", [
    ("node1", "expected ID=HOST:PORT, got 'node1'"),
    ("node1=127.0.0.1", "bootstrap node1: expected HOST:PORT"),
    ("node1=h:1,node1=h:2", "node 'node1' is listed twice"),
    ("=h:1", "is not a valid node id"),
    ("node1=h:99999", "expected HOST:PORT"),
])
def test_bad_bootstrap(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_bootstrap(text)


@pytest.mark.parametrize("text", ["127.0.0.1", ":80", "host:", "host:port", "[::1]"])
def test_bad_address(text):
    with pytest.raises(ConfigError, match="expected HOST:PORT"):
        parse_address(text)


def test_config_file_is_overridden_by_flags(tmp_path):
    path = tmp_path / "node.yaml"
    path.write_text(
        "id: node1\npeer_addr: 127.0.0.1:7001\nclient_addr: 127.0.0.1:8001\ndata_dir: /var/lib/kv\n"
        "storage: memory\nbootstrap:\n  node1: 127.0.0.1:7001\n  node2: 127.0.0.1:7002\n"
        "storage_options: {fsync: false}\n"
    )
    config = load_node_config(path, {"peer_addr": "0.0.0.0:7001", "storage": None, "log_level": "debug"})
    assert config == NodeConfig(
        id="node1", peer_addr="0.0.0.0:7001", client_addr="127.0.0.1:8001", data_dir="/var/lib/kv",
        bootstrap={"node1": "127.0.0.1:7001", "node2": "127.0.0.1:7002"}, storage="memory",
        log_level="DEBUG", storage_options={"fsync": False},
    )


def test_defaults():
    config = load_node_config(None, REQUIRED)
    assert (config.storage, config.transport, config.catchup_threshold, config.bootstrap) == ("segment", "tcp", 100, {})


@pytest.mark.parametrize("content,message", [
    ("- a list\n", "must hold a mapping"),
    ("peer-addr: x\n", r"unknown key\(s\) peer-addr; known: id, peer_addr"),
    ("id: [unclosed\n", "is not valid YAML"),
])
def test_bad_config_file(tmp_path, content, message):
    path = tmp_path / "node.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_node_config(path, REQUIRED)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot be read: No such file"):
        load_node_config(tmp_path / "absent.yaml", REQUIRED)


@pytest.mark.parametrize("flags,message", [
    ({}, "missing required setting.*--id, --peer-addr, --client-addr"),
    ({**REQUIRED, "id": "node 1"}, "not a valid node id"),
    ({**REQUIRED, "log_level": "loud"}, "log_level: 'loud' is not one of DEBUG"),
    ({**REQUIRED, "catchup_threshold": -1}, "catchup_threshold: expected a whole number"),
    ({**REQUIRED, "event_loop": "trio"}, "event_loop: 'trio' is not one of auto, uvloop, asyncio"),
    ({**REQUIRED, "stuck_after": 0}, "stuck_after: expected a number of seconds > 0, got 0"),
    ({**REQUIRED, "stuck_after": "soon"}, "stuck_after: expected a number of seconds > 0, got 'soon'"),
])
def test_bad_settings(flags, message):
    with pytest.raises(ConfigError, match=message):
        load_node_config(None, flags)


def test_event_loop_is_chosen_in_the_config_file(tmp_path):
    import asyncio

    from keyval.runtime.event_loop import loop_factory, loop_name

    path = tmp_path / "node.yaml"
    path.write_text("event_loop: asyncio\n")
    config = load_node_config(path, REQUIRED)
    assert config.event_loop == "asyncio"
    loop = loop_factory(config.event_loop)()
    try:
        assert loop_name(loop) == "asyncio" and type(loop).__module__.startswith("asyncio")
    finally:
        loop.close()
    assert load_node_config(None, REQUIRED).event_loop == "auto"
    uvloop = pytest.importorskip("uvloop")  # a dependency on Linux: auto takes it
    loop = loop_factory("auto")()
    try:
        assert isinstance(loop, uvloop.Loop) and loop_name(loop) == "uvloop"
    finally:
        loop.close()
    # chosen per process run, never installed as the global policy (no module-level state)
    assert type(asyncio.get_event_loop_policy()).__module__.startswith("asyncio")


@pytest.mark.parametrize("key,value,message", [
    ("max_client_connections", 0, "max_client_connections: expected a whole number >= 1"),
    ("max_client_connections", "many", "max_client_connections: expected a whole number"),
    ("client_idle_timeout", 0, "client_idle_timeout: expected a number of seconds > 0"),
    ("client_idle_timeout", True, "client_idle_timeout"),
    ("client_frame_bytes", 100, "client_frame_bytes: expected a whole number between 4096 and 8388608"),
    ("client_frame_bytes", 1 << 30, "client_frame_bytes"),
    ("client_buffer_bytes", 65536, "client_buffer_bytes: must be at least client_frame_bytes"),
    ("reserved_descriptors", 5, "reserved_descriptors: expected a whole number >= 32"),
])
def test_bad_client_limits(key, value, message):
    with pytest.raises(ConfigError, match=message):
        load_node_config(None, {**REQUIRED, key: value})


def test_client_limits_defaults_and_overrides():
    config = load_node_config(None, dict(REQUIRED))
    assert (config.max_client_connections, config.client_idle_timeout) == (4096, 300.0)
    assert config.client_buffer_bytes >= config.client_frame_bytes == 8 << 20
    config = load_node_config(None, {**REQUIRED, "client_idle_timeout": 2, "client_frame_bytes": 65536,
                                     "client_buffer_bytes": 65536})
    assert config.client_idle_timeout == 2.0 and config.client_buffer_bytes == 65536
