"""The ``tcp`` transport beyond the conformance suite: options, framing limits, queues, logging."""
from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import threading
import time

import pytest

from keyval.peer.auth import Authenticator
from keyval.peer.codec import encode_message
from keyval.errors import ConfigError
from keyval.plugin_api.loading import build_plugin_manager, choose_transport, list_plugins
from keyval.raft.messages import Heartbeat, Message, TimeoutNow
from keyval.testing.transport_conformance import Net, Node, host_port, unused_address
from keyval_plugins.transport.tcp_hello import CHALLENGE_BYTES, PREAUTH_FRAME_BYTES, decode_challenge, encode_challenge, encode_hello
from keyval_plugins.transport.tcp_options import parse_tcp_options
from keyval_plugins.transport.tcp_peer import Peer
from keyval_plugins.transport.tcp_session import FrameSealer, framed, session_key
from keyval_plugins.transport.tcp_stats import Stats
from keyval_plugins.transport.tcp_transport import TcpTransport

LOGGER = "keyval.transport.tcp"


class Tcp:
    """What Net needs of a suite: how to make a transport, and how long to wait."""

    options = {"reconnect_max": 0.2}
    timeout = 10.0

    def open_transport(self, options):
        return TcpTransport(options)


@pytest.fixture
def net():
    net = Net(Tcp())
    try:
        yield net
    finally:
        problems = net.shutdown()
    assert not problems, f"left behind after close(): {problems}"


def raw_connect(address: str) -> socket.socket:
    return socket.create_connection(host_port(address), timeout=5)


def frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


class RawDialler:
    """A dialler driven by hand over a plain socket: reads the challenge, then sends what it
    is told, sealed as protocol 2 wants when it has the secret. ``sent`` is every byte sent."""

    def __init__(self, address: str, secret: bytes | None = None) -> None:
        self.sock = raw_connect(address)
        challenge = recv_exactly(self.sock, 4 + CHALLENGE_BYTES)
        assert int.from_bytes(challenge[:4], "big") == CHALLENGE_BYTES
        self.acceptor_nonce = decode_challenge(challenge[4:])
        self.nonce = os.urandom(32)
        self.secret = secret
        key = session_key(Authenticator(secret), self.acceptor_nonce, self.nonce) if secret else None
        self.sealer = FrameSealer(key)
        self.sent = bytearray()

    def hello(self, node_id: str = "x", address: str = "127.0.0.1:9", cluster_id: str = "") -> bytes:
        return self.sealer.frame(encode_hello(self.nonce, self.secret is not None, node_id, address, cluster_id))

    def message(self, message: Message, cluster_id: str = "") -> bytes:
        return self.sealer.frame(encode_message(message, cluster_id))

    def send(self, *frames: bytes) -> None:
        for data in frames:
            self.sock.sendall(data)
            self.sent += data

    def closed_by_peer(self) -> bool:
        """Whether the acceptor hung up (waits up to the socket's timeout)."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def close(self) -> None:
        self.sock.close()


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError(f"connection closed after {len(data)} of {n} bytes")
        data += chunk
    return data


# -- the plugin and its options -------------------------------------------------------------
def test_tcp_is_chosen_through_the_plugin_manager_and_listed():
    plugins = build_plugin_manager()
    assert isinstance(choose_transport(plugins, "tcp").factory({}), TcpTransport)
    rows, _ = list_plugins(plugins)
    assert any(row["kind"] == "transport" and row["name"] == "tcp" for row in rows)


@pytest.mark.parametrize("options, words", [
    ({"queue_sise": 1, "colour": "red"}, ["unknown option(s) colour, queue_sise", "known:", "queue_size"]),
    ({"queue_size": 0}, ["queue_size"]),
    ({"queue_size": True}, ["queue_size"]),
    ({"max_frame_bytes": "big"}, ["max_frame_bytes"]),
    ({"queue_drop": "middle"}, ["queue_drop", "oldest, newest"]),
    ({"connect_timeout": "soon"}, ["connect_timeout"]),
    ({"reconnect_min": 5, "reconnect_max": 1}, ["reconnect_min"]),
    ({"seed": 1.5}, ["seed"]),
    ({"tls_cert": "node.pem"}, ["tls_cert and tls_key"]),
    ({"tls_ca": "ca.pem"}, ["tls_ca needs tls_cert"]),
    ({"secret_file": 42}, ["secret_file"]),
])
def test_bad_options_are_one_line_config_errors(options, words):
    with pytest.raises(ConfigError) as info:
        TcpTransport(options)
    message = str(info.value)
    assert "\n" not in message and message.startswith("tcp transport: ")
    for word in words:
        assert word in message


def test_the_secret_and_certificates_are_checked_when_the_transport_is_made(tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"s3cret")
    os.chmod(secret, 0o644)
    with pytest.raises(ConfigError, match="0600"):
        TcpTransport({"secret_file": str(secret)})
    with pytest.raises(ConfigError, match="cannot load TLS files"):
        TcpTransport({"tls_cert": str(tmp_path / "missing.pem"), "tls_key": str(tmp_path / "missing.key")})


def test_defaults():
    opts = parse_tcp_options({})
    assert opts.queue_size == 4096 and opts.queue_drop == "oldest" and opts.secret_file is None


# -- logging ----------------------------------------------------------------------------------
def test_unauthenticated_traffic_is_logged_once_per_node_at_start(net, caplog, tmp_path):
    caplog.set_level(logging.INFO, logger=LOGGER)
    a, b = net.node("n1"), net.node("n2")
    for i in range(5):
        net.deliver(a, b, Heartbeat(1, "n1", "n2", i))
    lines = [r.getMessage() for r in caplog.records if "unauthenticated" in r.getMessage()]
    assert len(lines) == 2 and "node n1" in lines[0] and "node n2" in lines[1]
    secret = tmp_path / "secret"
    secret.write_bytes(b"s3cret")
    os.chmod(secret, 0o600)
    caplog.clear()
    net.node("n3", {"secret_file": str(secret)})
    assert not [r for r in caplog.records if "unauthenticated" in r.getMessage()]


def test_drops_are_logged_rate_limited(net, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    b = net.node("b", {"max_bad_frames": 1000})
    dialler = RawDialler(b.address)
    dialler.send(dialler.hello(), frame(b"garbage") * 50)
    net.wait(lambda: b.stats()["dropped_decode"] == 50, "50 decode drops")
    dialler.close()
    assert len([r for r in caplog.records if "dropped_decode" in r.getMessage()]) == 1


def test_rate_limited_lines_sum_what_they_skipped():
    now = [0.0]
    logger = logging.getLogger("test.tcp.stats")
    records = []
    logger.addHandler(handler := logging.Handler())
    handler.emit = records.append  # type: ignore[method-assign]
    try:
        stats = Stats(logger, "label", 10.0, clock=lambda: now[0])
        for _ in range(5):
            stats.report("dropped_auth", "bad tag")
        now[0] = 10.0
        stats.report("dropped_auth", "bad tag")
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in records] == [
        "label: dropped_auth +1 (1 in total): bad tag",
        "label: dropped_auth +5 (6 in total): bad tag",
    ]


# -- framing limits -----------------------------------------------------------------------
def test_an_oversized_frame_closes_the_connection(net):
    b = net.node("b", {"max_frame_bytes": 2000})
    dialler = RawDialler(b.address)
    dialler.send(dialler.hello(), (2001).to_bytes(4, "big") + b"x" * 10)
    assert dialler.closed_by_peer()
    stats = b.stats()
    assert stats["dropped_oversized"] == 1 and stats["connections_closed_bad"] == 1


def test_before_its_hello_a_connection_may_send_no_frame_larger_than_a_hello(net):
    b = net.node("b")
    dialler = RawDialler(b.address)
    dialler.send((PREAUTH_FRAME_BYTES + 1).to_bytes(4, "big") + b"x" * 10)
    assert dialler.closed_by_peer()
    stats = b.stats()
    assert stats["preauth_oversized"] == 1 and stats["connections_closed_bad"] == 1


def test_repeated_bad_frames_close_the_connection(net):
    b = net.node("b", {"max_bad_frames": 3})
    dialler = RawDialler(b.address)
    dialler.send(dialler.hello(), frame(b"junk") * 3)
    assert dialler.closed_by_peer()
    stats = b.stats()
    assert stats["dropped_decode"] == 3 and stats["connections_closed_bad"] == 1


def test_inbound_connections_beyond_the_maximum_are_refused(net):
    b, good = net.node("b", {"max_connections": 2}), net.node("g")
    first, second = raw_connect(b.address), raw_connect(b.address)
    try:
        net.wait(lambda: b.stats()["connections_accepted"] == 2, "two connections")
        with raw_connect(b.address) as third:
            try:
                assert third.recv(1) == b""
            except ConnectionResetError:
                pass
        assert b.stats()["connections_refused"] == 1
    finally:
        first.close()
        second.close()
    net.deliver(good, b, TimeoutNow(1, "g", "b"))


def test_a_message_larger_than_a_frame_is_dropped_at_the_sender(net):
    a, b = net.node("a", {"max_frame_bytes": 100}), net.node("b")
    a.send(b, Heartbeat(1, "a", "b", 1, b"x" * 200))
    assert a.stats()["dropped_too_large"] == 1
    net.deliver(a, b, Heartbeat(1, "a", "b", 2))


def test_a_message_for_another_node_is_dropped(net):
    a, b = net.node("a"), net.node("b")
    net.refused(a, b, TimeoutNow(1, "a", "somebody-else"), "dropped_wrong_node")
    assert b.inbox == []


def test_a_failing_deliver_is_counted_and_the_connection_survives(net):
    a = net.node("a")

    async def start() -> Node:
        node = Node(net, "b", TcpTransport({}))

        def deliver(message):
            if message.term == 666:
                raise RuntimeError("a bug in the node")
            node.inbox.append(message)
        await node.transport.start("b", "127.0.0.1:0", deliver)
        return node

    b = net.run(start())
    net.nodes.append(b)
    a.send(b, TimeoutNow(666, "a", "b"))
    net.deliver(a, b, TimeoutNow(1, "a", "b"))
    assert b.stats()["deliver_errors"] == 1 and b.stats()["connections_accepted"] == 1


# -- queues and slow peers ------------------------------------------------------------------
def plain_dial(acceptor_nonce: bytes) -> tuple[FrameSealer, bytes]:
    sealer = FrameSealer(None)
    return sealer, sealer.frame(encode_hello(os.urandom(32), False, "a", "127.0.0.1:1", ""))


@pytest.mark.parametrize("policy, kept", [("oldest", [2, 3, 4]), ("newest", [0, 1, 2])])
def test_a_full_queue_drops_by_policy(policy, kept):
    async def scenario():
        stats = Stats(logging.getLogger(LOGGER), "test", 10.0)
        peer = Peer("p", unused_address(), parse_tcp_options({"queue_size": 3, "queue_drop": policy}),
                    stats, None, random.Random(1), plain_dial)
        for i in range(5):
            peer.push(bytes([i]))
        queued = [f[0] for f in peer._queue]
        await peer.close()
        return queued, stats.counts["dropped_queue_full"]

    assert asyncio.run(scenario()) == (kept, 2)


def test_the_queue_is_bounded_by_bytes_too():
    async def scenario():
        stats = Stats(logging.getLogger(LOGGER), "test", 10.0)
        peer = Peer("p", unused_address(), parse_tcp_options({"queue_bytes": 1000}), stats, None, random.Random(1),
                    plain_dial)
        for _ in range(10):
            peer.push(b"x" * 300)
        queued = sum(map(len, peer._queue))
        await peer.close()
        return queued, stats.counts["dropped_queue_full"]

    assert asyncio.run(scenario()) == (900, 7)


@pytest.fixture
def stuck_listener():
    """A peer that accepts connections, sends each the handshake's challenge, and never reads."""
    accepted: list[socket.socket] = []
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)

        def serve() -> None:
            while True:
                try:
                    conn, _ = s.accept()
                except OSError:
                    return
                conn.sendall(framed(encode_challenge(os.urandom(32))))
                accepted.append(conn)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        yield "127.0.0.1:%d" % s.getsockname()[1]
        s.shutdown(socket.SHUT_RDWR)
    thread.join(5)
    for conn in accepted:
        conn.close()


def test_a_stuck_peer_fills_only_its_own_bounded_queue(net, stuck_listener):
    a = net.node("a", {"queue_size": 1000, "queue_bytes": 1024 * 1024})
    c = net.node("c")
    chunk = b"x" * 65536

    async def flood():
        for i in range(1500):  # ~100 MB: far beyond what socket buffers absorb
            a.transport.send("stuck", stuck_listener, Heartbeat(1, "a", "stuck", i, chunk))
            if i % 16 == 0:
                await asyncio.sleep(0)

    net.run(flood(), timeout=30)
    net.deliver(a, c, Heartbeat(1, "a", "c", 1))
    stats = a.stats()
    assert stats["dropped_queue_full"] > 1000 and stats["connects"] >= 2, stats


def test_a_peer_that_stops_reading_is_disconnected_after_write_timeout(net, stuck_listener):
    a = net.node("a", {"write_timeout": 0.2, "queue_bytes": 4 * 1024 * 1024})
    chunk = b"x" * 65536

    async def flood():
        for i in range(400):
            a.transport.send("stuck", stuck_listener, Heartbeat(1, "a", "stuck", i, chunk))
            await asyncio.sleep(0.002)

    net.run(flood(), timeout=30)
    net.wait(lambda: a.stats()["dropped_send_failed"] > 0, "the stuck connection to be dropped")


def test_reconnection_backs_off_with_jitter(net):
    a = net.node("a", {"reconnect_min": 0.05, "reconnect_max": 0.2, "seed": 7})
    dead = unused_address()
    started = time.monotonic()
    while time.monotonic() - started < 1.0:
        a.send(("dead", dead), TimeoutNow(1, "a", "dead"))  # every 10 ms
        time.sleep(0.01)
    failures = a.stats()["connect_failures"]
    # Backoff from 50 ms doubling to 200 ms, times 0.5..1: about 7 dials a second, not 100.
    assert 3 <= failures <= 20, failures
