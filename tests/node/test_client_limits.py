"""Client-port limits of a real `keyval serve` process, under the floods of issue 11."""
from __future__ import annotations

import time

from keyval.client import protocol as p
from keyval.client import Client
from keyval.errors import KeyvalError

from .client_floods import (allow_descriptors, close_all, closed_by_peer, open_connections, read_response, rss_bytes,
                            send_quietly)
from .procs import LocalCluster
from .test_node_metrics import scrape

MiB = 1 << 20


def status_request(request_id: int) -> bytes:
    return p.frame(p.Request(p.PROTOCOL_VERSION, request_id, p.Status()))


def test_half_sent_large_frames_are_bounded_and_the_node_keeps_serving(tmp_path):
    allow_descriptors(2200)
    buffer_cap, connections = 32 * MiB, 300
    cluster = LocalCluster(tmp_path, size=1, extra=("--max-client-connections", str(connections),
                                                   "--client-buffer-bytes", str(buffer_cap),
                                                   "--client-idle-timeout", "8"))
    cluster.start()
    node = cluster.nodes["n1"]
    flood = []
    try:
        cluster.wait_for_leader()
        with Client([node.client_addr], timeout=10) as client:
            client.put("before", "flood")  # a client connected before the flood
            rss_before = rss_bytes(node.proc.pid)
            for _ in range(4):  # the client's requests in between keep it from going idle
                flood += open_connections(node.client_addr, 500)
                assert client.get("before") == b"flood"
            assert len(flood) == 2000
            # Each starts an 8 MB frame and sends 256 KiB of it: 500 MB if all were held.
            partial = (p.MAX_FRAME - 1).to_bytes(4, "big") + b"\0" * (256 << 10)
            for sock in flood:
                send_quietly(sock, partial)
            time.sleep(3)
            grown = rss_bytes(node.proc.pid) - rss_before
            assert grown < buffer_cap + 48 * MiB, f"RSS grew by {grown / MiB:.0f} MiB"
            # The client connected before keeps being served.
            client.put("during", "flood")
            assert client.get("before") == b"flood"
        samples = scrape(node)
        events = {k.split('"')[1]: v for k, v in samples.items() if k.startswith("keyval_client_limit_events_total")}
        # Slots freed by connections closed at the buffer cap were taken by later ones.
        assert events["refused"] >= 1000 and events["refused"] + events["accepted"] >= 2000
        assert events["closed_node_buffer"] >= 1
        assert samples["keyval_client_buffered_bytes"] <= buffer_cap
        assert samples["keyval_client_connections"] <= connections
        # Frames left unfinished are closed after the idle timeout; then new clients get in.
        time.sleep(10)
        assert scrape(node)['keyval_client_limit_events_total{event="closed_frame_timeout"}'] >= 1
        close_all(flood)
        with Client([node.client_addr], timeout=10) as client:
            assert client.get("during") == b"flood"
        assert node.running
        log = node.log()
        assert "refused +" in log and "closed_node_buffer +" in log and "closed_frame_timeout +" in log
    finally:
        close_all(flood)
        cluster.stop_all()


def test_idle_and_stuck_connections_are_closed_after_the_idle_timeout(tmp_path):
    cluster = LocalCluster(tmp_path, size=1, extra=("--client-idle-timeout", "1"))
    cluster.start()
    node = cluster.nodes["n1"]
    socks = []
    try:
        cluster.wait_for_leader()
        idle, stuck, busy = socks[:] = open_connections(node.client_addr, 3)
        stuck.sendall(b"\0\0\1\0" + b"x" * 10)  # a 256-byte frame, never finished
        started = time.monotonic()
        for i in range(12):  # 3 s of requests: busy stays open
            busy.sendall(status_request(i + 1))
            assert read_response(busy, 5).body.status["id"] == "n1"
            time.sleep(0.25)
        assert closed_by_peer(idle, 0.1) and closed_by_peer(stuck, 0.1)
        assert time.monotonic() - started >= 1
        assert not closed_by_peer(busy, 0.2)
        samples = scrape(node)
        assert samples['keyval_client_limit_events_total{event="closed_idle"}'] >= 1
        assert samples['keyval_client_limit_events_total{event="closed_frame_timeout"}'] == 1
        assert samples["keyval_client_idle_timeout_seconds"] == 1
    finally:
        close_all(socks)
        cluster.stop_all()


def test_a_frame_larger_than_client_frame_bytes_is_refused(tmp_path):
    config = tmp_path / "limits.yaml"
    config.write_text("client_frame_bytes: 65536\n")
    cluster = LocalCluster(tmp_path, size=1, extra=("--config", str(config)))
    cluster.start()
    node = cluster.nodes["n1"]
    socks = []
    try:
        cluster.wait_for_leader()
        (sock,) = socks[:] = open_connections(node.client_addr, 1)
        sock.sendall((65537).to_bytes(4, "big"))
        reply = read_response(sock, 5)
        assert reply.body.code == p.INVALID and "65536" in reply.body.message
        assert closed_by_peer(sock, 5)
        with Client([node.client_addr]) as client:
            client.put("k", b"v" * 60_000)  # below the limit: served
    finally:
        close_all(socks)
        cluster.stop_all()


def test_a_descriptor_flood_cannot_stop_a_node(tmp_path):
    """On main, connections to every port of a node at `ulimit -n 1024` used up its
    descriptors, and the hard-state write of the next election failed with EMFILE: the node
    stopped for good. Now each port's limit leaves descriptors for storage."""
    allow_descriptors(3000)
    cluster = LocalCluster(tmp_path, nofile=1024)
    cluster.start()
    flood = []
    try:
        leader = cluster.wait_for_leader()
        target = next(n for n in cluster.initial if n != leader)
        node = cluster.nodes[target]
        for address, count in ((node.client_addr, 1200), (node.peer_addr, 600), (node.metrics_addr, 200)):
            flood += open_connections(address, count)
        time.sleep(2)
        assert "refused +" in node.log()
        # An election: the flooded node must write its term and vote to disk.
        cluster.nodes[leader].kill()
        survivors = [n for n in cluster.initial if n != leader]
        other = next(n for n in survivors if n != target)
        new_leader = wait_for_new_leader(cluster, other, survivors)
        try:
            with Client(cluster.endpoints(survivors), timeout=3) as client:
                client.put("during", "flood")  # succeeds, or fails cleanly if it must reach the flooded node
        except KeyvalError:
            assert new_leader == target
        close_all(flood)
        time.sleep(1)
        with Client(cluster.endpoints(survivors), timeout=15) as client:
            client.put("after", "flood")
            assert client.get("after") == b"flood"
        assert node.running and cluster.nodes[other].running
        assert cluster.status(target)["term"] > 1
        samples = scrape(node)
        assert samples["keyval_open_descriptors"] < samples["keyval_open_descriptors_limit"] == 1024
        assert samples['keyval_client_limit_events_total{event="refused"}'] >= 1
        log = node.log()
        assert "Too many open files" not in log and "fatal" not in log
    finally:
        close_all(flood)
        cluster.stop_all()


def wait_for_new_leader(cluster: LocalCluster, asked: str, among: list[str], timeout: float = 20) -> str:
    """The leader ``asked`` follows, once it is one of ``among`` (asked: the flooded node
    takes no new client connections)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = cluster.status(asked)
        if status and status["leader"] in among:
            return status["leader"]
        time.sleep(0.2)
    raise AssertionError(f"no leader among {among} within {timeout}s:\n" + cluster.logs())
