"""A peer outside the configuration cannot rewrite data or depose the leader of real nodes.

The "intruder" holds the key: it speaks the peer protocol through the tcp transport itself,
with the cluster secret when the nodes have one, so it passes whatever the transport checks;
only the Raft core's membership rule stands in its way.
"""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

from keyval.kv import encode_put
from keyval.raft import Entry
from keyval.raft.messages import AppendEntries, Heartbeat, RequestVote
from keyval_plugins.transport.tcp_transport import TcpTransport

from .procs import free_ports
from .test_node_metrics import scrape


async def _send_as_intruder(cluster_id: str, secret: Path, messages: list[tuple[str, object]]) -> None:
    transport = TcpTransport({"secret_file": str(secret)} if secret.exists() else {})
    transport.set_cluster_id(cluster_id)
    await transport.start("intruder", f"127.0.0.1:{free_ports(1)[0]}", lambda message: None)
    try:
        for address, message in messages:
            transport.send(message.to, address, message)
        await asyncio.sleep(1.0)  # let the frames leave
    finally:
        await transport.close()


def test_a_non_member_cannot_overwrite_a_key_or_depose_the_leader(cluster):
    leader = cluster.wait_for_leader()
    with cluster.client() as c:
        c.put("k", "honest")
    before = {n: cluster.status(n) for n in cluster.initial}
    term = before[leader]["term"]

    forged = []
    for node_id in cluster.initial:
        status, address = before[node_id], cluster.nodes[node_id].peer_addr
        last = status["last_index"]
        evil = Entry(term + 1, last + 1, data=encode_put(b"k", b"evil"))
        forged += [
            (address, AppendEntries(term + 1, "intruder", node_id, last, term, (evil,), last + 1)),
            (address, Heartbeat(term + 1, "intruder", node_id, commit=last + 1)),
            (address, RequestVote(term + 1, "intruder", node_id, last_index=last + 9, last_term=term + 1, transfer=True)),
        ]
    # The secret the test's nodes share, if they were started with one (tests/node/procs.py).
    asyncio.run(_send_as_intruder(before[leader]["cluster_id"], cluster.base / "cluster.secret", forged))

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        dropped = [scrape(cluster.nodes[n]).get("keyval_raft_dropped_non_member_total", 0) for n in cluster.initial]
        if all(d >= 3 for d in dropped):
            break
        time.sleep(0.2)
    assert all(d >= 3 for d in dropped), dropped
    # Same leader, same term, the key as it was, every node still running.
    assert cluster.wait_for_leader() == leader
    for node_id in cluster.initial:
        assert cluster.status(node_id)["term"] == term
        assert cluster.nodes[node_id].running
    with cluster.client() as c:
        assert c.get("k") == b"honest"
        c.put("k2", "after")
    assert "from nodes in no known configuration (last from 'intruder')" in cluster.nodes[leader].log()
