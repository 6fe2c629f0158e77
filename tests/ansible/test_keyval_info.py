"""keyval_info run through ansible: what it reports is what kvctl reports."""
from __future__ import annotations

import json
import os

from ansible_harness import BIN, module
from kvctl_harness import ok


def endpoints(cluster):
    return [cluster.endpoint(n) for n in (1, 2, 3)]


def test_info_matches_kvctl_cluster_info(cluster, workdir):
    run = module("keyval_info", {"endpoints": endpoints(cluster)}, workdir)
    info = json.loads(ok(cluster.kvctl("cluster", "info", "--json")).stdout)
    assert run.status == "SUCCESS" and not run.changed, run.stdout
    r = run.result
    for key in ("cluster_id", "leader", "term", "voters", "learners", "quorum"):
        assert r[key] == info[key], key
    assert r["healthy"] is True and r["issues"] == [] and r["quorum_available"] is True
    assert set(r["lag"]) == {m["id"] for m in info["members"]}
    assert all(isinstance(lag, int) for lag in r["lag"].values())
    assert r["health"]["leader"] == info["leader"]


def test_info_finds_kvctl_on_path_and_supports_check_mode(cluster, workdir):
    path = {"PATH": f"{BIN}:{os.environ['PATH']}"}
    run = module("keyval_info", {"endpoints": endpoints(cluster)}, workdir, kvctl=None, env=path, check=True, diff=True)
    assert run.status == "SUCCESS" and run.result["cluster_id"], run.stdout


def test_missing_kvctl_fails_clearly(workdir):
    run = module("keyval_info", {"endpoints": ["127.0.0.1:1"]}, workdir, kvctl=None, env={"PATH": "/usr/bin:/bin"})
    assert run.failed and run.result["msg"] == "kvctl not found on PATH or in /opt/keyval/current/bin; set kvctl_path"
    run = module("keyval_info", {"endpoints": ["127.0.0.1:1"]}, workdir, kvctl=str(workdir / "nope"))
    assert run.failed and run.result["msg"] == f"kvctl_path {workdir / 'nope'} is not an executable file"


def test_unhealthy_cluster_is_reported_not_failed(cluster, workdir):
    """A stopped member: health exits 1 with its report; the module returns the issues."""
    ok(cluster.kvctl("local", "stop", "node3"))
    try:
        for _ in range(30):
            run = module("keyval_info", {"endpoints": endpoints(cluster)[:2]}, workdir)
            if not run.result.get("healthy", True):
                break
        assert run.status == "SUCCESS" and run.result["healthy"] is False, run.stdout
        assert any("node3" in issue for issue in run.result["issues"]), run.result["issues"]
    finally:
        ok(cluster.kvctl("local", "start", "node3"))


def test_token_never_printed(cluster, workdir):
    secret = "tok-4f1b9c2e7d"
    run = module("keyval_info", {"endpoints": endpoints(cluster), "token": secret}, workdir, env={"ANSIBLE_VERBOSITY": "3"})
    assert run.status == "SUCCESS", run.stdout
    assert secret not in run.stdout + run.stderr
    assert "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" in run.stdout
