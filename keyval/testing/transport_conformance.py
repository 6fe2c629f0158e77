"""The transport conformance suite: checks a transport backend against ``keyval/plugin_api/transport.py``.

A plugin author subclasses ``TransportConformance`` in a pytest test module and names the
backend; pytest then runs every check below against real transports on loopback::

    from keyval.testing.transport_conformance import TransportConformance

    class TestMyTransport(TransportConformance):
        backend = "mytransport"              # the name your keyval_transport_backends() returns
        options = {}                         # handed to your factory as transport options
        bounded_queue_options = {"queue_size": 16}  # options that make a per-peer queue tiny,
                                             # or None if you queue nothing for a dead peer
        stream = True                        # raw test traffic over TCP (False: UDP datagrams)

With ``backend`` set, the transport is made the way a node makes it: through the real plugin
manager and your package's entry point. Override ``open_transport(options)`` to make it any
other way, ``frame(payload)`` if one encoded message is not sent as a 4-byte big-endian
length and the payload (streams) or the bare payload (datagrams), and ``send_raw`` to send
hostile bytes some other way. The cluster secret is passed as the ``secret_file`` option.

Transports run on an event loop in a background thread, so that hypothesis can drive a
receiver that stays up across all the garbage it is sent. No pytest-asyncio is needed.
"""
from __future__ import annotations

import asyncio
import os
import random
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Coroutine

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyval.peer import codec
from keyval.peer.auth import Authenticator
from keyval.raft.messages import (
    AppendEntries, AppendResponse, Heartbeat, HeartbeatResponse, InstallSnapshot, Message,
    RequestVote, SnapshotResponse, TimeoutNow, VoteResponse,
)
from keyval.raft.types import Entry, EntryType, Membership, SnapshotMeta

__all__ = ["TransportConformance", "sample_messages"]

CONTRACT_COUNTERS = ("sent", "received", "dropped_decode", "dropped_cluster", "dropped_auth", "dropped_queue_full",
                     "dropped_no_address")
MiB = 1024 * 1024
HYPOTHESIS = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


def sample_messages(frm: str, to: str, n: int = 0) -> list[Message]:
    """One message of every type from ``frm`` to ``to``; ``n`` makes them distinct."""
    meta = SnapshotMeta(7 + n, 3, Membership(frozenset({frm, to}), frozenset({"l"}), ((frm, "h:1"),), "c"))
    entries = (Entry(3, 8 + n, EntryType.NORMAL, b"put x"), Entry(3, 9 + n, EntryType.CONFIG, meta.membership.encode()))
    return [
        AppendEntries(3, frm, to, 7 + n, 2, entries, 6 + n),
        AppendResponse(3, frm, to, 9 + n, reject=True, hint_index=4, hint_term=2),
        RequestVote(4, frm, to, 9 + n, 3, pre_vote=True, transfer=True),
        VoteResponse(4, frm, to, granted=True, pre_vote=bool(n % 2)),
        Heartbeat(3, frm, to, 9 + n, b"read-%d" % n),
        HeartbeatResponse(3, frm, to, b"read-%d" % n),
        InstallSnapshot(3, frm, to, meta, 1024 * n, b"chunk-%d" % n, bool(n % 2)),
        SnapshotResponse(3, frm, to, 7 + n, 2048, done=True),
        TimeoutNow(5 + n, frm, to),
    ]


class Node:
    """One transport on the test loop, and what it delivered."""

    def __init__(self, net: "Net", node_id: str, transport: Any) -> None:
        self.net, self.id, self.transport = net, node_id, transport
        self.inbox: list[Message] = []

    @property
    def address(self) -> str:
        return self.transport.address

    def send(self, to: "Node | tuple[str, str | None]", message: Message) -> None:
        peer_id, address = (to.id, to.address) if isinstance(to, Node) else to
        self.net.call(self.transport.send, peer_id, address, message)

    def stats(self) -> dict[str, int]:
        return self.net.call(self.transport.stats)

    @property
    def cluster_id(self) -> str | None:
        return self.net.call(lambda: self.transport.cluster_id)


class Net:
    """An event loop in a thread, the transports started on it, and helpers to wait on them."""

    def __init__(self, suite: "TransportConformance") -> None:
        self.suite = suite
        self.loop = asyncio.new_event_loop()
        self.loop_errors: list[dict] = []
        self.loop.set_exception_handler(lambda _loop, context: self.loop_errors.append(context))
        self.thread = threading.Thread(target=self.loop.run_forever, name="transport-conformance", daemon=True)
        self.thread.start()
        self.nodes: list[Node] = []

    def run(self, coro: Coroutine, timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout or self.suite.timeout)

    def call(self, fn: Callable, *args: Any) -> Any:
        async def call() -> Any:
            return fn(*args)
        return self.run(call())

    def node(self, node_id: str, options: dict | None = None, address: str = "127.0.0.1:0",
             cluster_id: str | None = None) -> Node:
        async def start() -> Node:
            node = Node(self, node_id, self.suite.open_transport({**self.suite.options, **(options or {})}))
            await node.transport.start(node_id, address, node.inbox.append)
            if cluster_id is not None:
                node.transport.set_cluster_id(cluster_id)
            return node
        node = self.run(start())
        self.nodes.append(node)
        return node

    def close(self, node: Node) -> None:
        self.run(node.transport.close())
        if node in self.nodes:
            self.nodes.remove(node)

    def wait(self, condition: Callable[[], bool], what: str, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.suite.timeout)
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; stats: {self.all_stats()}")
            time.sleep(0.005)

    def deliver(self, src: Node, dst: Node, message: Message, resend_every: float = 0.5,
                unaddressed: bool = False) -> None:
        """Send until ``dst`` has it: delivery is best effort, a reconnection may lose one.
        ``unaddressed``: with ``address=None``, where ``src`` learned ``dst`` listens."""
        deadline = time.monotonic() + self.suite.timeout
        while True:
            src.send((dst.id, None) if unaddressed else dst, message)
            resend_at = time.monotonic() + resend_every
            while time.monotonic() < resend_at:
                if message in dst.inbox:
                    return
                time.sleep(0.002)
            if time.monotonic() > deadline:
                raise AssertionError(f"{type(message).__name__} {src.id}->{dst.id} never arrived; "
                                     f"stats: {self.all_stats()}")

    def refused(self, src: Node, dst: Node, message: Message, counter: str) -> None:
        """Send until ``dst`` counts one more ``counter`` (any ``dropped_*`` for "*")."""
        def count() -> int:
            stats = dst.stats()
            return dropped(stats) if counter == "*" else stats[counter]
        before = count()
        deadline = time.monotonic() + self.suite.timeout
        while count() == before:
            if time.monotonic() > deadline:
                raise AssertionError(f"{dst.id} never counted {counter} for {src.id}; stats: {self.all_stats()}")
            src.send(dst, message)
            resend_at = time.monotonic() + 0.2
            while count() == before and time.monotonic() < resend_at:
                time.sleep(0.005)

    def all_stats(self) -> dict[str, dict[str, int]]:
        return {n.id: n.stats() for n in self.nodes}

    def shutdown(self) -> list[str]:
        """Close every transport; return what is wrong with the loop afterwards."""
        async def leftovers() -> list[str]:
            for _ in range(3):
                await asyncio.sleep(0)
            return [repr(t) for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        try:
            for node in list(self.nodes):
                self.close(node)
            problems = self.run(leftovers())
            problems += [str(c.get("message")) + ": " + repr(c.get("exception")) for c in self.loop_errors]
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            if not self.thread.is_alive():
                self.loop.close()
        return problems


class RecordingProxy:
    """Relays traffic to ``upstream`` and records what passes (streams: the bytes of the first
    connection; datagrams: each datagram), as an eavesdropper on the network would."""

    def __init__(self, upstream: str, stream: bool) -> None:
        self.upstream = host_port(upstream)
        self.stream = stream
        kind = socket.SOCK_STREAM if stream else socket.SOCK_DGRAM
        self.listener = socket.socket(socket.AF_INET, kind)
        self.listener.bind(("127.0.0.1", 0))
        self.address = "127.0.0.1:%d" % self.listener.getsockname()[1]
        self.recorded: list[bytes] = []
        self._sockets = [self.listener]
        if stream:
            self.listener.listen(1)
        threading.Thread(target=self._serve_stream if stream else self._serve_datagrams, daemon=True).start()

    def _serve_datagrams(self) -> None:
        try:
            while True:
                data = self.listener.recv(65536)
                self.recorded.append(data)
                self.listener.sendto(data, self.upstream)
        except OSError:
            pass

    def _serve_stream(self) -> None:
        try:
            client, _ = self.listener.accept()
            server = socket.create_connection(self.upstream)
        except OSError:
            return
        self._sockets += [client, server]
        threading.Thread(target=self._pump, args=(server, client, None), daemon=True).start()
        self._pump(client, server, self.recorded)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, record: list[bytes] | None) -> None:
        try:
            while data := src.recv(65536):
                if record is not None:
                    record.append(data)
                dst.sendall(data)
        except OSError:
            pass

    def replay(self, address: str, timeout: float) -> None:
        """Send what was recorded to ``address``: one new connection (read until the receiver
        hangs up, or ``timeout``), or the same datagrams."""
        if not self.stream:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for data in self.recorded:
                    s.sendto(data, host_port(address))
            return
        with socket.create_connection(host_port(address), timeout=timeout) as s:
            try:
                s.sendall(b"".join(self.recorded))
                s.shutdown(socket.SHUT_WR)
                while s.recv(65536):
                    pass
            except OSError:
                pass  # reset or timed out: either way the receiver had all of it

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()


def dropped(stats: dict[str, int]) -> int:
    return sum(v for k, v in stats.items() if k.startswith("dropped_"))


def unused_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


garbage = st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=300).map(lambda b: ("frame", b)),
    st.binary(max_size=300).map(lambda b: ("frame", codec.MAGIC + bytes([codec.PROTOCOL_VERSION]) + b)),
    st.recursive(st.none() | st.integers(0, 2**32) | st.text(max_size=6) | st.binary(max_size=6),
                 lambda inner: st.lists(inner, max_size=5), max_leaves=20).map(
        lambda v: ("frame", codec.MAGIC + bytes([codec.PROTOCOL_VERSION]) + msgspec.msgpack.encode(["c", v]))),
)


class TransportConformance:
    """Subclass as ``Test<Something>`` and set ``backend`` (or override ``open_transport``)."""

    backend: str | None = None
    options: dict[str, Any] = {}
    bounded_queue_options: dict[str, Any] | None = None
    stream: bool = True
    timeout: float = 10.0

    def open_transport(self, options: dict[str, Any]) -> Any:
        """Return a new, unstarted transport (called on the test's event loop)."""
        if self.backend is None:
            raise NotImplementedError(f"{type(self).__name__}: set `backend = NAME` or override open_transport()")
        from keyval.plugin_api.loading import build_plugin_manager, choose_transport

        return choose_transport(build_plugin_manager(), self.backend).factory(dict(options))

    def frame(self, payload: bytes) -> bytes:
        """How one encoded (and maybe sealed) message travels on the wire."""
        return len(payload).to_bytes(4, "big") + payload if self.stream else payload

    async def send_raw(self, address: str, chunks: list[bytes]) -> None:
        """Send hostile bytes: over one connection, then close it (streams); or as datagrams."""
        host, port = host_port(address)
        if not self.stream:
            with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM) as s:
                for chunk in chunks:
                    s.sendto(chunk, (host, port))
            return
        try:
            reader, writer = await asyncio.open_connection(host, port)
            for chunk in chunks:
                writer.write(chunk)
            await writer.drain()
            writer.close()
            await writer.wait_closed()
        except OSError:
            pass  # the receiver may hang up on us first; whether it stays up is checked after

    # -- fixtures ------------------------------------------------------------------------
    @pytest.fixture
    def net(self):
        net = Net(self)
        try:
            yield net
        finally:
            problems = net.shutdown()
        assert not problems, f"left behind after close(): {problems}"

    @pytest.fixture
    def secrets(self, tmp_path: Path) -> Callable[[bytes], dict[str, Any]]:
        def options(secret: bytes) -> dict[str, Any]:
            path = tmp_path / f"secret-{secret.hex()}"
            path.write_bytes(secret)
            os.chmod(path, 0o600)
            return {"secret_file": str(path)}
        return options

    # -- delivery ------------------------------------------------------------------------
    def test_has_every_member_of_the_contract(self):
        # What `keyval serve` checks before it serves: a backend lacking one is refused.
        from keyval.plugin_api.contracts import missing_members
        from keyval.plugin_api.transport import Transport

        assert missing_members(self.open_transport(dict(self.options)), Transport) == [], \
            "keyval serve would refuse this backend"

    def test_address_is_the_one_listened_on(self, net):
        a = net.node("a")
        host, port = host_port(a.address)
        assert host == "127.0.0.1" and port > 0

    def test_every_message_type_in_both_directions(self, net):
        a, b = net.node("a", cluster_id="c"), net.node("b", cluster_id="c")
        for n in range(2):
            for msg in sample_messages("a", "b", n):
                net.deliver(a, b, msg)
            for msg in sample_messages("b", "a", n):
                net.deliver(b, a, msg)
        assert all(m.to == "b" for m in b.inbox) and all(m.to == "a" for m in a.inbox)

    def test_three_peers_all_pairs(self, net):
        nodes = [net.node(name) for name in ("a", "b", "c")]
        for src in nodes:
            for dst in nodes:
                if src is not dst:
                    net.deliver(src, dst, Heartbeat(1, src.id, dst.id, 5, f"{src.id}>{dst.id}".encode()))
        assert all(len({m.frm for m in n.inbox}) == 2 for n in nodes)

    def test_a_10_mb_snapshot_chunk_arrives_intact(self, net):
        a, b = net.node("a"), net.node("b")
        data = random.Random(10).randbytes(10 * MiB)
        big = InstallSnapshot(2, "a", "b", SnapshotMeta(100, 2, Membership(frozenset({"a", "b"}))), 0, data, True)
        net.deliver(a, b, big, resend_every=3.0)
        got = next(m for m in b.inbox if isinstance(m, InstallSnapshot))
        assert got.data == data and got == big

    def test_stats_count_what_was_sent_and_received(self, net):
        a, b = net.node("a"), net.node("b")
        for msg in sample_messages("a", "b"):
            net.deliver(a, b, msg)
        net.wait(lambda: a.stats()["sent"] >= len(b.inbox), "sent to be counted")
        stats = b.stats()
        assert set(CONTRACT_COUNTERS) <= set(stats) and all(isinstance(v, int) for v in stats.values())
        assert stats["received"] >= len(b.inbox) >= 9

    # -- peers that come, go and move ----------------------------------------------------
    def test_peer_restart_and_reconnection(self, net):
        a, b = net.node("a"), net.node("b")
        net.deliver(a, b, Heartbeat(1, "a", "b", 1))
        net.deliver(b, a, Heartbeat(1, "b", "a", 1))
        address = b.address
        net.close(b)
        for i in range(20):  # into the void: neither raises nor blocks
            a.send(("b", address), Heartbeat(1, "a", "b", 100 + i))
        time.sleep(0.1)
        b2 = net.node("b", address=address)
        assert b2.address == address
        net.deliver(a, b2, Heartbeat(2, "a", "b", 2))
        net.deliver(b2, a, Heartbeat(2, "b", "a", 2))

    def test_a_dead_peer_neither_blocks_nor_grows_nor_hurts_the_others(self, net):
        a, c = net.node("a", self.bounded_queue_options), net.node("c")
        dead = unused_address()

        async def flood() -> float:
            started = time.monotonic()
            for i in range(5000):
                a.transport.send("dead", dead, Heartbeat(1, "a", "dead", i, b"x" * 1000))
            return time.monotonic() - started

        assert net.run(flood()) < 2.0, "send() must not wait for the peer"
        net.deliver(a, c, Heartbeat(1, "a", "c", 1))
        if self.bounded_queue_options is not None:
            net.wait(lambda: a.stats()["dropped_queue_full"] > 0, "the dead peer's queue to overflow")

    def test_unresolvable_and_malformed_addresses_do_not_raise(self, net):
        a, c = net.node("a"), net.node("c")
        a.send(("x", "no-such-host.invalid:7000"), TimeoutNow(1, "a", "x"))
        a.send(("y", "not an address"), TimeoutNow(1, "a", "y"))
        net.deliver(a, c, TimeoutNow(1, "a", "c"))

    def test_a_peer_that_moved_is_reached_at_its_new_address(self, net):
        a, b = net.node("a"), net.node("b")
        a.send(("b", unused_address()), Heartbeat(1, "a", "b", 1))
        net.deliver(a, b, Heartbeat(1, "a", "b", 2))

    # -- what a transport learns from its peers' traffic ------------------------------
    @pytest.mark.parametrize("sealed", [False, True], ids=["plain", "sealed"])
    def test_a_peer_never_heard_of_is_answered_where_its_traffic_came_from(self, net, secrets, sealed):
        options = secrets(b"joining") if sealed else {}
        leader, fresh = net.node("l", options, cluster_id="c"), net.node("f", options)
        net.deliver(leader, fresh, AppendEntries(1, "l", "f", 0, 0, (), 0))
        net.deliver(fresh, leader, AppendResponse(1, "f", "l", 0, True, 0, 0), unaddressed=True)
        assert fresh.stats()["dropped_no_address"] == 0

    def test_the_address_last_heard_from_wins(self, net):
        a, b = net.node("a"), net.node("b")
        net.deliver(a, b, Heartbeat(1, "a", "b", 1))
        net.close(a)
        moved = net.node("a")  # the same node id, restarted elsewhere
        net.deliver(moved, b, Heartbeat(1, "a", "b", 2))
        net.deliver(b, moved, Heartbeat(1, "b", "a", 3), unaddressed=True)

    def test_no_address_given_nor_learned_is_dropped_and_counted(self, net):
        a, c = net.node("a"), net.node("c")
        a.send(("stranger", None), TimeoutNow(1, "a", "stranger"))
        net.wait(lambda: a.stats()["dropped_no_address"] == 1, "dropped_no_address to be counted")
        net.deliver(a, c, TimeoutNow(1, "a", "c"))
        a.send(("c", None), TimeoutNow(2, "a", "c"))  # sent to, but never heard from
        net.wait(lambda: a.stats()["dropped_no_address"] == 2, "dropped_no_address to be counted")
        assert TimeoutNow(2, "a", "c") not in c.inbox

    def test_an_unconfigured_transport_adopts_the_cluster_id_of_its_first_message(self, net):
        leader, fresh, nobody = net.node("l", cluster_id="c1"), net.node("f"), net.node("n")
        net.deliver(nobody, fresh, TimeoutNow(1, "n", "f"))  # of no cluster: nothing to adopt
        assert fresh.cluster_id is None
        net.deliver(leader, fresh, AppendEntries(1, "l", "f", 0, 0, (), 0))
        assert fresh.cluster_id == "c1"
        # Its answer carries the id (the leader drops every other cluster's messages).
        net.deliver(fresh, leader, AppendResponse(1, "f", "l", 0, True, 0, 0), unaddressed=True)
        # Until the node sets an id, other clusters are still let in; the first one is kept.
        other = net.node("o", cluster_id="c2")
        net.deliver(other, fresh, TimeoutNow(1, "o", "f"))
        assert fresh.cluster_id == "c1"
        net.call(fresh.transport.set_cluster_id, "c1")
        net.refused(other, fresh, TimeoutNow(2, "o", "f"), "dropped_cluster")

    def test_the_nodes_cluster_id_wins_over_an_adopted_one(self, net):
        stray, fresh, real = net.node("s", cluster_id="stray"), net.node("f"), net.node("r", cluster_id="real")
        net.deliver(stray, fresh, TimeoutNow(1, "s", "f"))
        assert fresh.cluster_id == "stray"
        net.call(fresh.transport.set_cluster_id, "real")
        assert fresh.cluster_id == "real"
        net.refused(stray, fresh, TimeoutNow(2, "s", "f"), "dropped_cluster")
        net.deliver(fresh, real, TimeoutNow(1, "f", "r"))

    def test_a_configured_transport_drops_other_clusters_and_learns_nothing_from_them(self, net):
        mine, other = net.node("m", cluster_id="mine"), net.node("o", cluster_id="other")
        net.refused(other, mine, TimeoutNow(1, "o", "m"), "dropped_cluster")
        assert mine.inbox == [] and mine.cluster_id == "mine"
        mine.send(("o", None), TimeoutNow(1, "m", "o"))
        net.wait(lambda: mine.stats()["dropped_no_address"] == 1, "dropped_no_address to be counted")

    # -- traffic that must be refused --------------------------------------------------
    def test_wrong_cluster_id_is_dropped_and_counted(self, net):
        b = net.node("b", cluster_id="mine")
        other, unset = net.node("o", cluster_id="other"), net.node("u")
        for sender in (other, unset):
            net.refused(sender, b, TimeoutNow(1, sender.id, "b"), "dropped_cluster")
        assert b.inbox == []
        good = net.node("g", cluster_id="mine")
        net.deliver(good, b, TimeoutNow(1, "g", "b"))
        anyone = net.node("any")  # no cluster id yet: accepts any cluster
        net.deliver(other, anyone, TimeoutNow(1, "o", "any"))

    def test_bad_hmac_is_dropped_and_counted(self, net, secrets):
        b = net.node("b", secrets(b"right secret"))
        for sender in (net.node("w", secrets(b"wrong secret")), net.node("n")):
            net.refused(sender, b, TimeoutNow(1, sender.id, "b"), "dropped_auth")
        assert b.inbox == []
        net.deliver(net.node("g", secrets(b"right secret")), b, TimeoutNow(1, "g", "b"))

    def test_sealed_messages_are_refused_without_the_secret(self, net, secrets):
        sealed, plain = net.node("s", secrets(b"a secret")), net.node("p")
        net.refused(sealed, plain, TimeoutNow(1, "s", "p"), "*")
        assert plain.inbox == []

    def test_truncated_frames_are_dropped_and_the_receiver_keeps_serving(self, net):
        b, good = net.node("b"), net.node("g")
        frame = self.frame(codec.encode_message(Heartbeat(1, "x", "b", 3, b"p" * 100), ""))

        def cut_at(cut: int) -> None:
            net.run(self.send_raw(b.address, [frame[:cut]]))
            net.deliver(good, b, Heartbeat(1, "g", "b", cut))
            assert all(m.frm == "g" for m in b.inbox)

        for cut in (1, 3, 4, 5, len(frame) // 2, len(frame) - 1):
            cut_at(cut)
        HYPOTHESIS(given(st.integers(0, len(frame) - 1))(cut_at))()
        assert dropped(b.stats()) > 0

    def test_random_garbage_is_dropped_and_the_receiver_keeps_serving(self, net):
        b, good = net.node("b"), net.node("g")
        counter = iter(range(10**9))

        @HYPOTHESIS
        @given(st.lists(garbage, min_size=1, max_size=12))
        def send_garbage(chunks):
            raw = [self.frame(c[1]) if isinstance(c, tuple) else c for c in chunks]
            net.run(self.send_raw(b.address, raw))
            net.deliver(good, b, Heartbeat(1, "g", "b", next(counter)))
            assert all(m.frm == "g" for m in b.inbox), "garbage was delivered"

        send_garbage()
        assert dropped(b.stats()) > 0

    def test_bit_flipped_sealed_frames_are_dropped(self, net, secrets):
        options = secrets(b"shared")
        b, good = net.node("b", options), net.node("g", options)
        sealed = Authenticator(b"shared").seal(codec.encode_message(AppendEntries(1, "x", "b", 0, 0, (), 0), ""))
        frame = self.frame(sealed)
        header = len(frame) - len(sealed)

        @HYPOTHESIS
        @given(st.integers(header * 8, len(frame) * 8 - 1))
        def flip(bit):
            bad = bytearray(frame)
            bad[bit // 8] ^= 1 << (bit % 8)
            net.run(self.send_raw(b.address, [bytes(bad)]))
            net.deliver(good, b, Heartbeat(1, "g", "b", bit))

        flip()
        assert all(m.frm == "g" for m in b.inbox) and dropped(b.stats()) > 0

    def test_recorded_sealed_traffic_replayed_delivers_nothing(self, net, secrets):
        options = secrets(b"recorded")
        b = net.node("b", options)
        proxy = RecordingProxy(b.address, self.stream)
        a = net.node("a", options)
        sent = [Heartbeat(1, "a", "b", i, b"worth replaying") for i in range(3)]
        try:
            for message in sent:
                a.send(("b", proxy.address), message)
                net.wait(lambda: message in b.inbox, "a message through the recording proxy")
            net.close(a)
            before = dropped(b.stats())
            proxy.replay(b.address, timeout=2.0)
            net.wait(lambda: dropped(b.stats()) > before, "the replay to be dropped and counted")
            assert b.inbox == sent, "a replay was delivered"
        finally:
            proxy.close()
        net.deliver(net.node("g", options), b, TimeoutNow(1, "g", "b"))

    # -- shutting down -------------------------------------------------------------------
    def test_close_is_clean_and_idempotent(self, net):
        a, b = net.node("a"), net.node("b")
        net.deliver(a, b, TimeoutNow(1, "a", "b"))
        net.deliver(b, a, TimeoutNow(1, "b", "a"))
        a.send(("dead", unused_address()), TimeoutNow(1, "a", "dead"))
        net.close(a)
        net.run(a.transport.close())
        a.send(b, TimeoutNow(2, "a", "b"))  # after close: dropped, never raised
        assert isinstance(a.stats(), dict)
        net.close(b)
        # the net fixture then checks that no task and no loop error was left behind
