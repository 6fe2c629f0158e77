"""Random byte streams, chunked at random, into a real node's client port never crash it."""
from __future__ import annotations

import socket

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyval.client import protocol as p
from keyval.client import Client

from .client_floods import host_port
from .procs import LocalCluster


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    cluster = LocalCluster(tmp_path_factory.mktemp("fuzz"), size=1)
    cluster.start()
    cluster.wait_for_leader()
    yield cluster.nodes["n1"]
    cluster.stop_all()


def framed(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


fields = st.one_of(st.integers(-(2**63), 2**64 - 1), st.binary(max_size=64), st.text(max_size=64), st.none(),
                   st.booleans(), st.dictionaries(st.text(max_size=8), st.integers(-(2**63), 2**63), max_size=4))
requests = st.builds(lambda i, tag, rest: framed(msgspec.msgpack.encode([1, i, [tag, *rest]])),
                     st.integers(0, 2**64 - 1), st.sampled_from(["put", "delete", "get", "scan", "status", "admin", "x"]),
                     st.lists(fields, max_size=7))
pieces = st.one_of(st.binary(max_size=200), st.binary(max_size=200).map(framed), requests,
                   st.integers(0, 2**32 - 1).map(lambda n: n.to_bytes(4, "big")))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stream=st.lists(pieces, max_size=8).map(b"".join), cuts=st.lists(st.integers(1, 64), max_size=6))
def test_random_streams_never_crash_the_node(node, stream, cuts):
    with socket.create_connection(host_port(node.client_addr), timeout=5) as sock:
        offset = 0
        for size in [*cuts, len(stream)]:
            try:
                sock.sendall(stream[offset:offset + size])
            except OSError:  # the node hung up on garbage: allowed
                break
            offset += size
    assert node.running


def test_the_node_answers_after_the_fuzz(node):
    with Client([node.client_addr], timeout=10) as client:
        assert client.status(node.client_addr)["id"] == "n1"
        client.put("still", "here")
        assert client.get("still") == b"here"
    assert node.running and "Traceback" not in node.log()
