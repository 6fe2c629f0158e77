"""The backup archive: written by streaming, read back only when every check passes."""
import dataclasses
import gzip
import hashlib
import io
import json
import tarfile

import pytest

from keyval.ops.backup import (
    DATA_NAME,
    MANIFEST_NAME,
    ArchiveError,
    ArchiveWriter,
    Manifest,
    iso_time,
    read_archive,
)
from keyval.kv import KVStore, encode_put
from keyval.kv.snapshot import decode_snapshot


def snapshot_data(keys: int = 300) -> bytes:
    kv = KVStore()
    for n in range(keys):
        kv.apply(encode_put(f"k{n:05d}".encode(), f"value {n}".encode() * 3))
    with kv.freeze() as frozen:
        return b"".join(frozen.chunks(batch=50, backup=True))


def manifest_for(data: bytes, keys: int = 300, **changes) -> Manifest:
    manifest = Manifest(cluster_id="c0ffee", node="node1", index=412, term=3, revision=keys, keys=keys,
                        size=len(data), sha256=hashlib.sha256(data).hexdigest(), created=iso_time(1.7e9),
                        keyval_version="0.1.0")
    return dataclasses.replace(manifest, **changes)


def write(path, data: bytes, manifest: Manifest | None = None, step: int = 1000) -> None:
    with ArchiveWriter(path, manifest or manifest_for(data)) as writer:
        for offset in range(0, len(data), step):
            writer.write(data[offset : offset + step])
        writer.commit()


def handmade(path, members: list[tuple[str, bytes]]) -> None:
    """An archive written by tarfile itself, members as given (for archives kvctl never writes)."""
    with tarfile.open(path, "w:gz") as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))


def test_round_trip_and_the_archive_is_an_ordinary_tar_gz(tmp_path):
    data = snapshot_data()
    path = tmp_path / "backup.tar.gz"
    write(path, data)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backup.tar.gz"]  # no temporary left
    with tarfile.open(path) as tar:  # any tar tool can list and extract it
        assert tar.getnames() == [MANIFEST_NAME, DATA_NAME]
        manifest = json.loads(tar.extractfile(MANIFEST_NAME).read())
        assert tar.extractfile(DATA_NAME).read() == data
    assert manifest["format"] == "keyval-backup" and manifest["format_version"] == 1
    assert {"cluster_id", "index", "term", "sha256", "keyval_version", "created", "keys"} <= set(manifest)
    backup = read_archive(path)
    assert backup.data == data and backup.manifest == manifest_for(data)
    assert len(decode_snapshot(backup.data).data) == 300


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    data = snapshot_data()
    path = tmp_path / "b.tar.gz"
    with pytest.raises(ArchiveError, match="does not match the checksum"):
        write(path, data, manifest_for(data, sha256="0" * 64))
    with pytest.raises(ArchiveError, match="got 1000 of"):
        with ArchiveWriter(path, manifest_for(data)) as writer:
            writer.write(data[:1000])
            writer.commit()
    with pytest.raises(RuntimeError):
        with ArchiveWriter(path, manifest_for(data)) as writer:
            writer.write(data[:10])
            raise RuntimeError("the download broke")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("cut", [1, 9, 600, 0.5, 0.9])
def test_a_truncated_archive_is_rejected(tmp_path, cut):
    path = tmp_path / "b.tar.gz"
    write(path, snapshot_data())
    raw = path.read_bytes()
    keep = int(len(raw) * cut) if isinstance(cut, float) else len(raw) - cut
    path.write_bytes(raw[:keep])
    with pytest.raises(ArchiveError, match="truncated|damaged"):
        read_archive(path)


def test_a_changed_byte_anywhere_in_the_file_is_rejected(tmp_path):
    path = tmp_path / "b.tar.gz"
    write(path, snapshot_data())
    raw = path.read_bytes()
    for position in (20, len(raw) // 3, len(raw) // 2, len(raw) - 12):
        damaged = bytearray(raw)
        damaged[position] ^= 0x10
        path.write_bytes(bytes(damaged))
        with pytest.raises(ArchiveError):
            read_archive(path)


def test_tampered_data_with_a_consistent_gzip_is_caught_by_the_checksum(tmp_path):
    data = snapshot_data()
    path = tmp_path / "b.tar.gz"
    changed = bytearray(data)
    changed[len(data) // 2] ^= 0x01
    handmade(path, [(MANIFEST_NAME, manifest_for(data).to_json()), (DATA_NAME, bytes(changed))])
    with pytest.raises(ArchiveError, match="does not match the manifest's sha256"):
        read_archive(path)


def test_a_changed_manifest_checksum_is_caught(tmp_path):
    data = snapshot_data()
    path = tmp_path / "b.tar.gz"
    wrong = manifest_for(data, sha256=hashlib.sha256(b"something else").hexdigest())
    handmade(path, [(MANIFEST_NAME, wrong.to_json()), (DATA_NAME, data)])
    with pytest.raises(ArchiveError, match="does not match the manifest's sha256"):
        read_archive(path)


def test_data_that_is_not_a_kv_snapshot_is_rejected_even_with_a_matching_checksum(tmp_path):
    path = tmp_path / "b.tar.gz"
    junk = b"\x01" + b"\x00\x00\x10\x00" + b"x" * 20
    handmade(path, [(MANIFEST_NAME, manifest_for(junk).to_json()), (DATA_NAME, junk)])
    with pytest.raises(ArchiveError, match="is not KeyVal data"):
        read_archive(path)
    data = snapshot_data(10)
    handmade(path, [(MANIFEST_NAME, manifest_for(data, keys=11).to_json()), (DATA_NAME, data)])
    with pytest.raises(ArchiveError, match="holds 10 keys, the manifest says 11"):
        read_archive(path)


@pytest.mark.parametrize("members,message", [
    ([(DATA_NAME, b"x")], "no manifest.json"),
    ([(MANIFEST_NAME, b"{not json")], "not valid JSON"),
    ([(MANIFEST_NAME, json.dumps({"format": "tarball"}).encode())], "does not describe a KeyVal backup"),
    ([(MANIFEST_NAME, json.dumps({"format": "keyval-backup", "format_version": 2}).encode())],
     "format version 2, newer than this kvctl reads"),
    ([(MANIFEST_NAME, json.dumps({"format": "keyval-backup", "format_version": 1, "index": "7"}).encode())],
     "lacks valid field"),
])
def test_a_bad_manifest_is_rejected(tmp_path, members, message):
    path = tmp_path / "b.tar.gz"
    handmade(path, members)
    with pytest.raises(ArchiveError, match=message):
        read_archive(path)


def test_what_is_not_a_backup_at_all(tmp_path):
    with pytest.raises(ArchiveError, match="cannot read"):
        read_archive(tmp_path / "absent.tar.gz")
    plain = tmp_path / "plain.txt"
    plain.write_text("hello")
    with pytest.raises(ArchiveError, match="not a gzip file|damaged"):
        read_archive(plain)
    zipped = tmp_path / "text.gz"
    zipped.write_bytes(gzip.compress(b"hello, not a tar"))
    with pytest.raises(ArchiveError, match="not a tar.gz"):
        read_archive(zipped)
