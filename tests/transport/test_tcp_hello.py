"""The ``tcp`` transport's handshake (protocol 2): its format, and what a hello teaches."""
from __future__ import annotations

import os

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyval.peer.codec import DecodeError, decode_message, encode_message
from keyval.raft.messages import TimeoutNow
from keyval.testing.transport_conformance import HYPOTHESIS
from keyval_plugins.transport import tcp_hello as hello_format
from keyval_plugins.transport.tcp_hello import (HelloError, as_seen, decode_challenge, decode_hello, encode_challenge,
                                         encode_hello, peek_hello)
from test_tcp import RawDialler, frame, net  # noqa: F401 - net is a fixture

NONCE = bytes(range(32))


def fields(payload: bytes) -> list:
    return msgspec.msgpack.decode(payload[hello_format.HEADER_BYTES:])


# -- the format ---------------------------------------------------------------------------
def test_a_hello_round_trips_and_is_what_the_docstring_says():
    payload = encode_hello(NONCE, False, "node1", "10.0.0.1:7001", "c-42")
    assert payload[:4] == b"KH\x02\x00" and payload[4:36] == NONCE
    assert fields(payload) == ["node1", "10.0.0.1:7001", "c-42"]
    assert peek_hello(payload) == (False, NONCE)
    assert decode_hello(payload) == hello_format.Hello("node1", "10.0.0.1:7001", "c-42")
    assert encode_hello(NONCE, True, "n", "h:1", "")[:4] == b"KH\x02\x01"


def test_a_challenge_round_trips_and_nothing_else_is_one():
    assert encode_challenge(NONCE) == b"KN\x02" + NONCE and decode_challenge(b"KN\x02" + NONCE) == NONCE
    for bad in (b"", b"KN\x01" + NONCE, b"KX\x02" + NONCE, b"KN\x02" + NONCE[:-1], b"KN\x02" + NONCE + b"!"):
        with pytest.raises(HelloError):
            decode_challenge(bad)


def test_the_hello_is_not_a_message():
    with pytest.raises(DecodeError, match="bad magic"):
        decode_message(encode_hello(NONCE, False, "node1", "127.0.0.1:7001", "c"))


def test_fields_appended_within_version_2_are_ignored_another_version_is_refused():
    header = b"KH\x02\x00" + NONCE
    extended = header + msgspec.msgpack.encode(["n", "127.0.0.1:1", "c", "a later field", 7])
    assert decode_hello(extended) == hello_format.Hello("n", "127.0.0.1:1", "c")
    for version in (1, 3):
        with pytest.raises(HelloError, match=f"protocol {version}"):
            decode_hello(b"KH" + bytes([version, 0]) + NONCE + msgspec.msgpack.encode(["n", "127.0.0.1:1", "c"]))


@pytest.mark.parametrize("fields", [
    ["", "127.0.0.1:1", "c"],  # no node id
    ["n" * 256, "127.0.0.1:1", "c"],
    ["n", "no port", "c"],
    ["n", "127.0.0.1:1"],  # a field missing
    ["n", "127.0.0.1:1", "c" * 256],
    ["n", 7001, "c"],
    ["n", "127.0.0.1:1", "c", "x" * 2000],  # more than a hello's size
])
def test_malformed_hellos_are_refused(fields):
    with pytest.raises(HelloError):
        decode_hello(b"KH\x02\x00" + NONCE + msgspec.msgpack.encode(fields))


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


def test_a_connection_that_opens_without_a_hello_is_closed_and_delivers_nothing(net):
    b = net.node("b")
    dialler = RawDialler(b.address)
    dialler.send(frame(encode_message(TimeoutNow(1, "old", "b"), "")))
    assert dialler.closed_by_peer()
    stats = b.stats()
    assert b.inbox == [] and stats["dropped_decode"] == 1 and stats["connections_closed_bad"] == 1
    b.send(("old", None), TimeoutNow(1, "b", "old"))
    assert b.stats()["dropped_no_address"] == 1


def test_a_hello_of_protocol_1_is_refused_and_the_connection_closed(net):
    b = net.node("b")
    dialler = RawDialler(b.address)
    dialler.send(frame(b"KH\x01" + msgspec.msgpack.encode(["x", "127.0.0.1:1", ""])),
                 frame(encode_message(TimeoutNow(1, "x", "b"), "")))
    assert dialler.closed_by_peer()
    assert b.inbox == [] and b.stats()["dropped_decode"] == 1 and b.stats()["hellos_received"] == 0


def test_only_the_first_frame_may_be_a_hello(net):
    b = net.node("b")
    dialler = RawDialler(b.address)
    dialler.send(dialler.hello("x", "127.0.0.1:9"), dialler.hello("x", "127.0.0.1:10"),
                 dialler.message(TimeoutNow(1, "x", "b")))
    net.wait(lambda: TimeoutNow(1, "x", "b") in b.inbox, "the message after two hellos")
    assert b.stats()["hellos_received"] == 1 and b.stats()["dropped_decode"] == 1
    dialler.close()


def test_a_hello_of_another_cluster_teaches_nothing(net):
    b = net.node("b", cluster_id="mine")
    dialler = RawDialler(b.address)
    dialler.send(dialler.hello("x", "127.0.0.1:9", "theirs"))
    net.wait(lambda: b.stats()["hellos_received"] == 1, "the hello")
    b.send(("x", None), TimeoutNow(1, "b", "x"))
    assert b.stats()["dropped_no_address"] == 1
    dialler.close()


def test_messages_must_come_from_the_node_the_hello_named(net):
    b = net.node("b")
    dialler = RawDialler(b.address)
    dialler.send(dialler.hello("x"), dialler.message(TimeoutNow(1, "x", "b")), dialler.message(TimeoutNow(1, "y", "b")))
    assert dialler.closed_by_peer()
    assert b.inbox == [TimeoutNow(1, "x", "b")] and b.stats()["dropped_identity"] == 1


def test_with_a_secret_an_unsealed_hello_is_refused_and_teaches_nothing(net, tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"cluster secret")
    os.chmod(secret, 0o600)
    b = net.node("b", {"secret_file": str(secret)})
    plain = RawDialler(b.address)
    plain.send(plain.hello("x"), plain.message(TimeoutNow(1, "x", "b")))
    assert plain.closed_by_peer()
    assert b.stats()["dropped_auth"] == 1 and b.stats()["hellos_received"] == 0
    # With the secret but keyed to another connection's nonce: refused too.
    other = RawDialler(b.address, b"cluster secret")
    stale = RawDialler(b.address, b"cluster secret")
    hello = other.hello("x")
    stale.send(hello)
    assert stale.closed_by_peer()
    assert b.stats()["dropped_auth"] == 2
    other.send(hello, other.message(TimeoutNow(1, "x", "b")))
    net.wait(lambda: TimeoutNow(1, "x", "b") in b.inbox, "the message of the right handshake")
    b.send(("x", None), TimeoutNow(1, "b", "x"))  # learned from the authenticated hello
    net.wait(lambda: b.stats()["sent"] + b.stats()["connect_failures"] > 0, "the answer to be tried")
    assert b.stats()["dropped_no_address"] == 0 and b.inbox == [TimeoutNow(1, "x", "b")]
    other.close()
