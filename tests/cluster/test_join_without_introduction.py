"""A node started empty joins when the leader adds it, with nobody telling it where its peers
are: kvctl reaches only the original members, so its `introduce` step finds no node4 to
introduce. node4's transport answers the leader at the address the leader's own traffic came
from (tcp: the hello of the leader's connection; udp: the datagrams' source), stamped with
the cluster id it adopted from the leader's first message."""
from __future__ import annotations

import pytest

from cluster_harness import node_log, run_json, wait_for, wait_voter
from keyval.client import Client
from kvctl_harness import Cluster, free_base_port, ok, take_down

INTRODUCED = "told where its peers are"  # what keyval.cluster.operations logs on `introduce`


@pytest.fixture
def cluster_over(tmp_path):
    """``cluster_over(transport)``: a 3-node `kvctl local up` cluster, always taken down."""
    started: list[Cluster] = []

    def up(transport: str) -> Cluster:
        c = Cluster(tmp_path, free_base_port(), 3)
        started.append(c)
        ok(c.kvctl("local", "up", "--nodes", "3", "--base-port", str(c.base_port), "--transport", transport))
        return c

    yield up
    for c in started:
        take_down(c)


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_a_new_node_joins_with_only_the_members_as_endpoints(cluster_over, transport):
    c = cluster_over(transport)
    originals = ",".join(c.endpoint(n) for n in (1, 2, 3))
    with Client(originals.split(","), timeout=10.0) as client:
        for n in range(50):
            client.put(f"before/{n}", f"v{n}")

    ok(c.kvctl("local", "start", "node4"))
    added = ok(c.kvctl("--endpoints", originals, "cluster", "add", "node4", f"127.0.0.1:{c.base_port + 4}"))
    assert added.stdout.startswith("added node4"), added.stdout

    wait_voter(c, "node4")
    leader = run_json(c, "--endpoints", originals, "cluster", "leader")["id"]
    assert "auto-promoted learner node4 to voter" in node_log(c, leader)
    member = run_json(c, "--endpoints", originals, "cluster", "member", "node4")
    assert member["healthy"] and member["caught_up"], member

    log = node_log(c, "node4")
    assert INTRODUCED not in log, "node4 was introduced: the test no longer shows the transports find the way"
    cluster_id = run_json(c, "--endpoints", originals, "cluster", "info")["cluster_id"]
    assert f"adopted cluster id {cluster_id} from the traffic of {leader}" in log, log[-3000:]
    assert "Traceback" not in log and "CRITICAL" not in log, log[-3000:]

    # What was written before it joined reached it (its own status, not a leader's view).
    wait_for("node4 to hold the writes", lambda: _status(c, 4)["keys"] >= 50)


def _status(c: Cluster, n: int) -> dict:
    with Client([c.endpoint(n)], timeout=5.0) as client:
        return client.status(c.endpoint(n))
