"""The guide's "Adding Nodes" and "Scaling Up/Down" examples on a real cluster, under writes,
with the refusals that concern learners and concurrent changes."""
from __future__ import annotations

import asyncio

from cluster_harness import (
    Writer,
    members,
    node_log,
    peer,
    refused,
    run_json,
    wait_removed_and_exited,
    wait_voter,
)
from keyval.client import AsyncClient
from keyval.errors import RequestRefused
from kvctl_harness import ok

MEMBER_FIELDS = {"id", "peer_address", "client_address", "type", "is_leader", "healthy", "match_index", "lag",
                 "last_contact", "bytes_replicated", "caught_up"}


def test_add_a_node_then_scale_3_to_5_to_3(new_cluster):
    c = new_cluster()
    with Writer([c.endpoint(n) for n in range(1, 6)]) as writer:
        # Initial state: 3 nodes (quorum = 2)
        table = ok(c.kvctl("cluster", "members")).stdout.splitlines()
        assert table[0].split()[:3] == ["ID", "TYPE", "LEADER"] and len(table) == 4
        info = run_json(c, "cluster", "info")
        assert (len(info["voters"]), info["quorum"], info["learners"]) == (3, 2, [])
        assert {"cluster_id", "leader", "term", "commit_index", "voters", "learners", "quorum", "members"} <= set(info)
        assert all(MEMBER_FIELDS <= set(m) for m in info["members"])

        # A learner whose process is not running yet: promoting it or making it leader is refused.
        ok(c.kvctl("cluster", "add", "node5", peer(c, 5)))
        learner = run_json(c, "cluster", "member", "node5")
        assert (learner["type"], learner["caught_up"], learner["healthy"]) == ("Learner", False, False)
        message = refused(c, "cluster", "promote", "node5")
        assert "cannot promote node5: it has not caught up" in message and "entries behind the leader" in message
        assert "cannot transfer leadership to node5: it is a learner" in refused(c, "cluster", "transfer", "node5")
        health = c.kvctl("cluster", "health")
        assert health.returncode == 1 and "Unhealthy" in health.stdout and "Learner node5 is stuck" in health.stdout
        shown = ok(c.kvctl("cluster", "member", "node5")).stdout
        for label in ("Learner Status:", "Match Index:", "Bytes Replicated:", "Caught Up:", "Last Contact:"):
            assert label in shown, shown
        ok(c.kvctl("cluster", "remove", "node5"))  # a learner can always be removed

        # The guide: add node4, watch it catch up, it is promoted automatically.
        ok(c.kvctl("local", "start", "node4"))
        added = ok(c.kvctl("cluster", "add", "node4", peer(c, 4))).stdout
        assert added.startswith(f"added node4 ({peer(c, 4)}) as a learner")
        assert "node4" in ok(c.kvctl("cluster", "member", "node4")).stdout
        wait_voter(c, "node4")
        leader = run_json(c, "cluster", "leader")["id"]
        assert "auto-promoted learner node4 to voter" in node_log(c, leader)
        info = run_json(c, "cluster", "info")
        assert (len(info["voters"]), info["quorum"]) == (4, 3)  # Final state: 4 nodes (quorum = 3)
        assert "Quorum:       3 of 4 voters" in ok(c.kvctl("cluster", "info")).stdout
        assert ok(c.kvctl("cluster", "add", "node4", peer(c, 4))).stdout.startswith("node4 is already a voter")
        assert ok(c.kvctl("cluster", "promote", "node4")).stdout == "node4 is already a voter\n"

        # Scaling up: node5 too. Should show: 5 voters, quorum = 3.
        ok(c.kvctl("local", "start", "node5"))
        ok(c.kvctl("cluster", "add", "node5", peer(c, 5)))
        wait_voter(c, "node5")
        info = run_json(c, "cluster", "info")
        assert (info["voters"], info["quorum"]) == (["node1", "node2", "node3", "node4", "node5"], 3)
        assert all(m["healthy"] for m in info["members"])

        # Only one configuration change at a time: the second is refused, naming the first.
        second = asyncio.run(_two_changes_at_once(run_json(c, "cluster", "leader")["client_address"]))
        assert "another configuration change is in progress: adding node6" in second, second

        # Scaling down: remove node5, then node4 (transferring leadership away first if needed).
        for node in ("node5", "node4"):
            if run_json(c, "cluster", "leader")["id"] == node:
                ok(c.kvctl("cluster", "transfer", "node1"))
            assert ok(c.kvctl("cluster", "remove", node)).stdout.startswith(f"removed {node}")
            wait_removed_and_exited(c, node)
        info = run_json(c, "cluster", "info")
        assert (info["voters"], info["quorum"]) == (["node1", "node2", "node3"], 2)  # 3 voters, quorum = 2
        assert ok(c.kvctl("cluster", "health")).stdout.startswith("Status:          Healthy")
        assert writer.check() > 0


async def _two_changes_at_once(endpoint: str) -> str:
    """Send two membership changes in the same instant; return the refusal of the second.
    (Repeated if the first happened to commit before the second arrived.)"""
    async with AsyncClient([endpoint], timeout=10) as client:
        for _ in range(5):
            results = await asyncio.gather(
                client.admin("add", id="node6", address="127.0.0.1:1"),
                client.admin("add", id="node7", address="127.0.0.1:2"),
                return_exceptions=True)
            for node in ("node6", "node7"):  # learners that never ran: always removable
                try:
                    await client.admin("remove", id=node)
                except RequestRefused:
                    pass
            errors = [r for r in results if isinstance(r, RequestRefused)]
            if errors:
                assert not isinstance(results[0], Exception), results[0]
                return str(errors[0])
    raise AssertionError("two simultaneous changes were never refused")
