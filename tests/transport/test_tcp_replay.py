"""Replays and strangers on the ``tcp`` peer port (issue 11): what was recorded replays into
nothing, and a connection that never authenticates costs a bounded amount, for a bounded time.
"""
from __future__ import annotations

import os
import resource
import socket
import time

import pytest

from keyval.raft.messages import Heartbeat, TimeoutNow
from keyval.testing.transport_conformance import RecordingProxy, host_port
from keyval_plugins.transport.tcp_hello import PREAUTH_FRAME_BYTES
from test_tcp import RawDialler, net  # noqa: F401 - net is a fixture

SECRET = b"the cluster secret"


@pytest.fixture
def secret(tmp_path) -> dict:
    path = tmp_path / "secret"
    path.write_bytes(SECRET)
    os.chmod(path, 0o600)
    return {"secret_file": str(path)}


def test_a_recorded_session_replayed_byte_for_byte_delivers_nothing(net, secret):
    b = net.node("b", secret)
    proxy = RecordingProxy(b.address, stream=True)
    a = net.node("a", secret)
    messages = [Heartbeat(1, "a", "b", i, b"recorded") for i in range(3)]
    for message in messages:
        a.send(("b", proxy.address), message)
        net.wait(lambda: message in b.inbox, "a message through the recording proxy")
    net.close(a)
    proxy.close()
    assert b.inbox == messages and len(proxy.recorded) > 0
    replayer = RawDialler(b.address)  # reads the fresh challenge, then replays the old session
    replayer.send(b"".join(proxy.recorded))
    assert replayer.closed_by_peer()
    stats = b.stats()
    assert b.inbox == messages and stats["received"] == 3
    assert stats["dropped_auth"] == 1 and stats["hellos_received"] == 1


def test_a_frame_replayed_inside_a_live_connection_is_refused_and_ends_it(net, secret):
    b = net.node("b", secret)
    dialler = RawDialler(b.address, SECRET)
    hello = dialler.hello("x")
    first = dialler.message(TimeoutNow(1, "x", "b"))
    dialler.send(hello, first, dialler.message(TimeoutNow(2, "x", "b")))
    net.wait(lambda: len(b.inbox) == 2, "the two genuine messages")
    dialler.send(first)
    assert dialler.closed_by_peer()
    assert b.inbox == [TimeoutNow(1, "x", "b"), TimeoutNow(2, "x", "b")]
    assert b.stats()["dropped_replay"] == 1 and b.stats()["connections_closed_bad"] == 1


def test_a_frame_cut_out_of_a_connection_breaks_it(net, secret):
    b = net.node("b", secret)
    dialler = RawDialler(b.address, SECRET)
    hello = dialler.hello("x")
    dialler.send(hello, dialler.message(TimeoutNow(1, "x", "b")))
    dialler.message(TimeoutNow(2, "x", "b"))  # sealed, never sent
    dialler.send(dialler.message(TimeoutNow(3, "x", "b")))
    assert dialler.closed_by_peer()
    assert b.inbox == [TimeoutNow(1, "x", "b")] and b.stats()["dropped_auth"] == 1


def test_a_forged_unauthenticated_message_is_counted_as_dropped_auth(net, secret):
    b = net.node("b", secret)
    forger = RawDialler(b.address)  # no secret: sends the message as its first frame
    forger.send(forger.message(Heartbeat(99, "intruder", "b", 5)))
    assert forger.closed_by_peer()
    assert b.inbox == [] and b.stats()["dropped_auth"] == 1


def test_a_stranger_that_never_authenticates_holds_at_most_a_hello_and_is_closed_on_time(net, secret):
    b = net.node("b", {**secret, "handshake_timeout": 0.5})
    stranger = RawDialler(b.address)
    opened = time.monotonic()
    stranger.send(PREAUTH_FRAME_BYTES.to_bytes(4, "big") + b"x" * (PREAUTH_FRAME_BYTES - 1))
    net.wait(lambda: b.stats()["inbound_buffered_bytes"] > 0 or b.stats()["handshake_timeouts"] > 0,
             "the partial frame to be buffered")
    assert b.stats()["inbound_buffered_preauth_bytes"] <= PREAUTH_FRAME_BYTES + 4
    stranger.sock.settimeout(10)
    assert stranger.closed_by_peer()
    assert time.monotonic() - opened >= 0.5
    stats = b.stats()
    assert stats["handshake_timeouts"] == 1 and stats["inbound_buffered_bytes"] == 0


def test_2000_strangers_keep_the_nodes_buffered_bytes_under_its_cap(net, secret):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if max(soft, hard) < 5000:
        pytest.skip("needs 5,000 file descriptors")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    cap = 64 * 1024
    b = net.node("b", {**secret, "max_frame_bytes": 16 * 1024, "inbound_buffer_bytes": cap,
                       "max_connections": 4096, "handshake_timeout": 60})
    partial = (1000).to_bytes(4, "big") + b"y" * 900  # each a frame begun, never finished
    strangers = []
    try:
        for _ in range(2000):
            s = socket.create_connection(host_port(b.address), timeout=5)
            s.sendall(partial)
            strangers.append(s)
        net.wait(lambda: b.stats()["buffer_limit_closed"] + b.stats()["inbound_buffered_bytes"] // 904 == 2000,
                 "every stranger's bytes to be held or refused", timeout=60)
        stats = b.stats()
        assert stats["inbound_buffered_bytes"] <= cap and stats["inbound_buffered_preauth_bytes"] <= cap // 2
        assert stats["buffer_limit_closed"] >= 2000 - (cap // 2) // 904
        a = net.node("a", secret)  # a member still gets through
        net.deliver(a, b, TimeoutNow(1, "a", "b"))
    finally:
        for s in strangers:
            s.close()
