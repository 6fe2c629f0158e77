"""The client follows a `not_leader` redirect only to a well-formed HOST:PORT: a junk
address from a node (or anyone answering on its port) is no hint, never a crash."""
import asyncio

import pytest

from keyval.client import protocol as p
from keyval.client import AsyncClient
from keyval.errors import Timeout


async def redirecting_server(leader_address: str, connections: list):
    """A real loopback server that answers every request with not_leader -> leader_address."""
    async def serve(reader, writer):
        connections.append(writer.get_extra_info("peername"))
        while (payload := await p.read_frame(reader)) is not None:
            request = p.decode_request(payload)
            writer.write(p.frame(p.Response(p.PROTOCOL_VERSION, request.id,
                                            p.Error(p.NOT_LEADER, "not the leader", "n9", leader_address))))
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


@pytest.mark.parametrize("junk", ["junk", "host:notaport", ":80", "127.0.0.1:99999"])
def test_a_malformed_leader_address_is_not_followed(junk):
    async def run():
        connections = []
        server = await redirecting_server(junk, connections)
        address = "127.0.0.1:%d" % server.sockets[0].getsockname()[1]
        try:
            async with AsyncClient([address], timeout=0.5) as client:
                with pytest.raises(Timeout):
                    await client.put("k", "v")
                assert client.endpoints == [address]  # the junk was not added
        finally:
            server.close()
            await server.wait_closed()
        assert connections  # it did ask the real server

    asyncio.run(run())
