"""The installed console scripts, run as a user would, see the same plugins."""
import json
import os

from keyval.plugin_api.loading import backend_names, build_plugin_manager


def env_with_path(*paths) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def test_keyval_plugins_lists_the_builtins(run_script):
    result = run_script("keyval", "plugins")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["KIND", "NAME", "PACKAGE", "VERSION", "DESCRIPTION"]
    listed = [line.split()[:3] for line in lines[1:] if line.strip()]
    for kind, name in [("storage", "memory"), ("storage", "segment"), ("transport", "tcp"), ("transport", "udp")]:
        assert [kind, name, "keyval-raft"] in listed
    assert "failed" not in result.stdout
    assert result.stderr == ""


def test_keyval_plugins_exits_0_with_a_working_third_party_plugin(run_script, good_dist):
    result = run_script("keyval", "plugins", env=env_with_path(good_dist))
    assert (result.returncode, result.stderr) == (0, "")
    assert "goodstore" in result.stdout


def test_keyval_plugins_shows_third_party_and_failures_and_exits_1(run_script, good_dist, broken_dist):
    env = env_with_path(good_dist)
    result = run_script("keyval", "plugins", env=env)
    # The listing is whole, the failure in it once; stderr and the exit code say it went wrong.
    assert (result.returncode, result.stderr) == (1, "keyval plugins: 1 plugin(s) failed to load (listed above)\n")
    assert ["storage", "goodstore", "goodplug-keyval", "2.0"] in [line.split()[:4] for line in result.stdout.splitlines()]
    failure = ("plugin 'broken' (package brokenplug 0.1) failed to load: "
               "ModuleNotFoundError: No module named 'no_such_module_for_keyval_tests'")
    assert result.stdout.count(failure) == 1
    assert f"  {failure}\n" in result.stdout

    result = run_script("keyval", "plugins", "--json", env=env)
    assert (result.returncode, result.stderr) == (1, "keyval plugins: 1 plugin(s) failed to load (listed in failures)\n")
    as_json = json.loads(result.stdout)
    assert as_json["failures"] == [failure]
    assert {"kind": "storage", "name": "goodstore", "package": "goodplug-keyval", "version": "2.0",
            "description": "a third-party store"} in as_json["plugins"]


def test_serve_with_unknown_storage_exits_2_naming_the_choices(run_script):
    result = run_script("keyval", "serve", "--storage", "nope")
    assert result.returncode == 2
    # (a third-party backend installed here, like the sqlite example, may follow the built-ins)
    assert result.stderr.startswith("keyval serve: unknown storage backend 'nope'; available: memory, segment")
    assert len(result.stderr.splitlines()) == 1


def test_serve_names_the_failure_of_the_storage_it_was_asked_for(run_script, broken_dist):
    # brokenplug's entry point is named "broken": that failure is the reason, said in one line.
    result = run_script("keyval", "serve", "--id", "n1", "--peer-addr", "127.0.0.1:0", "--client-addr", "127.0.0.1:0",
                        "--storage", "broken", "--insecure-peers", env=env_with_path(broken_dist))
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "keyval serve: storage backend 'broken' is unavailable: plugin 'broken' (package brokenplug 0.1) failed to "
        "load: ModuleNotFoundError: No module named 'no_such_module_for_keyval_tests'; available: "
        + ", ".join(backend_names(build_plugin_manager(), "storage")))  # with the sqlite example if installed


def test_serve_with_an_unknown_storage_names_the_storage_plugins_that_failed(run_script, broken_dist):
    result = run_script("keyval", "serve", "--id", "n1", "--peer-addr", "127.0.0.1:0", "--client-addr", "127.0.0.1:0",
                        "--storage", "brokenstore", "--insecure-peers", env=env_with_path(broken_dist))
    assert result.returncode == 2
    last = result.stderr.splitlines()[-1]
    assert last.startswith("keyval serve: unknown storage backend 'brokenstore'; available: memory, segment")
    assert last.endswith("; it may be one of the storage plugin(s) that failed to load: plugin 'broken' (package "
                         "brokenplug 0.1) failed to load: ModuleNotFoundError: No module named "
                         "'no_such_module_for_keyval_tests'")
    # A transport is not what failed: asking for an unknown one does not blame the storage plugin.
    result = run_script("keyval", "serve", "--id", "n1", "--peer-addr", "127.0.0.1:0", "--client-addr", "127.0.0.1:0",
                        "--transport", "nope", "--insecure-peers", env=env_with_path(broken_dist))
    assert result.stderr.splitlines()[-1] == "keyval serve: unknown transport backend 'nope'; available: faulty, tcp, udp"


def test_serve_accepts_a_third_party_backend(run_script, good_dist, broken_dist):
    result = run_script("keyval", "serve", "--id", "n1", "--peer-addr", "127.0.0.1:7001",
                        "--client-addr", "127.0.0.1:8001", "--storage", "goodstore", "--insecure-peers",
                        env=env_with_path(good_dist))
    # Past validation (a broken plugin only warns). This toy backend returns a dict, not a
    # storage: the node says so in one line, naming every member of the contract it lacks.
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "keyval serve: storage backend 'goodstore' from plugin 'good' (package goodplug-keyval 2.0) returned a "
        "dict that is not a storage: missing append, apply_snapshot, close, compact, config_indexes, "
        "create_snapshot, durable_watermark, entries, first_index, initial_state, last_index, list_snapshots, load_snapshot, "
        "set_hard_state, snapshot_chunk, snapshot_meta, sync, term (see keyval/plugin_api/storage.py); refusing to start")
    assert "brokenplug" in result.stderr


def test_help_exits_0(run_script):
    for script in ("keyval", "kvctl"):
        result = run_script(script, "--help")
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"Usage: {script} ")
