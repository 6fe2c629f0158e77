"""The replicated restore commands of the KV state machine, and its frozen snapshot views."""
import hashlib
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from keyval.kv import (
    KVStore,
    encode_delete,
    encode_meta,
    encode_put,
    encode_restore_abort,
    encode_restore_begin,
    encode_restore_chunk,
    encode_restore_commit,
)
from keyval.kv.snapshot import decode_snapshot


def store_with(items: dict[bytes, bytes]) -> KVStore:
    kv = KVStore()
    for key, value in items.items():
        kv.apply(encode_put(key, value))
    return kv


def backup_bytes(kv: KVStore) -> bytes:
    with kv.freeze() as frozen:
        return b"".join(frozen.chunks(batch=7, backup=True))


def restore_entries(data: bytes, restore_id: str = "r1", chunk: int = 100) -> list[bytes]:
    entries = [encode_restore_begin(restore_id, len(data), hashlib.sha256(data).hexdigest())]
    entries += [encode_restore_chunk(restore_id, o, data[o : o + chunk]) for o in range(0, len(data), chunk)]
    return entries + [encode_restore_commit(restore_id)]


def contents(kv: KVStore) -> dict[bytes, bytes]:
    return {item.key: item.value for item in kv.scan()}


SOURCE = {f"key{n:03d}".encode(): f"value-{n}".encode() * (n % 5 + 1) for n in range(60)}


def test_a_restore_makes_the_data_exactly_the_backups_and_keeps_metadata_and_sessions():
    backup = backup_bytes(store_with(SOURCE))
    kv = store_with({b"key001": b"other", b"only-here": b"x"})
    kv.apply(encode_meta("client_address/n1", "127.0.0.1:8001"))
    written = kv.apply(encode_put(b"w", b"1", client="c", seq=1))
    before = kv.revision
    results = [kv.apply(e) for e in restore_entries(backup)]
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert contents(kv) == SOURCE
    # One write, at one new revision, for every restored key.
    assert kv.revision == before + 1
    assert {item.mod_revision for item in kv.scan()} == {before + 1}
    assert kv.meta == {"client_address/n1": "127.0.0.1:8001"}
    # Sessions stay: a client retrying a write from before the restore gets its answer, and
    # the write is not applied again (the restore replaced it).
    assert kv.apply(encode_put(b"w", b"1", client="c", seq=1)) == written and kv.get(b"w") is None
    assert kv.staged_restore() is None and kv.last_restore == "r1"


def test_compare_and_set_after_a_restore_sees_the_restores_revision():
    kv = store_with({b"key001": b"mine"})
    seen = kv.get(b"key001").mod_revision
    for entry in restore_entries(backup_bytes(store_with(SOURCE))):
        kv.apply(entry)
    stale = kv.apply(encode_put(b"key001", b"late", expect_revision=seen))
    assert not stale.ok and stale.error == "revision mismatch"
    current = kv.get(b"key001")
    assert kv.apply(encode_put(b"key001", b"ok", expect_revision=current.mod_revision)).ok
    assert kv.get(b"key001").create_revision == current.create_revision  # created by the restore
    assert kv.apply(encode_delete(b"key002", expect_revision=current.mod_revision)).ok


def test_nodes_applying_the_same_entries_end_identical_even_from_a_snapshot_mid_upload():
    rng = random.Random(7)
    backup = backup_bytes(store_with(SOURCE))
    *upload, commit = restore_entries(backup, chunk=97)
    entries = []
    for entry in upload:
        entries.append(entry)
        if rng.random() < 0.5:  # ordinary writes interleave with the upload
            key = f"key{rng.randrange(80):03d}".encode()
            entries.append(encode_put(key, b"live") if rng.random() < 0.7 else encode_delete(key))
    entries += [commit, encode_put(b"after", b"stays"), encode_delete(b"key003")]
    a, b = store_with({b"old": b"1"}), store_with({b"old": b"1"})
    results_a = [a.apply(e) for e in entries]
    results_b = [b.apply(e) for e in entries]
    assert results_a == results_b
    assert a.snapshot() == b.snapshot()
    # A third node installs a snapshot taken half-way through the upload, then goes on.
    c = store_with({b"old": b"1"})
    half = len(entries) // 2
    for entry in entries[:half]:
        c.apply(entry)
    assert c.staged_restore() is not None
    d = KVStore()
    d.restore(c.snapshot())
    assert [d.apply(e) for e in entries[half:]] == results_a[half:]
    assert d.snapshot() == a.snapshot()
    expected = {k: v for k, v in SOURCE.items() if k != b"key003"} | {b"after": b"stays"}
    assert contents(a) == expected  # writes during the upload are replaced; later ones stay


def test_an_abandoned_upload_is_dropped_by_the_next_begin():
    kv = store_with({b"keep": b"1"})
    first = restore_entries(backup_bytes(store_with({b"x": b"1"})), "first")
    for entry in first[:2]:
        assert kv.apply(entry).ok
    second = restore_entries(backup_bytes(store_with(SOURCE)), "second")
    assert all(kv.apply(e).ok for e in second)
    assert contents(kv) == SOURCE
    late = kv.apply(first[-1])
    assert not late.ok and "no restore first is staged" in late.error
    assert contents(kv) == SOURCE


def test_a_bad_upload_is_refused_at_commit_and_changes_nothing():
    good = backup_bytes(store_with(SOURCE))
    for name, data, checksum in [
        ("tampered", good[:40] + bytes([good[40] ^ 1]) + good[41:], hashlib.sha256(good).hexdigest()),
        ("garbage", b"\x01not a snapshot at all", None),
        ("cut", good[: len(good) // 2], None),
    ]:
        kv = store_with({b"keep": b"1"})
        snapshot_before = kv.snapshot()
        checksum = checksum or hashlib.sha256(data).hexdigest()
        kv.apply(encode_restore_begin(name, len(data), checksum))
        for offset in range(0, len(data), 50):
            kv.apply(encode_restore_chunk(name, offset, data[offset : offset + 50]))
        result = kv.apply(encode_restore_commit(name))
        assert not result.ok and "nothing changed" in result.error, name
        assert contents(kv) == {b"keep": b"1"} and kv.staged_restore() is None
        assert kv.snapshot() == snapshot_before, name


def test_retries_are_answered_and_out_of_order_chunks_refused():
    data = backup_bytes(store_with(SOURCE))
    begin, *chunks, commit = restore_entries(data, chunk=200)
    kv = KVStore()
    assert kv.apply(begin).ok and kv.apply(chunks[0]).ok
    assert kv.apply(begin).ok  # a retried BEGIN keeps what is staged
    assert kv.apply(chunks[0]).ok  # a retried chunk: same bytes, accepted once
    assert kv.staged_restore()[1] == 200
    skipped = kv.apply(chunks[2])
    assert not skipped.ok and "400" in skipped.error and "200 bytes are staged" in skipped.error
    different = kv.apply(encode_restore_chunk("r1", 0, b"x" * 200))
    assert not different.ok and "overlaps different" in different.error
    early = kv.apply(commit)
    assert not early.ok and "incomplete" in early.error
    assert all(kv.apply(e).ok for e in [begin, *chunks, commit])
    assert kv.apply(commit).ok  # a retried commit is answered, not refused
    assert contents(kv) == SOURCE


def test_abort_drops_the_upload():
    kv = store_with({b"keep": b"1"})
    begin, first, *_ = restore_entries(backup_bytes(store_with(SOURCE)))
    kv.apply(begin)
    kv.apply(first)
    assert kv.apply(encode_restore_abort("r1")).ok and kv.staged_restore() is None
    assert not kv.apply(encode_restore_commit("r1")).ok
    assert contents(kv) == {b"keep": b"1"}


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([4, 5, 6, 7]), st.lists(st.one_of(
    st.text(max_size=3), st.integers(-2, 70), st.binary(max_size=8)), max_size=4)), max_size=8))
def test_restore_commands_are_total(commands):
    import msgspec

    kv = KVStore()
    for op, args in commands:
        kv.apply(b"\x01" + msgspec.msgpack.encode([op, *args]))  # never raises
    kv.restore(kv.snapshot())


def test_a_frozen_view_keeps_the_state_of_its_moment_while_writes_go_on():
    kv = store_with(SOURCE)
    expected = b"".join(kv.snapshot_chunks(batch=5))
    with kv.freeze() as frozen:
        chunks = frozen.chunks(batch=5)
        first = next(chunks)  # serialization has started...
        kv.apply(encode_put(b"key000", b"changed"))  # ...and the store moves on
        kv.apply(encode_delete(b"key010"))
        kv.apply(encode_put(b"new", b"1"))
        kv.apply(encode_put(b"key000", b"changed again"))
        data = first + b"".join(chunks)
    assert data == expected
    assert kv._frozen == ()
    kv.apply(encode_put(b"key001", b"unrecorded"))
    decoded = decode_snapshot(kv.snapshot())
    assert decoded.data[b"key001"][0] == b"unrecorded" and b"key010" not in decoded.data


def test_a_backup_holds_only_the_data():
    kv = store_with(SOURCE)
    kv.apply(encode_put(b"s", b"1", client="c", seq=3))
    kv.apply(encode_restore_begin("r", 10, "0" * 64))
    decoded = decode_snapshot(backup_bytes(kv))
    assert decoded.sessions == [] and decoded.staged is None
    assert {k: v[0] for k, v in decoded.data.items()} == {**SOURCE, b"s": b"1"}
