"""The credential options against a secured cluster (`kvctl local up --secure`: client TLS
with client certificates, and role tokens). Skipped until this kvctl has --secure."""
from __future__ import annotations

import json

import pytest

from ansible_harness import module
from kvctl_harness import Cluster, free_base_port, kvctl, ok, take_down


@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("secure")
    if "--secure" not in kvctl("local", "up", "--help", cwd=cwd).stdout:
        pytest.skip("this kvctl has no `local up --secure` yet")
    c = Cluster(cwd, free_base_port(), 3)
    ok(c.kvctl("local", "up", "--secure", "--base-port", str(c.base_port)))
    try:
        yield c
    finally:
        take_down(c)


def args(c: Cluster, **extra) -> dict:
    tls = c.cwd / ".keyval" / "tls"
    return {"endpoints": [c.endpoint(1)], "cacert": str(tls / "ca.pem"), "cert": str(tls / "kvctl.pem"),
            "key": str(tls / "kvctl.key"), "timeout": 5, **extra}


def test_credentials_reach_the_cluster(secure, workdir):
    run = module("keyval_info", args(secure, token_file=str(secure.cwd / ".keyval" / "tokens" / "admin")), workdir)
    assert run.status == "SUCCESS" and run.result["healthy"], run.stdout


def test_a_read_token_cannot_move_leadership_and_is_never_printed(secure, workdir):
    token = (secure.cwd / ".keyval" / "tokens" / "read").read_text().strip()
    # A node that is not the leader: asking for the leader it already has would change nothing.
    leader = json.loads(ok(secure.kvctl("cluster", "leader", "--json")).stdout)["id"]
    target = next(n for n in ("node1", "node2", "node3") if n != leader)
    run = module("keyval_leader", args(secure, token=token, to=target), workdir, env={"ANSIBLE_VERBOSITY": "3"})
    assert run.failed and run.result["rc"] == 1 and run.result["msg"] == "permission denied", run.stdout
    assert token not in run.stdout + run.stderr


def test_without_credentials_nothing_is_reached(secure, workdir):
    run = module("keyval_info", {"endpoints": [secure.endpoint(1)], "timeout": 3}, workdir)
    assert run.failed and run.result["rc"] in (1, 3), run.stdout
