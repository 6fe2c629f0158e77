"""kvctl loads only what a command needs: `--version` and `--help` no command's module, `put`
its own and the client; and its requests reach the leader by following a follower's redirect.

What is held here is which modules load, never how long it takes (the machine may be busy);
`benchmarks/kvctl_bench.py` measures the time.
"""
from __future__ import annotations

import importlib
import json
import subprocess
import sys
import time

import click
from keyval import __version__
from kvctl.cli import COMMANDS, build_cli
from kvctl_harness import free_base_port, ok

#: the modules of kvctl's commands (kvctl.cli's table), none of which `--version` may load
COMMAND_MODULES = sorted({target.partition(":")[0] for target, _ in COMMANDS.values()})
#: what no data command needs: TLS certificates, metrics, the node's config, the Raft core,
#: the node runtime and the operator operations
HEAVY = ["cryptography", "prometheus_client", "yaml", "uvloop", "keyval.raft.core", "keyval.runtime.node",
         "keyval.ops", "keyval.config", "keyval.clientport"]


def modules_loaded_by(tmp_path, *args: str) -> tuple[set[str], subprocess.CompletedProcess]:
    """Run ``kvctl ARGS`` in a fresh interpreter; the modules it had loaded when it exited."""
    listing = tmp_path / "modules.json"
    script = (
        "import json, sys\n"
        "from kvctl.cli import main\n"
        "try:\n    main(sys.argv[2:])\n"
        "finally:\n    open(sys.argv[1], 'w').write(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(listing), *args], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    return set(json.loads(listing.read_text())), out


def loaded(modules: set[str], names: list[str]) -> list[str]:
    return sorted(m for m in modules for n in names if m == n or m.startswith(n + "."))


def test_version_loads_no_command_and_nothing_heavy(tmp_path):
    modules, out = modules_loaded_by(tmp_path, "--version")
    assert out.returncode == 0 and out.stdout == f"kvctl {__version__}\n", out
    assert not loaded(modules, [*COMMAND_MODULES, *HEAVY, "asyncio", "msgspec", "keyval.client"])


def test_help_lists_every_command_and_loads_none(tmp_path):
    modules, out = modules_loaded_by(tmp_path, "--help")
    assert out.returncode == 0, out
    listed = [line.split()[0] for line in out.stdout.partition("Commands:\n")[2].splitlines()]
    assert listed == sorted(COMMANDS)
    assert not loaded(modules, [*COMMAND_MODULES, *HEAVY, "asyncio"])


def test_put_loads_its_own_module_and_the_client_only(tmp_path):
    # Nothing listens at port 9: the put fails (exit 3) after loading all it would use.
    modules, out = modules_loaded_by(tmp_path, "--endpoints", "127.0.0.1:9", "--timeout", "0.2", "put", "k", "v")
    assert out.returncode == 3 and "no KeyVal node answered" in out.stderr, out
    assert {"kvctl.data", "kvctl.route", "keyval.client"} <= modules
    others = [m for m in COMMAND_MODULES if m != "kvctl.data"]
    assert not loaded(modules, [*others, *HEAVY])


def test_the_table_names_every_command_with_the_first_sentence_of_its_help():
    """The table is the only place `kvctl --help` reads; it must match the commands."""
    cli = build_cli()
    ctx = click.Context(cli, info_name="kvctl")
    for name in COMMANDS:
        command = cli.get_command(ctx, name)
        assert command is not None and command.name == name
        stand_in = click.Command(name, help=COMMANDS[name][1])
        for width in (30, 45, 70, 200):
            assert stand_in.get_short_help_str(width) == command.get_short_help_str(width), (name, width)
    # Every command the modules define is in the table (a new one would be missing from --help).
    everything = click.Group("all")
    for target in {target for target, _ in COMMANDS.values()}:
        module, _, function = target.partition(":")
        getattr(importlib.import_module(module), function)(everything)
    assert sorted(everything.commands) == sorted(COMMANDS)


def test_a_put_through_a_follower_lands_on_the_leader(shared_cluster):
    c = shared_cluster
    leader = c.leader()
    follower = next(n for n in (1, 2, 3) if f"node{n}" != leader)
    # The follower's address only: it cannot commit the write itself, it names the leader.
    ok(c.kvctl("--endpoints", c.endpoint(follower), "put", "routed", "via-follower"))
    document = json.loads(ok(c.kvctl("--endpoints", c.endpoint(int(leader[4:])), "get", "routed", "--json")).stdout)
    assert document["value"] == "via-follower"


def test_nodes_that_answer_without_a_leader_are_no_leader_not_unreachable(new_cluster):
    c = new_cluster(3)
    for node in ("node2", "node3"):
        ok(c.kvctl("local", "stop", node))
    deadline = time.monotonic() + 30
    while any(r["role"] == "leader" for r in c.status()):  # until node1 has stepped down
        assert time.monotonic() < deadline, c.status()
        time.sleep(0.2)
    for args in (["put", "k", "v"], ["get", "k"]):
        result = c.kvctl("--json", "--timeout", "1.5", *args)
        assert result.returncode == 3, result
        assert json.loads(result.stdout)["error"] == {
            "code": "no_leader", "message": "the cluster has no leader right now (is a majority of its nodes running?)"}
    dead = f"127.0.0.1:{free_base_port()}"
    result = c.kvctl("--json", "--timeout", "1", "--endpoints", dead, "put", "k", "v")
    assert result.returncode == 3 and json.loads(result.stdout)["error"]["code"] == "unreachable"
