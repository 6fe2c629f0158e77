"""`kvctl status`: every endpoint about itself, with its version and its peers' versions."""
from __future__ import annotations

import json
import time

from keyval import __version__
from kvctl_harness import free_base_port, kvctl, ok


def test_each_node_reports_its_version_and_the_leader_its_peers(new_cluster):
    c = new_cluster(3)
    ok(c.kvctl("put", "k", "v"))
    deadline = time.monotonic() + 30
    while True:
        docs = json.loads(ok(c.kvctl("status", "--json")).stdout)
        leader = [d for d in docs if d["role"] == "leader"]
        if leader and len(leader[0]["peer_versions"]) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert [d["endpoint"] for d in docs] == [c.endpoint(n) for n in (1, 2, 3)]
    assert {d["version"] for d in docs} == {__version__}
    others = {d["id"] for d in docs} - {leader[0]["id"]}
    assert leader[0]["peer_versions"] == {n: {"version": __version__, "protocol": 2} for n in others}
    text = ok(c.kvctl("status")).stdout.splitlines()
    assert text[0].split() == ["ENDPOINT", "ID", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "VERSION"]
    assert all(line.split()[-1] == __version__ for line in text[1:]), text
    members = json.loads(ok(c.kvctl("cluster", "members", "--json")).stdout)
    assert {(m["version"], m["protocol"]) for m in members} == {(__version__, 2)}


def test_an_endpoint_that_does_not_answer_is_listed_and_none_answering_exits_3(new_cluster, tmp_path):
    c = new_cluster(1)
    dead = f"127.0.0.1:{free_base_port()}"
    docs = json.loads(ok(kvctl("--json", "--endpoints", f"{c.endpoint(1)},{dead}", "status", cwd=tmp_path)).stdout)
    assert docs[0]["version"] == __version__ and docs[1]["endpoint"] == dead and "error" in docs[1]
    result = kvctl("--json", "--timeout", "2", "--endpoints", dead, "status", cwd=tmp_path)
    assert result.returncode == 3 and json.loads(result.stdout)["error"]["code"] == "unreachable"
