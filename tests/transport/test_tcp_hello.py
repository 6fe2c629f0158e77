"""The ``tcp`` transport's hello: its format, its compatibility rule, and what is learned from it."""
from __future__ import annotations

import os

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyval.auth import Authenticator
from keyval.codec import DecodeError, decode_message, encode_message
from keyval.raft.messages import Heartbeat, TimeoutNow
from keyval.testing.transport_conformance import HYPOTHESIS
from plugins.transport import tcp_hello as hello_format
from plugins.transport.tcp_hello import HelloError, as_seen, decode_hello, encode_hello
from test_tcp import frame, net, raw_connect  # noqa: F401 - net is a fixture


# -- the format ---------------------------------------------------------------------------
def test_a_hello_round_trips_and_is_what_the_docstring_says():
    payload = encode_hello("node1", "10.0.0.1:7001", "c-42")
    assert payload[:3] == b"KH\x01"
    assert msgspec.msgpack.decode(payload[3:]) == ["node1", "10.0.0.1:7001", "c-42"]
    assert decode_hello(payload) == hello_format.Hello("node1", "10.0.0.1:7001", "c-42")


def test_a_receiver_that_predates_the_hello_drops_it_as_undecodable():
    with pytest.raises(DecodeError, match="bad magic"):
        decode_message(encode_hello("node1", "127.0.0.1:7001", "c"))


def test_fields_appended_within_version_1_are_ignored_another_version_is_refused():
    extended = b"KH\x01" + msgspec.msgpack.encode(["n", "127.0.0.1:1", "c", "a later field", 7])
    assert decode_hello(extended) == hello_format.Hello("n", "127.0.0.1:1", "c")
    with pytest.raises(HelloError, match="version 2"):
        decode_hello(b"KH\x02" + msgspec.msgpack.encode(["n", "127.0.0.1:1", "c"]))


@pytest.mark.parametrize("fields", [
    ["", "127.0.0.1:1", "c"],  # no node id
    ["n" * 256, "127.0.0.1:1", "c"],
    ["n", "no port", "c"],
    ["n", "127.0.0.1:1"],  # a field missing
    ["n", "127.0.0.1:1", "c" * 256],
    ["n", 7001, "c"],
])
def test_malformed_hellos_are_refused(fields):
    with pytest.raises(HelloError):
        decode_hello(b"KH\x01" + msgspec.msgpack.encode(fields))


@HYPOTHESIS
@given(st.binary(max_size=200))
def test_garbage_after_the_magic_raises_hello_error_and_nothing_else(tail):
    try:
        decode_hello(b"KH" + tail)
    except HelloError:
        pass


@pytest.mark.parametrize("announced, source, seen", [
    ("0.0.0.0:7001", "10.1.2.3", "10.1.2.3:7001"),
    ("[::]:7001", "fe80::1", "[fe80::1]:7001"),
    ("node1.example:7001", "10.1.2.3", "node1.example:7001"),
    ("10.9.9.9:7001", "10.1.2.3", "10.9.9.9:7001"),
    ("0.0.0.0:7001", "", "0.0.0.0:7001"),
])
def test_a_wildcard_listener_is_reached_where_its_connection_came_from(announced, source, seen):
    assert as_seen(announced, source) == seen


# -- on the wire --------------------------------------------------------------------------
def test_every_connection_dialled_opens_with_a_hello(net):
    a, b = net.node("a", cluster_id="c"), net.node("b")
    net.deliver(a, b, TimeoutNow(1, "a", "b"))
    assert b.stats()["hellos_received"] == 1 and b.stats()["dropped_decode"] == 0


def test_a_node_bound_to_every_interface_is_answered_where_it_dialled_from(net):
    a, b = net.node("a", address="0.0.0.0:0"), net.node("b")
    net.deliver(a, b, TimeoutNow(1, "a", "b"))
    net.deliver(b, a, TimeoutNow(1, "b", "a"), unaddressed=True)


def test_a_connection_without_a_hello_is_served_and_teaches_nothing(net):
    b = net.node("b")
    with raw_connect(b.address) as s:
        s.sendall(frame(encode_message(TimeoutNow(1, "old", "b"), "")))
        net.wait(lambda: TimeoutNow(1, "old", "b") in b.inbox, "the message of a peer without hello")
    b.send(("old", None), TimeoutNow(1, "b", "old"))
    assert b.stats()["dropped_no_address"] == 1


def test_a_bad_hello_is_dropped_and_counted_and_the_connection_kept(net):
    b = net.node("b")
    unknown_version = b"KH\x09" + msgspec.msgpack.encode(["x", "127.0.0.1:1", ""])
    with raw_connect(b.address) as s:
        s.sendall(frame(unknown_version) + frame(encode_message(TimeoutNow(1, "x", "b"), "")))
        net.wait(lambda: TimeoutNow(1, "x", "b") in b.inbox, "the message after a bad hello")
    assert b.stats()["dropped_decode"] == 1 and b.stats()["hellos_received"] == 0


def test_only_the_first_frame_may_be_a_hello(net):
    b = net.node("b")
    hello = frame(encode_hello("x", "127.0.0.1:9", ""))
    late = frame(encode_hello("x", "127.0.0.1:10", ""))
    with raw_connect(b.address) as s:
        s.sendall(hello + late + frame(encode_message(TimeoutNow(1, "x", "b"), "")))
        net.wait(lambda: TimeoutNow(1, "x", "b") in b.inbox, "the message after two hellos")
    assert b.stats()["hellos_received"] == 1 and b.stats()["dropped_decode"] == 1


def test_a_hello_of_another_cluster_teaches_nothing(net):
    b = net.node("b", cluster_id="mine")
    with raw_connect(b.address) as s:
        s.sendall(frame(encode_hello("x", "127.0.0.1:9", "theirs")))
        net.wait(lambda: b.stats()["hellos_received"] == 1, "the hello")
    b.send(("x", None), TimeoutNow(1, "b", "x"))
    assert b.stats()["dropped_no_address"] == 1


def test_with_a_secret_an_unsealed_hello_is_refused_and_teaches_nothing(net, tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"cluster secret")
    os.chmod(secret, 0o600)
    b = net.node("b", {"secret_file": str(secret)})
    with raw_connect(b.address) as s:
        s.sendall(frame(encode_hello("x", "127.0.0.1:9", "")))
        net.wait(lambda: b.stats()["dropped_auth"] == 1, "the unsealed hello to be refused")
        sealed = Authenticator(b"cluster secret").seal(encode_message(Heartbeat(1, "x", "b", 1), ""))
        s.sendall(frame(sealed))
        net.wait(lambda: Heartbeat(1, "x", "b", 1) in b.inbox, "the sealed message after it")
    b.send(("x", None), TimeoutNow(1, "b", "x"))
    assert b.stats()["dropped_no_address"] == 1 and b.stats()["hellos_received"] == 0
