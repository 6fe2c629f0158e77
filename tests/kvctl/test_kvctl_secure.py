"""`kvctl local up --secure`: TLS and tokens on the client ports of a real dev cluster, and
kvctl's credential options, as the operations guide's commands use them."""
from __future__ import annotations

import json
import os
import stat

import pytest

from kvctl_harness import Cluster, free_base_port, kvctl, ok, take_down


@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("secure"), free_base_port(), 3)
    try:
        yield cluster.up("--secure")
    finally:
        take_down(cluster)


def test_secrets_are_owner_only_and_the_tokens_file_holds_no_token(secure):
    root = secure.cwd / ".keyval"
    private = [root / "cluster.secret", root / "tokens.sha256", *root.glob("tokens/*"), *root.glob("tls/*.key")]
    assert len(private) == 1 + 1 + 3 + 5  # CA, kvctl and three nodes' keys
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    hashes = (root / "tokens.sha256").read_text()
    for role in ("admin", "readwrite", "read"):
        assert (root / "tokens" / role).read_text().strip() not in hashes


def test_kvctl_run_in_the_dir_uses_the_ca_and_the_admin_token(secure):
    ok(secure.kvctl("put", "k", "v"))
    assert ok(secure.kvctl("get", "k")).stdout == "v\n"
    assert "Leader:" in ok(secure.kvctl("cluster", "info")).stdout


def test_guide_commands_with_role_tokens(secure):
    tokens = secure.cwd / ".keyval" / "tokens"
    read = str(tokens / "read")
    assert "Voters:       3" in ok(secure.kvctl("--token-file", read, "cluster", "info")).stdout
    refused = secure.kvctl("--token-file", read, "cluster", "remove", "node3")
    assert (refused.returncode, refused.stderr) == (1, "kvctl cluster remove: permission denied\n")
    # Before or after the subcommand; --json errors are one document.
    refused = secure.kvctl("put", "k", "by reader", "--token-file", read, "--json")
    assert refused.returncode == 1
    assert json.loads(refused.stdout) == {"error": {"code": "permission_denied", "message": "permission denied"}}
    ok(secure.kvctl("put", "k2", "by writer", "--token-file", str(tokens / "readwrite")))
    refused = secure.kvctl("snapshot", "create", "--token-file", str(tokens / "readwrite"))
    assert refused.returncode == 1 and "permission denied" in refused.stderr
    # $KVCTL_TOKEN holds a token itself; a wrong one is refused like any other.
    wrong = secure.kvctl("get", "k", env={"KVCTL_TOKEN": "guess"})
    assert (wrong.returncode, wrong.stderr) == (1, "kvctl get: permission denied\n")
    assert ok(secure.kvctl("get", "k", env={"KVCTL_TOKEN": (tokens / "read").read_text().strip()})).stdout == "v\n"
    members = json.loads(ok(secure.kvctl("cluster", "members", "--json")).stdout)
    assert len(members["members"] if isinstance(members, dict) else members) == 3  # node3 was not removed


def test_explicit_endpoints_need_explicit_credentials(secure, tmp_path):
    endpoint = secure.endpoint(1)
    tls = secure.cwd / ".keyval" / "tls"
    # Elsewhere, with --endpoints, nothing of the local dir is used: plain TCP fails cleanly.
    plain = kvctl("get", "k", "--endpoints", endpoint, "--timeout", "2", cwd=tmp_path)
    assert plain.returncode == 3 and "Traceback" not in plain.stderr
    creds = ["--cacert", str(tls / "ca.pem"), "--cert", str(tls / "kvctl.pem"), "--key", str(tls / "kvctl.key"),
             "--token-file", str(secure.cwd / ".keyval" / "tokens" / "read")]
    assert ok(kvctl("--endpoints", endpoint, *creds, "get", "k", cwd=tmp_path)).stdout == "v\n"
    untrusted = kvctl("get", "k", "--endpoints", endpoint, "--timeout", "2", "--cacert", os.devnull, cwd=tmp_path)
    assert untrusted.returncode == 2 and "--cacert" in untrusted.stderr


def test_a_node_started_later_gets_its_own_certificate(secure):
    ok(secure.kvctl("local", "start", "node4"))
    cert = secure.cwd / ".keyval" / "tls" / "node4.pem"
    assert cert.exists()
    ok(secure.kvctl("cluster", "add", "node4", f"127.0.0.1:{secure.base_port + 4}"))
    ok(secure.kvctl("put", "after-add", "yes"))
    ok(secure.kvctl("local", "stop", "node4"))
