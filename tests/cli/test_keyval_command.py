import sys
import types

import pytest
from click.testing import CliRunner

from keyval import __version__
from keyval.cli import cli

NODE = ["--id", "node1", "--peer-addr", "127.0.0.1:7001", "--client-addr", "127.0.0.1:8001"]


def invoke(*args):
    return CliRunner().invoke(cli, list(args), prog_name="keyval")


def test_version():
    result = invoke("--version")
    assert (result.exit_code, result.output) == (0, f"keyval {__version__}\n")


def test_serve_help_lists_every_flag():
    result = invoke("serve", "--help")
    assert result.exit_code == 0
    for flag in ("--config", "--id", "--peer-addr", "--client-addr", "--data-dir", "--bootstrap", "--transport",
                 "--storage", "--catchup-threshold", "--log-file", "--log-level"):
        assert flag in result.output


def test_serve_refuses_a_data_dir_in_use_and_touches_nothing(tmp_path):
    from keyval.datadir import DataDirLock

    holder = DataDirLock(str(tmp_path))
    holder.acquire()  # as if another keyval process were running on this data dir
    try:
        before = sorted(p.name for p in tmp_path.iterdir())
        result = invoke("serve", *NODE, "--bootstrap", "node1=127.0.0.1:7001,node2=127.0.0.1:7002",
                        "--storage", "memory", "--transport", "udp", "--data-dir", str(tmp_path), "--insecure-peers")
        assert result.exit_code == 1
        assert len(result.output.splitlines()) == 1
        assert "is in use by another keyval process" in result.output
        assert sorted(p.name for p in tmp_path.iterdir()) == before
    finally:
        holder.release()


@pytest.mark.parametrize("args,message", [
    (["--transport", "carrier-pigeon"], "unknown transport backend 'carrier-pigeon'; available: faulty, tcp, udp"),
    (["--bootstrap", "node1:7001"], "bootstrap: expected ID=HOST:PORT, got 'node1:7001'"),
    (["--log-level", "loud"], "log_level: 'loud' is not one of"),
])
def test_serve_usage_errors_are_one_line_and_exit_2(args, message):
    result = invoke("serve", *NODE, *args)
    assert result.exit_code == 2
    assert len(result.output.splitlines()) == 1
    assert result.output.startswith("keyval serve: ") and message in result.output


def test_serve_reads_the_config_file(tmp_path):
    config = tmp_path / "node.yaml"
    config.write_text(f"id: node1\npeer_addr: 127.0.0.1:7001\nclient_addr: 127.0.0.1:8001\nstorage: nope\n"
                      f"data_dir: {tmp_path / 'data'}\n")
    result = invoke("serve", "--config", str(config))
    assert result.exit_code == 2
    assert "unknown storage backend 'nope'" in result.output
    # With the storage overridden by a flag the file's settings are used: here the data dir,
    # which another process holds, so the node refuses to start.
    from keyval.datadir import DataDirLock

    holder = DataDirLock(str(tmp_path / "data"))
    holder.acquire()
    try:
        result = invoke("serve", "--config", str(config), "--storage", "memory", "--insecure-peers")
        assert result.exit_code == 1 and str(tmp_path / "data") in result.output
    finally:
        holder.release()


def test_recover(tmp_path):
    assert invoke("recover").exit_code == 2
    result = invoke("recover", "--data-dir", str(tmp_path))
    assert result.exit_code == 2 and "pass --force-new-cluster" in result.output
    result = invoke("recover", "--data-dir", str(tmp_path / "absent"), "--force-new-cluster")
    assert result.exit_code == 1 and "does not exist" in result.output
    result = invoke("recover", "--data-dir", str(tmp_path), "--force-new-cluster")
    assert result.exit_code == 1 and "holds no Raft data" in result.output


def test_simulate_passes_every_argument_through(monkeypatch):
    # Stands in for keyval.testing.simulator, which has its own tests; only the hand-over is checked here.
    received = []
    simulator = types.ModuleType("keyval.testing.simulator")
    simulator.main = lambda argv: received.append(argv) or 7
    monkeypatch.setitem(sys.modules, "keyval.testing.simulator", simulator)
    result = invoke("simulate", "--seeds", "20", "--help", "-x", "positional")
    assert result.exit_code == 7
    assert received == [["--seeds", "20", "--help", "-x", "positional"]]


def test_serve_with_an_unwritable_log_file_is_one_line_exit_2(tmp_path):
    result = invoke("serve", *NODE, "--storage", "memory", "--transport", "udp", "--insecure-peers",
                    "--log-file", str(tmp_path / "no" / "such" / "dir" / "keyval.log"))
    assert result.exit_code == 2
    assert result.output.splitlines() == [result.output.strip()]
    assert "log_file: cannot open" in result.output and "No such file or directory" in result.output
