"""The node as users run it: real `keyval serve` processes on loopback, real files, fsync."""
import socket
import threading
import time

import pytest

from keyval.client import protocol as p
from keyval.client import Client
from keyval.errors import RequestRefused

from .procs import LocalCluster


def test_writes_through_any_node_are_readable_through_every_node(cluster):
    cluster.wait_for_leader()
    for n, node_id in enumerate(cluster.initial):
        with Client([cluster.nodes[node_id].client_addr]) as c:  # follows not_leader to the leader
            c.put(f"via-{node_id}", f"value-{n}")
    for node_id in cluster.initial:
        with Client([cluster.nodes[node_id].client_addr]) as c:
            assert [c.get(f"via-{m}") for m in cluster.initial] == [b"value-0", b"value-1", b"value-2"]
    # Each node's own state machine holds them too (serializable reads are served locally).
    deadline = time.monotonic() + 5
    for node_id in cluster.initial:
        with Client([cluster.nodes[node_id].client_addr]) as c:
            while c.get("via-n3", serializable=True) != b"value-2":
                assert time.monotonic() < deadline, f"{node_id} never applied the writes"
                time.sleep(0.05)


def test_killing_the_leader_loses_no_acknowledged_write(cluster):
    first = cluster.wait_for_leader()
    acknowledged: list[str] = []
    stop = threading.Event()

    def writer():
        with cluster.client(timeout=15) as c:
            n = 0
            while not stop.is_set():
                key = f"w{n:05d}"
                c.put(key, key)  # raises (failing the test) if the cluster never recovers
                acknowledged.append(key)
                n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    while len(acknowledged) < 100:
        time.sleep(0.01)
    cluster.nodes[first].kill()  # kill -9, mid-stream
    killed_at = len(acknowledged)
    second = cluster.wait_for_leader(among=[n for n in cluster.initial if n != first])
    while len(acknowledged) < killed_at + 100:  # the client carried on with the new leader
        assert thread.is_alive()
        time.sleep(0.01)
    stop.set()
    thread.join(30)
    assert second != first

    # Every node down, then up again: everything acknowledged is still there.
    cluster.stop_all()
    cluster.start()
    cluster.wait_for_leader()
    with cluster.client() as c:
        items = {i.key.decode() for i in c.scan("w")}
    missing = [k for k in acknowledged if k not in items]
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"


def test_a_retried_write_after_a_leader_change_applies_once(cluster):
    leader = cluster.wait_for_leader()
    retry = p.Put(b"once", b"1", -1, "retrying-client", 1, 1)
    first = _send(cluster.nodes[leader].client_addr, retry)
    assert isinstance(first, p.WriteReply) and first.ok
    cluster.nodes[leader].kill()
    new_leader = cluster.wait_for_leader(among=[n for n in cluster.initial if n != leader])
    before = cluster.status(new_leader)["revision"]
    again = _send(cluster.nodes[new_leader].client_addr, retry)  # the same (client, seq) again
    assert again == first  # the same answer, the same revision...
    status = cluster.status(new_leader)
    assert status["revision"] == before  # ...and nothing applied a second time
    with Client([cluster.nodes[new_leader].client_addr]) as c:
        assert c.get_item("once").revision == first.revision


def test_bad_input_gets_a_clear_error_and_changes_nothing(cluster):
    leader = cluster.wait_for_leader()
    address = cluster.nodes[leader].client_addr
    with Client([address]) as c:
        c.put("keep", "me")
        revision = cluster.status(leader)["revision"]
        with pytest.raises(RequestRefused, match="key is 5000 bytes; the limit is 4096"):
            c.put("k" * 5000, "v")
        with pytest.raises(RequestRefused, match="value is 1048577 bytes; the limit is 1048576"):
            c.put("k", b"v" * (1024 * 1024 + 1))
    # Garbage bytes and an unknown request type on the client port: answered, never fatal.
    host, port = address.split(":")
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        raw.sendall((12).to_bytes(4, "big") + b"\xc1" * 12)
        reply = p.decode_response(_read_frame(raw))
        assert reply.body.code == p.INVALID
    unknown = _send_raw(address, [1, 7, ["frobnicate", 1, 2]])
    assert unknown.body.code == p.UNKNOWN_REQUEST and unknown.id == 7
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        raw.sendall((1 << 30).to_bytes(4, "big"))  # claims a 1 GiB frame: refused, connection closed
        assert p.decode_response(_read_frame(raw)).body.code == p.INVALID
    with Client([address]) as c:
        assert c.get("keep") == b"me"
        assert c.get("k") is None
    assert cluster.status(leader)["revision"] == revision
    # A client that half-closes after its request still gets the answer of a write in flight.
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(p.frame(p.Request(p.PROTOCOL_VERSION, 3, p.Put(b"half", b"closed"))))
        raw.shutdown(socket.SHUT_WR)
        reply = p.decode_response(_read_frame(raw))
        assert reply.id == 3 and reply.body.ok and reply.body.revision == revision + 1
        assert raw.recv(1) == b""  # then the node hangs up


def test_a_data_dir_of_another_cluster_is_refused(cluster, tmp_path):
    cluster.wait_for_leader()
    cluster.nodes["n1"].stop()
    other = LocalCluster(tmp_path / "other")
    node = other.nodes["n1"]
    node.data_dir = cluster.nodes["n1"].data_dir  # cluster A's data, cluster B's bootstrap
    node.start(other.bootstrap)
    assert node.proc.wait(20) == 1
    stderr = node.proc.stderr.read().decode()
    assert "belongs to cluster" in stderr and len(stderr.strip().splitlines()) == 1
    # The data is untouched: n1 rejoins its own cluster with everything it had.
    with cluster.client() as c:
        c.put("after", "refusal")
    cluster.start("n1")
    with Client([cluster.nodes["n1"].client_addr]) as c:
        assert c.get("after") == b"refusal"


def _read_frame(sock) -> bytes:
    header = _recv_exactly(sock, 4)
    return _recv_exactly(sock, int.from_bytes(header, "big"))


def _recv_exactly(sock, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "connection closed early"
        data += chunk
    return data


def _send(address: str, body):
    host, port = address.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(p.frame(p.Request(p.PROTOCOL_VERSION, 1, body)))
        return p.decode_response(_read_frame(raw)).body


def _send_raw(address: str, document):
    import msgspec

    host, port = address.split(":")
    payload = msgspec.msgpack.encode(document)
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(len(payload).to_bytes(4, "big") + payload)
        return p.decode_response(_read_frame(raw))
