"""The guide's "Replacing Nodes" examples: a killed node replaced with `cluster replace`
(re-run after an interruption) and by the manual steps, under writes."""
from __future__ import annotations

import json
import os
import signal

from cluster_harness import Writer, members, peer, refused, run_json, wait_for, wait_voter
from kvctl_harness import ok


def kill(c, node: str) -> None:
    pid = next(r["pid"] for r in c.status() if r["id"] == node)
    os.kill(pid, signal.SIGKILL)
    wait_for(f"{node} to die", lambda: not any(r["id"] == node and r["running"] for r in c.status()))


def test_replace_a_failed_node(new_cluster):
    c = new_cluster()
    with Writer([c.endpoint(n) for n in range(1, 6)]) as writer:
        # Node2 has failed and needs replacement.
        kill(c, "node2")

        def unreachable_reported():
            result = c.kvctl("cluster", "health")
            return result.returncode == 1 and "Member node2 is unreachable" in result.stdout

        wait_for("health to report node2", unreachable_reported)
        # Removing a healthy voter now would leave node1 with the dead node2: no quorum.
        assert "only 1 are healthy (node2 not), and they need 2 for a quorum" in \
            refused(c, "cluster", "remove", "node3")

        # An interrupted replace: node4 was added, then the command stopped. Running it again
        # skips what is done and finishes the job.
        ok(c.kvctl("local", "start", "node4"))
        ok(c.kvctl("cluster", "add", "node4", peer(c, 4), "--no-auto-promote"))
        out = ok(c.kvctl("cluster", "replace", "node2", "node4", peer(c, 4))).stdout
        assert out.startswith(f"Replacing node2 with node4 ({peer(c, 4)})\n[1/4] node4 is already a learner: skipped\n")
        assert "[3/4] promoted node4 to voter" in out and "[4/4] removed node2" in out
        assert out.endswith("replaced node2 with node4: voters node1, node3, node4 (quorum 2)\n"), out
        again = ok(c.kvctl("cluster", "replace", "node2", "node4", peer(c, 4))).stdout
        assert "[1/4] node4 is already a voter: skipped" in again
        assert "[4/4] node2 is not a member any more: skipped" in again
        assert "nothing to replace" in refused(c, "cluster", "replace", "node9", "node8", peer(c, 5))

        # The manual way: node3 fails; add node5, wait for catch-up, promote, remove node3.
        kill(c, "node3")
        ok(c.kvctl("local", "start", "node5"))
        ok(c.kvctl("cluster", "add", "node5", peer(c, 5)))
        wait_for("node5 to catch up", lambda: members(c)["node5"]["caught_up"])
        assert "node5" in ok(c.kvctl("cluster", "member", "node5")).stdout
        promoted = ok(c.kvctl("cluster", "promote", "node5")).stdout  # or it was promoted already
        assert promoted in ("promoted node5 to voter\n", "node5 is already a voter\n"), promoted
        wait_voter(c, "node5")
        ok(c.kvctl("cluster", "remove", "node3"))
        final = members(c)
        assert sorted(final) == ["node1", "node4", "node5"]
        assert all(m["type"] == "Voter" and m["healthy"] for m in final.values())
        assert run_json(c, "cluster", "info")["quorum"] == 2
        assert writer.check() > 0

    # Two of three voters down: no leader, no quorum — health says so, and exits 1.
    ok(c.kvctl("local", "stop", "node4"))
    ok(c.kvctl("local", "stop", "node5"))

    def leaderless():
        result = c.kvctl("cluster", "health", "--json")
        return result.returncode == 1 and json.loads(result.stdout)

    health = wait_for("health to see no leader", lambda: (h := leaderless()) and h["leader"] is None and h)
    assert (health["healthy"], health["quorum_available"], health["total_members"]) == (False, False, 3)
    assert health["issues"][:2] == ["No leader elected: 1 of 3 members answer and none of them leads",
                                    "Quorum lost: only 1 of 3 voters are reachable (a quorum needs 2)"]
    assert health["issues"][2].startswith("Member node4 is unreachable: it does not answer at 127.0.0.1:")
    shown = c.kvctl("cluster", "health").stdout
    assert "Status:          Unhealthy\nLeader:          none (No leader elected)\nQuorum:          LOST" in shown
