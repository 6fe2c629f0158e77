"""Module documentation, and the kvctl command line the modules build: credentials only when set, never the token.

(A pure function; the modules themselves are tested through ansible against real clusters.
Once kvctl's --cacert/--cert/--key/--token-file land, `kvctl local up --secure` can test them
end to end.)"""
from __future__ import annotations

import json
import subprocess
import sys

from ansible_harness import ANSIBLE_DIR, BIN, environment

sys.path.insert(0, str(ANSIBLE_DIR / "collections"))

from ansible_collections.keyval.cluster.plugins.module_utils.kvctl import bad_address, bad_node_id, global_flags  # noqa: E402


def test_only_the_options_set_are_passed():
    assert global_flags({"endpoints": None, "cacert": None, "token": None}, 5) == ["--json", "--timeout", "5"]
    flags = global_flags({"endpoints": ["a:1", " b:2"], "cacert": "/ca.pem", "cert": "/c.pem", "key": "/c.key",
                          "token_file": "/t", "token": "s3cret"}, 2.5)
    assert flags == ["--json", "--timeout", "2.5", "--endpoints", "a:1,b:2", "--cacert", "/ca.pem", "--cert", "/c.pem",
                     "--key", "/c.key", "--token-file", "/t"]
    assert "s3cret" not in flags  # the token goes in $KVCTL_TOKEN


def test_input_checks_match_kvctl():
    assert bad_node_id("node-1.a_b") is None and bad_address("[::1]:7001") is None and bad_address("h:0") is None
    assert bad_node_id("-x") and bad_node_id("a b") and bad_node_id("")
    assert bad_address("h") and bad_address(":7001") and bad_address("h:65536") and bad_address("h:x")


def test_module_documentation_parses(tmp_path):
    """DOCUMENTATION, EXAMPLES and RETURN are valid YAML that ansible-doc renders."""
    names = [f"keyval.cluster.keyval_{m}" for m in ("info", "member", "leader")]
    proc = subprocess.run([str(BIN / "ansible-doc"), "--json", *names], cwd=tmp_path, env=environment(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "ERROR" not in proc.stderr, proc.stderr
    docs = json.loads(proc.stdout)
    for name in names:
        assert docs[name]["doc"]["options"] and docs[name]["examples"] and docs[name]["return"], name
