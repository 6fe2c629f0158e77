"""The key-value state machine: deterministic, total apply; revisions; CAS; dedup; snapshots."""
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyval.kv import (
    CommandError,
    KVStore,
    Limits,
    check_limits,
    encode_delete,
    encode_put,
)


def test_put_get_delete_with_revisions():
    kv = KVStore()
    r1 = kv.apply(encode_put(b"a", b"1"))
    r2 = kv.apply(encode_put(b"b", b"2"))
    r3 = kv.apply(encode_put(b"a", b"3"))
    assert (r1.revision, r2.revision, r3.revision) == (1, 2, 3)
    item = kv.get(b"a")
    assert (item.value, item.create_revision, item.mod_revision) == (b"3", 1, 3)
    gone = kv.apply(encode_delete(b"a"))
    assert gone.ok and gone.existed and gone.revision == 4
    assert kv.get(b"a") is None
    missing = kv.apply(encode_delete(b"a"))
    assert missing.ok and not missing.existed and missing.revision == 4  # nothing changed


def test_compare_and_set():
    kv = KVStore()
    assert kv.apply(encode_put(b"k", b"v1", expect_revision=0)).ok  # create only if absent
    refused = kv.apply(encode_put(b"k", b"again", expect_revision=0))
    assert not refused.ok and refused.current_revision == 1 and kv.get(b"k").value == b"v1"
    assert kv.apply(encode_put(b"k", b"v2", expect_revision=1)).ok
    assert not kv.apply(encode_delete(b"k", expect_revision=1)).ok
    assert kv.apply(encode_delete(b"k", expect_revision=2)).ok


def test_retried_write_applies_once():
    kv = KVStore()
    first = kv.apply(encode_put(b"x", b"1", client="c1", seq=1))
    retry = kv.apply(encode_put(b"x", b"1", client="c1", seq=1))
    assert retry == first and kv.revision == 1
    assert kv.apply(encode_put(b"x", b"2", client="c1", seq=2)).revision == 2
    # Pipelined writes: a retry of seq 1 arriving after seq 2 still gets seq 1's answer.
    assert kv.apply(encode_put(b"x", b"1", client="c1", seq=1)) == first
    assert kv.get(b"x").value == b"2" and kv.revision == 2
    # Once the client says it got every answer below 3, those results are forgotten...
    kv.apply(encode_put(b"y", b"3", client="c1", seq=3, acked=3))
    stale = kv.apply(encode_put(b"x", b"old", client="c1", seq=1))
    # ...and a late duplicate is refused rather than applied twice.
    assert not stale.ok and "already answered" in stale.error and kv.get(b"x").value == b"2"


def test_scan_by_prefix_in_key_order_with_limit():
    kv = KVStore()
    for key in [b"b/2", b"a/1", b"b/1", b"c", b"b/3"]:
        kv.apply(encode_put(key, key))
    assert [i.key for i in kv.scan(b"b/")] == [b"b/1", b"b/2", b"b/3"]
    assert [i.key for i in kv.scan(b"b/", limit=2)] == [b"b/1", b"b/2"]
    assert [i.key for i in kv.scan()] == [b"a/1", b"b/1", b"b/2", b"b/3", b"c"]


def test_limits_are_enforced_before_and_at_apply():
    limits = Limits(max_key_bytes=8, max_value_bytes=16)
    with pytest.raises(CommandError, match="key is 9 bytes; the limit is 8"):
        check_limits(b"k" * 9, b"", limits)
    with pytest.raises(CommandError, match="value is 17 bytes"):
        check_limits(b"k", b"v" * 17, limits)
    kv = KVStore(limits)
    result = kv.apply(encode_put(b"k" * 9, b"v"))
    assert not result.ok and "limit" in result.error and len(kv) == 0 and kv.revision == 0


@pytest.mark.parametrize(
    "data",
    [
        b"\x09whatever",  # unknown format
        b"\x01",  # nothing after the format byte
        b"\x01" + msgspec.msgpack.encode([99, b"k"]),  # unknown op
        b"\x01" + msgspec.msgpack.encode([1, "str-key", b"v", -1, "", 0, 0]),  # wrong types
        b"\x01" + msgspec.msgpack.encode([1, b"k"]),  # too short
        b"\x01" + msgspec.msgpack.encode({"op": 1}),
    ],
)
def test_garbage_entries_are_error_results_and_change_nothing(data):
    kv = KVStore()
    kv.apply(encode_put(b"keep", b"me"))
    result = kv.apply(data)
    assert not result.ok and result.error.startswith("invalid command")
    assert kv.revision == 1 and kv.get(b"keep").value == b"me"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_apply_is_total_on_random_bytes(data):
    kv = KVStore()
    kv.apply(data)  # never raises


def test_snapshot_round_trip_keeps_data_revision_and_sessions():
    kv = KVStore()
    for n in range(2500):
        kv.apply(encode_put(f"k{n % 1000}".encode(), f"v{n}".encode(), client=f"c{n % 7}", seq=n))
    kv.apply(encode_delete(b"k5"))
    data = b"".join(kv.snapshot_chunks(batch=300))
    restored = KVStore()
    restored.restore(data)
    assert restored.revision == kv.revision
    assert restored.scan() == kv.scan()
    # dedup survives a snapshot: the latest write of c3 is recognised as a retry
    retry = restored.apply(encode_put(b"k495", b"v2495", client="c3", seq=2495))
    assert retry.revision == 2496 and restored.revision == kv.revision


def test_corrupt_snapshot_is_refused_and_state_kept():
    kv = KVStore()
    kv.apply(encode_put(b"a", b"1"))
    good = kv.snapshot()
    target = KVStore()
    target.apply(encode_put(b"mine", b"x"))
    for bad in (good[:-3], b"\x07" + good[1:], good[:1] + b"\xff\xff\xff\xff"):
        with pytest.raises(ValueError):
            target.restore(bad)
        assert target.get(b"mine").value == b"x" and target.revision == 1


def test_metadata_is_kept_apart_from_data_and_survives_snapshots():
    from keyval.kv import encode_meta

    kv = KVStore()
    assert kv.apply(encode_meta("client_address/n1", "127.0.0.1:8001")).ok
    assert kv.revision == 0 and kv.scan() == [] and kv.meta == {"client_address/n1": "127.0.0.1:8001"}
    restored = KVStore()
    restored.restore(kv.snapshot())
    assert restored.meta == kv.meta
