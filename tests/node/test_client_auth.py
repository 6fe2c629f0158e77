"""Tokens with roles and the node credential on the client port, against real `keyval serve`
processes: what each role may do, refusals that reveal nothing, registration only by nodes."""
import os
import re
import socket
import time
import urllib.request

import pytest

from keyval.client import protocol as p
from keyval.client import Client
from keyval.clientport.auth import node_credential
from keyval.errors import RequestRefused
from kvctl.credentials import new_token, tokens_file_text

from .procs import LocalCluster

DENIED = ("permission_denied", "permission denied")


def write_0600(path, data: bytes) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return str(path)


@pytest.fixture
def tokens():
    return {role: new_token() for role in ("admin", "readwrite", "read")}


@pytest.fixture
def secured(tmp_path, tokens):
    """Three nodes with a cluster secret and a tokens file."""
    secret = write_0600(tmp_path / "secret", b"s3cret-for-tests\n")
    tokens_file = write_0600(tmp_path / "tokens", tokens_file_text(tokens).encode())
    c = LocalCluster(tmp_path, extra=("--secret-file", secret, "--tokens-file", tokens_file),
                     client_options={"token": tokens["admin"]})
    c.start()
    yield c
    c.stop_all()


def refusal(call) -> tuple[str, str]:
    with pytest.raises(RequestRefused) as caught:
        call()
    return caught.value.code, str(caught.value)


def raw_call(address: str, *bodies) -> list:
    """Send requests on one plain connection, as a stranger's script would; their answers."""
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        for n, body in enumerate(bodies, 1):
            sock.sendall(p.frame(p.Request(p.PROTOCOL_VERSION, n, body)))
        answers = {}
        reader = sock.makefile("rb")
        while len(answers) < len(bodies):
            size = int.from_bytes(reader.read(4), "big")
            response = p.decode_response(reader.read(size))
            answers[response.id] = response.body
    return [answers[n] for n in range(1, len(bodies) + 1)]


def wait_registered(cluster, leader: str) -> dict:
    """Until every node's client address is known: it is where the removal watch asks."""
    deadline = time.monotonic() + 10
    while len(addresses := cluster.status(leader)["client_addresses"]) < len(cluster.initial):
        assert time.monotonic() < deadline, "the nodes never registered their client addresses"
        time.sleep(0.1)
    return addresses


def test_each_role_does_what_it_may_and_nothing_more(secured, tokens):
    leader = secured.wait_for_leader()
    wait_registered(secured, leader)
    follower = next(n for n in secured.initial if n != leader)
    endpoints = secured.endpoints()
    with Client(endpoints, token=tokens["admin"]) as admin:
        admin.put("k", "original")
    with Client(endpoints, token=tokens["read"]) as reader:
        assert reader.get("k") == b"original"
        assert [i.key for i in reader.scan("k")] == [b"k"]
        assert reader.status()["id"] in secured.initial
        assert reader.admin("cluster_status")["leader"] == leader
        assert refusal(lambda: reader.put("k", "by reader")) == DENIED
        assert refusal(lambda: reader.delete("k")) == DENIED
        assert refusal(lambda: reader.admin("snapshot_create")) == DENIED
    with Client(endpoints, token=tokens["readwrite"]) as writer:
        writer.put("k2", "by writer")
        assert writer.get("k") == b"original"  # the reader changed nothing
        assert refusal(lambda: writer.admin("remove", id=follower)) == DENIED
        assert refusal(lambda: writer.admin("compact")) == DENIED
    assert secured.status(follower)["voters"] == ["n1", "n2", "n3"]
    with Client(endpoints, token=tokens["admin"]) as admin:
        assert admin.admin("remove", id=follower)["changed"] is True
        assert admin.admin("snapshot_list") is not None
    # The removed node learns of its removal by asking its peers with the node credential.
    assert secured.nodes[follower].proc.wait(20) == 0


def test_no_token_a_wrong_one_and_a_low_one_are_refused_alike(secured, tokens):
    secured.wait_for_leader()
    endpoints = secured.endpoints()
    with Client(endpoints) as anonymous:
        assert refusal(lambda: anonymous.get("k")) == DENIED
        assert refusal(lambda: anonymous.status()) == DENIED
    with Client(endpoints, token="not-a-token") as guesser:
        assert refusal(lambda: guesser.get("k")) == DENIED
    with Client(endpoints, token=tokens["read"]) as reader:
        assert refusal(lambda: reader.put("k", "v")) == DENIED
    # On the wire: the Authenticate answer of an unknown token is the same refusal.
    unknown, then = raw_call(secured.endpoints()[0], p.Authenticate("wrong"), p.Get(b"k"))
    assert (unknown.code, unknown.message) == DENIED == (then.code, then.message)
    log = secured.nodes["n1"].log()
    assert "client request refused" in log and "not-a-token" not in log
    with urllib.request.urlopen(f"http://{secured.nodes['n1'].metrics_addr}/metrics", timeout=5) as reply:
        metrics = reply.read().decode()
    denied = re.search(r'^keyval_client_auth_total\{outcome="denied"\} (\S+)$', metrics, re.M)
    assert denied and float(denied.group(1)) >= 2, metrics


def test_anonymous_registration_is_refused_and_changes_nothing(secured, tokens):
    leader = secured.wait_for_leader()
    address = secured.nodes[leader].client_addr
    before = wait_registered(secured, leader)
    fake = "127.0.0.1:9"
    # Refused without a token and with every client token: only nodes register.
    for token in (None, tokens["read"], tokens["admin"]):
        bodies = ([p.Authenticate(token)] if token else []) + [p.RegisterClientAddress(leader, fake)]
        answer = raw_call(address, *bodies)[-1]
        assert (answer.code, answer.message) == DENIED
    # With the node credential: still only a member, at a well-formed address.
    node = node_credential(b"s3cret-for-tests")
    bad_node, bad_address = raw_call(address, p.Authenticate(node), p.RegisterClientAddress("intruder", fake),
                                     p.RegisterClientAddress(leader, "junk"))[1:]
    assert bad_node.code == p.INVALID and "not a member" in bad_node.message
    assert bad_address.code == p.INVALID and "HOST:PORT" in bad_address.message
    time.sleep(0.5)
    assert secured.status(leader)["client_addresses"] == before
    assert all(secured.nodes[n].running for n in secured.initial)


def test_an_open_port_still_refuses_anonymous_registration_when_there_is_a_secret(tmp_path):
    secret = write_0600(tmp_path / "secret", b"another secret")
    cluster = LocalCluster(tmp_path, size=1, extra=("--secret-file", secret))
    cluster.start()
    try:
        leader = cluster.wait_for_leader()
        address = cluster.nodes[leader].client_addr
        with Client([address]) as anyone:  # no tokens file: the port is open...
            anyone.put("k", "v")
        deadline = time.monotonic() + 10
        while cluster.status(leader)["client_addresses"] != {leader: address}:
            assert time.monotonic() < deadline, "the leader never registered its own address"
            time.sleep(0.1)
        answer, = raw_call(address, p.RegisterClientAddress(leader, "127.0.0.1:9"))
        assert (answer.code, answer.message) == DENIED  # ...but not for registration
        assert cluster.status(leader)["client_addresses"] == {leader: address}
        assert "no tokens_file" in cluster.nodes[leader].log()
    finally:
        cluster.stop_all()


@pytest.mark.parametrize("content, mode, message", [
    (b"admin ops " + b"ab" * 32 + b"\n", 0o644, "must be 0600"),
    (b"# fine\nsuperuser ops " + b"ab" * 32 + b"\n", 0o600, "line 2: role 'superuser'"),
    (b"admin ops not-a-hash\n", 0o600, "line 1: 'not-a-hash'"),
])
def test_a_bad_tokens_file_stops_the_node_with_one_line(tmp_path, content, mode, message):
    path = tmp_path / "tokens"
    path.write_bytes(content)
    path.chmod(mode)
    cluster = LocalCluster(tmp_path, size=1, extra=("--tokens-file", str(path)))
    node = cluster.nodes["n1"]
    cluster.start()
    assert node.proc.wait(15) != 0
    stderr = node.proc.stderr.read().decode()
    assert message in stderr and "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
