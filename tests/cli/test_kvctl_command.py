import json

import pytest
from click.testing import CliRunner

from kvctl.cli import build_cli

GROUPS = ("cluster", "snapshot", "local")
# The cluster commands with example arguments, pointed at an address where nothing listens
# (real clusters: tests/cluster/). The data and `local` commands are tested with real
# processes in tests/kvctl/; invoking them here would start clusters in the current directory.
NOWHERE = ["--endpoints", "127.0.0.1:9", "--timeout", "0.3"]
COMMANDS = [
    ["cluster", "info"], ["cluster", "health"], ["cluster", "members"], ["cluster", "member", "node1"],
    ["cluster", "leader"], ["cluster", "add", "node4", "localhost:7004"], ["cluster", "promote", "node4"],
    ["cluster", "remove", "node3"], ["cluster", "replace", "node2", "node4", "localhost:7004"],
    ["cluster", "transfer", "node2"],
]


def invoke(*args):
    return CliRunner().invoke(build_cli(), list(args), prog_name="kvctl")


def command_path(args):
    return "kvctl " + " ".join(args[:2] if args[0] in GROUPS else args[:1])


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_every_cluster_command_says_when_no_cluster_answers(args):
    result = invoke(*NOWHERE, *args)
    assert result.exit_code == 3
    assert result.output.startswith(f"{command_path(args)}: no KeyVal node answered at 127.0.0.1:9")
    assert result.output.count("\n") == 1 and "Traceback" not in result.output


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_json_errors_are_one_document(args):
    result = invoke("--json", *NOWHERE, *args)
    assert result.exit_code == 3
    error = json.loads(result.output)["error"]
    assert error["code"] == "unreachable" and "127.0.0.1:9" in error["message"]


@pytest.mark.parametrize("args", [
    ["--endpoints", "127.0.0.1:8001,[::1]:8002", "--timeout", "2.5", "--json", "cluster", "leader"],
    ["cluster", "leader", "--endpoints", "127.0.0.1:8001", "--timeout", "2.5", "--json"],
    ["cluster", "--json", "member", "node1"],
    ["snapshot", "list", "--json"],
])
def test_global_options_before_or_after_the_subcommand(args):
    result = invoke(*args)
    assert result.exit_code in (1, 3)  # a stub, or no cluster to talk to
    assert "error" in json.loads(result.output)


@pytest.mark.parametrize("args,message", [
    (["--endpoints", "nohost", "get", "k"], "expected HOST:PORT, got 'nohost'"),
    (["get", "k", "--timeout", "0"], "--timeout"),
    (["put", "k"], "Missing argument 'VALUE'"),
    (["cluster", "replace", "a", "b"], "Missing argument 'ADDR'"),
    (["local", "up", "--nodes", "0"], "--nodes"),
    (["frobnicate"], "No such command"),
])
def test_usage_errors_exit_2(args, message):
    result = invoke(*args)
    assert result.exit_code == 2
    assert message in result.output


def test_help_lists_the_command_groups():
    result = invoke("--help")
    assert result.exit_code == 0
    for name in ("put", "get", "delete", "scan", "cluster", "snapshot", "compact", "backup", "restore", "local"):
        assert f"  {name} " in result.output


BAD_USAGE = [
    (["cluster", "add", "node9", "not-an-address"], "ADDR: expected HOST:PORT, got 'not-an-address'"),
    (["cluster", "add", "node9", "host:notaport"], "ADDR: expected HOST:PORT"),
    (["cluster", "add", "bad id!", "localhost:7009"], "ID: 'bad id!' is not a valid node id"),
    (["cluster", "promote", "bad/id"], "ID: 'bad/id' is not a valid node id"),
    (["cluster", "remove", "bad/id"], "ID: 'bad/id' is not a valid node id"),
    (["cluster", "transfer", "bad/id"], "ID: 'bad/id' is not a valid node id"),
    (["cluster", "replace", "node2", "node4", "nowhere"], "ADDR: expected HOST:PORT, got 'nowhere'"),
]


@pytest.mark.parametrize("args, reason", BAD_USAGE, ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_bad_ids_and_addresses_are_usage_errors_not_refusals(args, reason):
    """Checked before anything is sent (nothing listens at NOWHERE): exit 2, one line."""
    result = invoke(*NOWHERE, *args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{command_path(args)}: {reason}"), result.output
    assert "refused" not in result.output
    result = invoke(*NOWHERE, "--json", *args)
    assert result.exit_code == 2
    error = json.loads(result.output)["error"]
    assert error["code"] == "usage" and error["message"].startswith(reason), error
