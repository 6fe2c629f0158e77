"""--timeout is the whole command's limit, timeout messages say what happened, and an endpoint
that accepts connections but never answers (a frozen process) does not make commands give up
while other endpoints answer."""
from __future__ import annotations

import asyncio
import socket
import time

import pytest

from keyval.client import AsyncClient
from keyval.errors import NoLeader, Timeout, Unreachable
from kvctl_harness import kvctl, ok


@pytest.fixture
def silent_endpoint():
    """A port that accepts connections (the kernel completes them) and never replies."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize("args, limit", [((), 5.0), (("--timeout", "2"), 2.0)])
def test_cluster_commands_give_up_within_timeout(tmp_path, args, limit):
    started = time.monotonic()
    result = kvctl("--endpoints", "127.0.0.1:1", *args, "cluster", "info", cwd=tmp_path)
    took = time.monotonic() - started
    assert result.returncode == 3, result.stderr
    assert f"within {limit:g}s" in result.stderr, result.stderr
    assert took < limit + 1.5, f"took {took:.1f}s with a limit of {limit:g}s"


def test_an_endpoint_that_never_answers_is_named_with_a_reason(silent_endpoint):
    async def attempt():
        async with AsyncClient([silent_endpoint], timeout=1.0) as client:
            with pytest.raises(Unreachable) as caught:
                await client.get("k")
        return str(caught.value)

    message = asyncio.run(attempt())
    assert message.endswith(f"{silent_endpoint}: no reply (timed out)"), message


def test_timeout_messages_round_give_a_reason_and_only_warn_for_writes(new_cluster, silent_endpoint):
    c = new_cluster(3)
    for node in ("node2", "node3"):  # node1 answers, but no leader can be elected
        ok(c.kvctl("local", "stop", node))

    async def attempt(endpoints, call):
        async with AsyncClient(endpoints, timeout=2.0 - 0.00149) as client:
            with pytest.raises(Timeout) as caught:
                await call(client)
        return caught.value

    def read(client):
        return client.get("k")

    def write(client):
        return client.put("k", "v")

    # node1 answers that it does not lead (naming a stopped leader, or none): NoLeader, and a
    # write was refused, not left pending.
    for call in (read, write):
        error = asyncio.run(attempt([c.endpoint(1)], call))
        assert isinstance(error, NoLeader) and error.code == "no_leader", repr(error)
        assert str(error).startswith("no answer within 2s (") and "()" not in str(error), error
        assert "may still apply" not in str(error), error
    # A node that took the write and never answered: it may still apply, and the message says so.
    taken = asyncio.run(attempt([c.endpoint(1), silent_endpoint], write))
    assert not isinstance(taken, NoLeader), repr(taken)
    assert str(taken).startswith("no answer within 2s (") and str(taken).endswith("; the write may still apply"), taken
    unanswered_read = asyncio.run(attempt([c.endpoint(1), silent_endpoint], read))
    assert "()" not in str(unanswered_read) and "may still apply" not in str(unanswered_read), unanswered_read


def test_a_frozen_endpoint_does_not_stop_commands_that_others_answer(shared_cluster, silent_endpoint):
    c = shared_cluster
    endpoints = ",".join([silent_endpoint] + [c.endpoint(n) for n in (1, 2, 3)])
    ok(c.kvctl("--endpoints", endpoints, "put", "frozen/k", "v"))
    assert ok(c.kvctl("--endpoints", endpoints, "get", "frozen/k")).stdout.strip() == "v"

    async def direct():  # the client alone, the silent endpoint tried first
        async with AsyncClient([silent_endpoint, c.endpoint(1), c.endpoint(2), c.endpoint(3)], timeout=4.0) as client:
            return await client.get("frozen/k")

    assert asyncio.run(direct()) == b"v"
