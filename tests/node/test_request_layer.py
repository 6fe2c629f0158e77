"""The request layer of a real node (keyval.runtime.requests), in process over the memory
storage and the tcp transport on loopback: a retried write enters the log once, and a retry
of a write already applied is answered from the client's session without a second effect."""
from __future__ import annotations

import asyncio
import socket

from keyval.config import NodeConfig
from keyval.kv import encode_put
from keyval.plugin_api.loading import build_plugin_manager
from keyval.runtime.node import Node
from keyval.runtime.timing import Timing


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_retried_write_joins_its_first_attempt_and_takes_effect_once():
    asyncio.run(_scenario())


async def _scenario():
    peer = f"127.0.0.1:{_free_port()}"
    config = NodeConfig(id="n1", peer_addr=peer, client_addr="127.0.0.1:0", storage="memory", transport="tcp",
                        bootstrap={"n1": peer}, insecure_peers=True)
    node = Node(config, build_plugin_manager(), Timing(tick_interval=0.01))
    await node.start()
    try:
        for _ in range(500):
            if node.is_leader():
                break
            await asyncio.sleep(0.01)
        assert node.is_leader()
        await node.propose(b"", 5.0)  # the leader's first entry is committed: a clean start
        before = node.status().last_index
        write = encode_put(b"k", b"v1", client="c1", seq=1)
        first = node.submit(write, 5.0, ("c1", 1))
        retry = node.submit(write, 5.0, ("c1", 1))  # the client timed out and sent it again
        one, two = await first, await retry
        assert one.ok and two == one
        assert node.status().last_index == before + 1  # one entry for both attempts
        revision = node.revision

        # A retry after the write was applied: a new entry, answered from the session.
        again = await node.submit(write, 5.0, ("c1", 1))
        assert again == one
        assert node.status().last_index == before + 2 and node.revision == revision
        assert node.get(b"k").value == b"v1"

        # A write without a session is never joined to another.
        plain = encode_put(b"k", b"v2")
        a, b = await asyncio.gather(node.submit(plain, 5.0), node.submit(plain, 5.0))
        assert b.revision == a.revision + 1
    finally:
        await node.stop()
