"""Protocol 2 beside protocol 1: what a 0.2.0 node writes, and what 0.1.0 and 0.2.0 decode.

0.1.0's decoder table is rebuilt here from ``codec._V1Envelope`` — 0.1.0's version-1
envelope, unchanged — so that what 0.2.0 writes to a 0.1.0 peer is decoded exactly as that
release would (tests/node/test_cross_version.py runs the real 0.1.0 tree as well).
"""
from __future__ import annotations

import msgspec
import pytest

from keyval import __version__
from keyval.peer import codec
from keyval.peer.codec import Advert, DecodeError, decode_envelope, decode_message, encode_message
from keyval.raft.messages import Heartbeat, TimeoutNow

from test_codec import sample_messages

_OLD_V1 = msgspec.msgpack.Decoder(codec._V1Envelope)


def _decode_v1_as_0_1_0(body):
    envelope = _OLD_V1.decode(body)
    return envelope.cluster_id, codec._from_wire_v1(envelope.message)


#: 0.1.0's whole table: version 1 only, no advert.
DECODERS_0_1_0 = {1: _decode_v1_as_0_1_0}
OWN = Advert(codec.PROTOCOL_VERSION, __version__)


def raw(version: int, body: list) -> bytes:
    return codec.MAGIC + bytes([version]) + msgspec.msgpack.encode(body)


def test_this_release_speaks_2_and_still_decodes_1():
    assert (codec.MIN_PROTOCOL_VERSION, codec.PROTOCOL_VERSION) == (1, 2)
    assert set(codec.DECODERS) == {1, 2}
    assert __version__ == "0.2.0"


@pytest.mark.parametrize("msg", sample_messages(), ids=lambda m: type(m).__name__)
def test_v2_round_trips_with_the_senders_advert(msg):
    data = encode_message(msg, "c", 2)
    assert data[2] == 2
    assert decode_envelope(data) == ("c", msg, OWN)
    assert decode_message(data) == ("c", msg)
    body = msgspec.msgpack.decode(data[codec.HEADER_SIZE:])
    assert body[0] == "c" and body[1] == [codec.PROTOCOL_VERSION, __version__]


@pytest.mark.parametrize("msg", sample_messages(), ids=lambda m: type(m).__name__)
def test_v1_with_the_advert_is_decoded_by_0_1_0s_table(msg):
    data = encode_message(msg, "c", 1)
    assert data[2] == 1
    assert decode_message(data, decoders=DECODERS_0_1_0) == ("c", msg)
    assert decode_envelope(data, decoders=DECODERS_0_1_0) == ("c", msg, None)  # 0.1.0 never sees it
    assert decode_envelope(data) == ("c", msg, OWN)  # 0.2.0 does


def test_0_1_0s_table_refuses_v2():
    with pytest.raises(DecodeError, match="protocol version 2 not accepted"):
        decode_message(encode_message(TimeoutNow(1, "a", "b"), "c", 2), decoders=DECODERS_0_1_0)


def test_plain_v1_from_0_1_0_decodes_with_no_advert():
    assert decode_envelope(raw(1, ["c", [9, 4, "a", "b"]])) == ("c", TimeoutNow(4, "a", "b"), None)


def test_a_mixed_table_takes_each_version_to_its_decoder():
    mixed = {1: _decode_v1_as_0_1_0, 2: codec.DECODERS[2]}
    hb = Heartbeat(3, "a", "b", 7, b"ctx")
    assert decode_envelope(encode_message(hb, "c", 1), decoders=mixed) == ("c", hb, None)
    assert decode_envelope(encode_message(hb, "c", 2), decoders=mixed) == ("c", hb, OWN)
    with pytest.raises(DecodeError, match="protocol version 1 not accepted"):
        decode_message(encode_message(hb, "c", 1), decoders={2: codec.DECODERS[2]})


def test_a_newer_peers_advert_and_trailing_elements_are_accepted():
    advert = [7, "1.4.0rc1+local"]
    assert decode_envelope(raw(2, ["c", advert, [9, 4, "a", "b"], "future"])) == \
        ("c", TimeoutNow(4, "a", "b"), Advert(7, "1.4.0rc1+local"))
    assert decode_envelope(raw(1, ["c", [9, 4, "a", "b"], advert]))[2] == Advert(7, "1.4.0rc1+local")


def test_a_bad_trailing_element_in_v1_only_means_no_advert():
    for trailing in ({"x": 1}, [0, "0.2.0"], [2, ""], [2, "a b"], [2, "v" * 65], "junk", [2]):
        assert decode_envelope(raw(1, ["c", [9, 4, "a", "b"], trailing]))[2] is None, trailing


@pytest.mark.parametrize("advert, why", [
    ([0, "0.2.0"], ">= 1"),
    ([256, "0.2.0"], "<= 255"),
    ([-1, "0.2.0"], ">= 1"),
    ([2, ""], "length >= 1"),
    ([2, "x" * 65], "length <= 64"),
    ([2, "0.2.0\n; rm"], "match"),
    ([2, 2], "Expected `str`"),
    (["2", "0.2.0"], "Expected `int`"),
    ([2], "length 2"),
    (None, "Expected `array`"),
])
def test_v2_bounds_are_enforced_on_the_advert(advert, why):
    with pytest.raises(DecodeError, match=why):
        decode_message(raw(2, ["c", advert, [9, 4, "a", "b"]]))


@pytest.mark.parametrize("message, why", [
    ([9, 2**62, "a", "b"], "<= 4611686018427387903"),
    ([9, 4, "", "b"], "length >= 1"),
    ([9, 4, "a" * 256, "b"], "length <= 255"),
    ([5, 1, "a", "b", 0, b"x" * 65], "length <= 64"),
    ([42, 1, "a", "b"], "Invalid value 42"),
])
def test_v2_bounds_are_enforced_on_the_message_as_in_v1(message, why):
    with pytest.raises(DecodeError, match=why):
        decode_message(raw(2, ["c", [2, "0.2.0"], message]))
    with pytest.raises(DecodeError):
        decode_message(raw(2, ["c" * 65, [2, "0.2.0"], [9, 4, "a", "b"]]))


def test_the_encoder_writes_only_versions_it_knows():
    for version in (0, 3):
        with pytest.raises(ValueError, match="protocol version"):
            encode_message(TimeoutNow(1, "a", "b"), "c", version)
    assert encode_message(TimeoutNow(1, "a", "b"), "c")[2] == codec.PROTOCOL_VERSION
