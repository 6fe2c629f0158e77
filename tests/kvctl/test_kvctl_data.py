"""kvctl's data commands against a real 3-node cluster: discovery, output, exit codes."""
from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

from kvctl.cli import build_cli
from kvctl.localcluster import ClusterSpec, LocalCluster
from kvctl_harness import free_base_port, kvctl, ok


def test_put_through_node1_get_through_node3(shared_cluster):
    c = shared_cluster
    assert ok(c.kvctl("--endpoints", c.endpoint(1), "put", "greeting", "hello world")).stdout == "OK\n"
    assert ok(c.kvctl("get", "greeting", "--endpoints", c.endpoint(3))).stdout == "hello world\n"
    document = json.loads(ok(c.kvctl("get", "greeting", "--json", "--endpoints", c.endpoint(2))).stdout)
    assert document["key"] == "greeting" and document["value"] == "hello world" and document["revision"] >= 1


def test_put_json_reports_the_new_revision(shared_cluster):
    first = json.loads(ok(shared_cluster.kvctl("put", "counter", "1", "--json")).stdout)
    second = json.loads(ok(shared_cluster.kvctl("--json", "put", "counter", "2")).stdout)
    assert first["key"] == "counter" and second["value"] == "2"
    assert second["revision"] > first["revision"]


def test_endpoints_from_the_environment(shared_cluster, tmp_path):
    env = {"KVCTL_ENDPOINTS": shared_cluster.endpoint(2)}
    ok(kvctl("put", "from-env", "yes", cwd=tmp_path, env=env))  # tmp_path has no .keyval
    assert ok(kvctl("get", "from-env", cwd=tmp_path, env=env)).stdout == "yes\n"


def test_endpoints_file_of_the_local_cluster_and_precedence(shared_cluster):
    c = shared_cluster
    ok(c.kvctl("put", "from-file", "yes"))  # no flag, no variable: ./.keyval/endpoints
    assert (c.cwd / ".keyval" / "endpoints").read_text().split() == [c.endpoint(n) for n in (1, 2, 3)]
    dead = {"KVCTL_ENDPOINTS": "127.0.0.1:9"}
    assert c.kvctl("get", "from-file", "--timeout", "0.5", env=dead).returncode == 3  # the variable beats the file
    assert ok(c.kvctl("get", "from-file", "--endpoints", c.endpoint(1), env=dead)).stdout == "yes\n"  # the flag beats both


def test_missing_key_exits_1(shared_cluster):
    result = shared_cluster.kvctl("get", "no-such-key")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == "kvctl get: key not found: no-such-key\n"
    result = shared_cluster.kvctl("get", "no-such-key", "--json")
    assert result.returncode == 1
    assert json.loads(result.stdout) == {"error": {"code": "not_found", "message": "key not found: no-such-key"}}


def test_delete_says_whether_the_key_existed(shared_cluster):
    c = shared_cluster
    ok(c.kvctl("put", "doomed", "x"))
    assert ok(c.kvctl("delete", "doomed")).stdout == "deleted doomed\n"
    assert ok(c.kvctl("delete", "doomed")).stdout == "doomed did not exist; nothing deleted\n"
    document = json.loads(ok(c.kvctl("delete", "doomed", "--json")).stdout)
    assert document["key"] == "doomed" and document["deleted"] is False and document["revision"] >= 1
    assert c.kvctl("get", "doomed").returncode == 1


def test_scan_with_prefix_and_limit(shared_cluster):
    c = shared_cluster
    for i in range(3):
        ok(c.kvctl("put", f"fruit/{i}", f"value {i}"))
    assert ok(c.kvctl("scan", "--prefix", "fruit/")).stdout == "fruit/0 value 0\nfruit/1 value 1\nfruit/2 value 2\n"
    items = json.loads(ok(c.kvctl("scan", "--prefix", "fruit/", "--limit", "2", "--json")).stdout)
    assert [(i["key"], i["value"]) for i in items] == [("fruit/0", "value 0"), ("fruit/1", "value 1")]
    assert all(isinstance(i["revision"], int) for i in items)
    assert json.loads(ok(c.kvctl("scan", "--prefix", "nothing/", "--json")).stdout) == []


def test_non_utf8_bytes_are_shown_escaped(shared_cluster):
    c = shared_cluster
    # argv bytes that aren't UTF-8 reach kvctl as surrogate escapes and go out as the same bytes
    ok(c.kvctl("put", "bin/\udcff", "caf\u00e9 \udcfe"))
    assert ok(c.kvctl("get", "bin/\udcff")).stdout == "caf\u00e9 \\xfe\n"
    assert ok(c.kvctl("scan", "--prefix", "bin/")).stdout == "bin/\\xff caf\u00e9 \\xfe\n"


def test_no_cluster_anywhere_exits_3(tmp_path):
    result = kvctl("get", "k", cwd=tmp_path)
    assert result.returncode == 3
    assert "--endpoints" in result.stderr and "KVCTL_ENDPOINTS" in result.stderr and "kvctl local up" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = kvctl("put", "k", "v", "--json", cwd=tmp_path)
    assert result.returncode == 3
    assert json.loads(result.stdout)["error"]["code"] == "no_endpoints"


def test_unreachable_endpoint_exits_3_within_the_timeout(tmp_path):
    port = free_base_port()  # nothing listens there
    started = time.monotonic()
    result = kvctl("--json", "--timeout", "1", "get", "k", "--endpoints", f"127.0.0.1:{port}", cwd=tmp_path)
    assert result.returncode == 3 and time.monotonic() - started < 4
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "unreachable" and f"127.0.0.1:{port}" in error["message"]
    assert "Traceback" not in result.stderr


def test_stopped_local_cluster_exits_3_at_once(tmp_path):
    # The endpoints file of a local cluster that isn't running: say so instead of waiting.
    spec = ClusterSpec.new(3, free_base_port(), "memory", "udp")
    LocalCluster(tmp_path / ".keyval").save(spec)
    result = kvctl("get", "k", cwd=tmp_path)
    assert result.returncode == 3 and "not running" in result.stderr and "kvctl local up" in result.stderr


@pytest.mark.parametrize("args,env,message", [
    (["put", "k"], {}, "Missing argument 'VALUE'"),
    (["get"], {}, "Missing argument 'KEY'"),
    (["scan", "--limit", "0"], {}, "--limit"),
    (["get", "k", "--timeout", "-1"], {}, "--timeout"),
    (["--endpoints", "nohost", "get", "k"], {}, "expected HOST:PORT, got 'nohost'"),
    (["get", "k"], {"KVCTL_ENDPOINTS": "nohost:x"}, "$KVCTL_ENDPOINTS: expected HOST:PORT"),
    (["frobnicate"], {}, "No such command"),
])
def test_usage_errors_exit_2(tmp_path, monkeypatch, args, env, message):
    monkeypatch.chdir(tmp_path)  # in-process: these fail before touching any cluster
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(build_cli(), args, prog_name="kvctl")
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_usage_errors_with_json_are_one_document(tmp_path):
    result = kvctl("--json", "put", "k", cwd=tmp_path)
    assert result.returncode == 2
    assert json.loads(result.stdout) == {"error": {"code": "usage", "message": "Missing argument 'VALUE'."}}
