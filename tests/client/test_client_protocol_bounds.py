"""The client protocol's decoders: any bytes in, only ProtocolError out; what decodes is in bounds."""
from __future__ import annotations

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyval.client import protocol as p

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
INT64 = 2**63 - 1
encode = msgspec.msgpack.encode

# msgpack-shaped values: what a hostile client can put in a frame that msgpack accepts.
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False),
                    st.text(max_size=200), st.binary(max_size=200))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
                      max_leaves=30)
tags = st.sampled_from(["put", "delete", "get", "scan", "status", "register", "admin", "write", "value", "items",
                        "status_reply", "admin_reply", "error", "nope"])
shaped = st.builds(lambda v, i, tag, fields: encode([v, i, [tag, *fields]]),
                   st.integers(-(2**63), 2**64 - 1), st.integers(-(2**63), 2**64 - 1), tags, st.lists(values, max_size=7))


def in_bounds(request: p.Request) -> None:
    assert 0 <= request.version <= INT64 and 0 <= request.id <= INT64
    body = request.body
    if isinstance(body, (p.Put, p.Delete)):
        assert -1 <= body.expect_revision <= INT64
        assert 0 <= body.seq <= INT64 and 0 <= body.acked <= INT64
        assert len(body.client.encode()) <= p.MAX_CLIENT_ID_BYTES
        encode(request)  # everything decoded can be encoded again (into the log)
    if isinstance(body, p.Scan):
        assert 0 <= body.limit <= INT64
    if isinstance(body, p.Admin):
        assert len(body.op) <= p.MAX_OP_CHARS
        p.check_document(body.args)
    if isinstance(body, p.RegisterClientAddress):
        assert len(body.node) <= p.MAX_NODE_ID_CHARS and len(body.address) <= p.MAX_ADDRESS_CHARS


@FUZZ
@given(st.one_of(st.binary(max_size=300), shaped))
def test_any_bytes_into_decode_request_only_protocol_error(payload):
    try:
        request = p.decode_request(payload)
    except p.ProtocolError:
        return
    in_bounds(request)


@FUZZ
@given(st.one_of(st.binary(max_size=300), shaped))
def test_any_bytes_into_decode_response_only_protocol_error(payload):
    try:
        response = p.decode_response(payload)
    except p.ProtocolError:
        return
    assert 0 <= response.id <= INT64
    encode(response)


@pytest.mark.parametrize("body", [
    ["put", b"k", b"v", 2**63],  # expect_revision beyond int64
    ["put", b"k", b"v", -2],
    ["put", b"k", b"v", -1, "c", -1],  # seq
    ["put", b"k", b"v", -1, "c", 1, 2**64 - 1],  # acked
    ["put", b"k", b"v", -1, "x" * 129],  # client id
    ["put", b"k", b"v", -1, "\u00e9" * 100],  # 100 characters, 200 bytes
    ["delete", b"k", -1, "c" * 200],
    ["scan", b"", -1],
    ["register", "n" * 129, "h:1"],
    ["admin", "o" * 65],
    ["admin", "compact", {"a": [[[[[[[[[1]]]]]]]]]}],  # nested too deep
    ["admin", "compact", {"a": list(range(p.MAX_DOCUMENT_VALUES + 1))}],
])
def test_out_of_bounds_fields_are_protocol_errors(body):
    with pytest.raises(p.ProtocolError):
        p.decode_request(encode([1, 7, body]))


def test_request_ids_out_of_range_are_protocol_errors():
    for request_id in (-1, 2**63):
        with pytest.raises(p.ProtocolError):
            p.decode_request(encode([1, request_id, ["status"]]))
    assert p.request_id_of(encode([1, 2**64 - 1, ["status"]])) == 0


def test_deep_nesting_is_a_protocol_error_not_a_recursion_error():
    payload = b"\x91" * 100_000 + b"\xc0"  # a list in a list ... 100,000 deep
    with pytest.raises(p.ProtocolError):
        p.decode_request(encode([1, 1, ["admin", "x"]])[:-1] + b"\x81\xa1a" + payload)
    with pytest.raises(p.ProtocolError):
        p.decode_response(payload)


def test_values_at_the_bounds_decode():
    request = p.decode_request(encode([1, INT64, ["put", b"k", b"v", INT64, "c" * 128, INT64, INT64]]))
    assert request.id == INT64 and request.body.expect_revision == INT64 and request.body.client == "c" * 128
    assert p.decode_request(encode([1, 1, ["admin", "membership", {"a": {"b": [1, 2]}}]])).body.args == {"a": {"b": [1, 2]}}
