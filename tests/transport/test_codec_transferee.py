"""The transferee appended to AppendEntries and Heartbeat in protocol version 1."""
from __future__ import annotations

import msgspec

from keyval.peer.codec import decode_message, encode_message
from keyval.raft import Entry
from keyval.raft.messages import AppendEntries, Heartbeat


def test_the_transferee_round_trips_and_is_left_off_the_wire_outside_a_transfer():
    for msg in (
        AppendEntries(3, "n1", "n2", 4, 2, (Entry(3, 5, data=b"x"),), 4, transferee="n3"),
        Heartbeat(3, "n1", "n2", 4, b"ctx", transferee="n3"),
        AppendEntries(3, "n1", "n2", 4, 2, (), 4),
        Heartbeat(3, "n1", "n2", 4),
    ):
        assert decode_message(encode_message(msg, "c")) == ("c", msg)
    # Without a transfer the bytes are what a sender that predates the field sends...
    plain = msgspec.msgpack.decode(encode_message(Heartbeat(3, "n1", "n2", 4), "c", 1)[3:])
    assert plain[:2] == ["c", [5, 3, "n1", "n2", 4, b""]]
    # ...and a decoder that predates it ignores the trailing field (the version-1 rule).
    named = msgspec.msgpack.decode(encode_message(Heartbeat(3, "n1", "n2", 4, transferee="n3"), "c", 1)[3:])
    assert named[:2] == ["c", [5, 3, "n1", "n2", 4, b"", "n3"]]
    # Version 2 carries the message fields as version 1 does, after the sender's advert.
    assert msgspec.msgpack.decode(encode_message(Heartbeat(3, "n1", "n2", 4), "c", 2)[3:])[2] == plain[1]
