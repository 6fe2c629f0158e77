"""The guide's "Leadership Transfer" and "Removing Nodes" examples on a real cluster, under
writes, with the removal refusals of its safety list."""
from __future__ import annotations

import json

from cluster_harness import Writer, ensure_leader, refused, run_json, wait_removed_and_exited
from kvctl_harness import ok


def test_transfer_during_maintenance_then_remove_the_old_leader(new_cluster):
    c = new_cluster()
    with Writer([c.endpoint(n) for n in range(1, 4)]) as writer:
        # Before maintenance on node1 (current leader): transfer leadership to node2, verify.
        ensure_leader(c, "node1")
        out = ok(c.kvctl("cluster", "transfer", "node2")).stdout
        assert out.startswith("leadership transferred from node1 to node2 in ") and "(term " in out
        leader = run_json(c, "cluster", "leader")
        assert (leader["id"], set(leader)) == ("node2", {"id", "peer_address", "client_address", "term"})
        assert "Leader:         node2" in ok(c.kvctl("cluster", "leader")).stdout
        assert ok(c.kvctl("cluster", "transfer", "node2")).stdout == "node2 is already the leader\n"

        # Removing the leader without a transfer is refused, with the hint.
        message = refused(c, "cluster", "remove", "node2")
        assert "cannot remove node2: it is the leader; transfer leadership first (kvctl cluster transfer" in message

        # The guide's order: transfer first, then remove the old leader (node1 here).
        ensure_leader(c, "node1")
        ok(c.kvctl("cluster", "transfer", "node2"))
        assert ok(c.kvctl("cluster", "remove", "node1")).stdout.startswith("removed node1")
        wait_removed_and_exited(c, "node1")
        info = run_json(c, "cluster", "info")
        assert (info["voters"], info["quorum"], info["leader"]) == (["node2", "node3"], 2, "node2")

        # --force removes the leader itself: leadership moves first.
        out = ok(c.kvctl("cluster", "remove", "node2", "--force")).stdout
        assert out.startswith("transferred leadership to node3, then removed node2"), out
        wait_removed_and_exited(c, "node2")
        assert run_json(c, "cluster", "info")["voters"] == ["node3"]

        # The last voting member can never go, not even with --force.
        for args in (("node3",), ("node3", "--force")):
            assert refused(c, "cluster", "remove", *args) == \
                "kvctl cluster remove: the cluster refused: cannot remove node3: it is the last voting member of the cluster"
        error = run_json_error(c, "cluster", "remove", "node3")
        assert error["code"] == "refused" and "last voting member" in error["message"]
        assert writer.check([c.endpoint(3)]) > 0


def run_json_error(c, *args):
    result = c.kvctl(*args, "--json")
    assert result.returncode == 1, result
    return json.loads(result.stdout)["error"]
