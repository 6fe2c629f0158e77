"""Fuzzing the backup archive reader (keyval/ops/backup.py ``read_archive``, what
``kvctl restore`` checks an archive with before it sends anything).

Every archive starts as what ``ArchiveWriter`` wrote from a real KV snapshot. Damage goes in
at three depths: the .tar.gz bytes; the tar inside a sound gzip stream (tar header
checksums recomputed or not); and the manifest or the data in an otherwise consistent
archive (the manifest's size and sha256 made to match the damaged data, so the data reaches
the KV snapshot decoder). Only ArchiveError may come out; a damaged archive is either refused
or holds exactly the data that was backed up.
"""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import tarfile
import tempfile
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fuzz_mutations import damaged, note, strange_bytes, within
from keyval.kv import KVStore, encode_put
from keyval.kv.restore import StagedRestore
from keyval.kv.snapshot import decode_snapshot
from keyval.ops.backup import DATA_NAME, MANIFEST_NAME, ArchiveError, ArchiveWriter, Backup, Manifest, iso_time, read_archive

FUZZ = settings.get_profile("keyval-fuzz")
KEYS = 12
#: openers that nest: JSON (the manifest), msgpack arrays and maps (the snapshot frames)
NESTING = (b"[", b'{"a":', b"\x91", b"\x81\xa1a", b"\xdd\x00\x01\x00\x00")


def snapshot_data() -> bytes:
    kv = KVStore()
    for n in range(KEYS):
        kv.apply(encode_put(f"key-{n:03d}".encode(), f"value {n}".encode() * (n % 4 + 1)))
    with kv.freeze() as frozen:
        return b"".join(frozen.chunks(batch=5, backup=True))


def manifest_for(data: bytes, keys: int = KEYS) -> Manifest:
    return Manifest(cluster_id="c0ffee", node="node1", index=412, term=3, revision=KEYS, keys=keys, size=len(data),
                    sha256=hashlib.sha256(data).hexdigest(), created=iso_time(1.7e9), keyval_version="0.2.0")


def written(path: str, data: bytes, manifest: Manifest) -> bytes:
    with ArchiveWriter(path, manifest) as writer:
        writer.write(data)
        writer.commit()
    with open(path, "rb") as f:
        return f.read()


@dataclasses.dataclass(frozen=True)
class Original:
    data: bytes
    manifest: Manifest
    archive: bytes  # the .tar.gz
    tar: bytes  # inside it


@pytest.fixture(scope="module")
def original() -> Original:
    data = snapshot_data()
    with tempfile.TemporaryDirectory() as tmp:
        archive = written(os.path.join(tmp, "b.tar.gz"), data, manifest_for(data))
    return Original(data, manifest_for(data), archive, gzip.decompress(archive))


def checked(raw: bytes) -> Backup:
    """``read_archive`` of ``raw`` in a file; only ArchiveError may come out, in time."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "b.tar.gz")
        with open(path, "wb") as f:
            f.write(raw)
        with within(10):
            try:
                return read_archive(path)
            except ArchiveError as exc:
                assert "\n" not in str(exc) and path in str(exc)
                note("ArchiveError")
                raise


def tar_header_offsets(tar: bytes) -> list[int]:
    """Each tar header's size, checksum and type fields, and where its content starts."""
    found = []
    for block in range(0, len(tar), 512):
        if tar[block + 257 : block + 262] == b"ustar":
            found += [block + 124, block + 148, block + 156, block + 512]
    return found


def reseal_tar(tar: bytes) -> bytes:
    """Recompute the checksum of every block that looks like a tar header."""
    buf = bytearray(tar)
    for block in range(0, len(buf) - 511, 512):
        if buf[block + 257 : block + 262] == b"ustar":
            buf[block + 148 : block + 156] = b" " * 8
            buf[block + 148 : block + 156] = b"%06o\0 " % sum(buf[block : block + 512])
    return bytes(buf)


def frame_offsets(data: bytes) -> list[int]:
    """Where the KV snapshot's length-prefixed frames start (their 4-byte lengths)."""
    found, pos = [], 1
    while pos + 4 <= len(data):
        found.append(pos)
        pos += 4 + int.from_bytes(data[pos : pos + 4], "big")
    return found


def frames_of(data: bytes) -> list[bytes]:
    return [data[pos + 4 : pos + 4 + int.from_bytes(data[pos : pos + 4], "big")] for pos in frame_offsets(data)]


@st.composite
def damaged_snapshot(draw, data: bytes) -> bytes:
    """KV snapshot bytes damaged as they lie, or with one frame's msgpack damaged and the
    frame lengths kept right (so the damage reaches the msgpack decoder)."""
    if draw(st.booleans()):
        return draw(damaged(data, frame_offsets(data), NESTING))
    frames = frames_of(data)
    k = draw(st.integers(0, len(frames) - 1))
    frames[k] = draw(damaged(frames[k], nest=NESTING))
    return data[:1] + b"".join(len(f).to_bytes(4, "big") + f for f in frames)


def gzip_fields(archive: bytes) -> list[int]:
    return [3, 4, 8, 9, 10, len(archive) - 8, len(archive) - 4]


@settings(FUZZ)
@given(data=st.data())
def test_a_damaged_archive_is_refused_or_holds_what_was_backed_up(original, data):
    bad = data.draw(damaged(original.archive, gzip_fields(original.archive)))
    try:
        backup = checked(bad)
    except ArchiveError:
        return
    assert (backup.data, backup.manifest) == (original.data, original.manifest)


@settings(FUZZ)
@given(data=st.data(), resealed=st.booleans())
def test_a_damaged_tar_in_a_sound_gzip_is_refused_or_holds_the_data_backed_up(original, data, resealed):
    bad = data.draw(damaged(original.tar, tar_header_offsets(original.tar), NESTING))
    try:
        backup = checked(gzip.compress(reseal_tar(bad) if resealed else bad, mtime=0))
    except ArchiveError:
        return
    assert backup.data == original.data  # the manifest's sha256 guards it


@settings(FUZZ)
@given(data=st.data())
def test_a_consistent_archive_of_damaged_data_is_refused_or_is_a_kv_snapshot(original, data):
    bad = data.draw(damaged_snapshot(original.data))
    manifest = dataclasses.replace(manifest_for(bad), size=max(len(bad), 1))
    with tempfile.TemporaryDirectory() as tmp:
        try:
            raw = written(os.path.join(tmp, "b.tar.gz"), bad, manifest)
        except ArchiveError:
            note("not writable (empty data)")
            return
    try:
        backup = checked(raw)
    except ArchiveError:
        return
    assert len(decode_snapshot(backup.data).data) == backup.manifest.keys


@settings(FUZZ)
@given(data=st.data())
def test_an_archive_with_a_damaged_manifest_is_refused_or_describes_the_data(original, data):
    manifest = data.draw(damaged(original.manifest.to_json(), nest=NESTING[:2]))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, content in ((MANIFEST_NAME, manifest), (DATA_NAME, original.data)):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    try:
        backup = checked(buf.getvalue())
    except ArchiveError:
        return
    assert backup.data == original.data and backup.manifest.sha256 == original.manifest.sha256


@settings(FUZZ)
@given(raw=st.one_of(strange_bytes(b"\x1f\x8b\x08\x00"), strange_bytes().map(gzip.compress)))
def test_strange_bytes_as_an_archive_are_refused(raw):
    with pytest.raises(ArchiveError):
        checked(raw)


def member(name: str, size: int, content: bytes) -> bytes:
    """A tar member as tarfile writes it: header, then the content padded to a block."""
    info = tarfile.TarInfo(name)
    info.size = size
    return info.tobuf(tarfile.PAX_FORMAT) + content + bytes(-len(content) % 512)


def test_members_claiming_huge_sizes_allocate_only_what_is_there(original):
    huge = 1 << 40
    manifest = dataclasses.replace(original.manifest, size=huge).to_json()
    # A few hundred bytes of the 1 TiB announced, then the archive ends.
    tar = member(MANIFEST_NAME, len(manifest), manifest) + member(DATA_NAME, huge, original.data)
    tracemalloc.start()
    try:
        with pytest.raises(ArchiveError, match="truncated"):
            checked(gzip.compress(tar))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"{peak >> 20} MiB held to refuse a {len(tar)}-byte archive"


# -- the restore's reader on every node ---------------------------------------------------------
@settings(FUZZ)
@given(data=st.data())
def test_a_staged_restore_of_damaged_data_never_raises_and_agrees_with_the_archive_check(original, data):
    """``kvctl restore`` checks the data with decode_snapshot, then every node stages it
    chunk by chunk (keyval/kv/restore.py, inside the apply of each RESTORE_CHUNK): what the
    check accepted, a node must accept with the same keys; and no bytes may make it raise."""
    bad = data.draw(damaged_snapshot(original.data))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(bad)), max_size=4)))
    staged = StagedRestore("r1", len(bad), hashlib.sha256(bad).hexdigest())
    with within(5):
        for start, end in zip([0, *cuts], [*cuts, len(bad)]):
            staged.feed(bad[start:end])
        try:
            checked = decode_snapshot(bad)
        except ValueError:
            checked = None
    problem = staged.problem()
    note("staged" if not problem else "refused")
    if checked is not None:
        assert not problem, f"the archive check accepted what a node refuses: {problem}"
        assert {k: v[0] for k, v in staged.items.items()} == {k: v[0] for k, v in checked.data.items()}
