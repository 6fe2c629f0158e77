"""kvctl backup from a cluster under writes, a wipe, kvctl restore — and archives refused."""
import io
import json
import tarfile
import threading

from keyval.ops.backup import DATA_NAME, MANIFEST_NAME, read_archive
from keyval.kv.snapshot import decode_snapshot

NODES = (1, 2, 3)


def backup_contents(path) -> dict[bytes, bytes]:
    return {k: v[0] for k, v in decode_snapshot(read_archive(path).data).data.items()}


def retar(source, target, change) -> None:
    """Rewrite an archive member by member through ``change(name, bytes)`` with a sound gzip."""
    with tarfile.open(source) as src, tarfile.open(target, "w:gz") as dst:
        for member in src.getmembers():
            content = change(member.name, src.extractfile(member).read())
            info = tarfile.TarInfo(member.name)
            info.size = len(content)
            dst.addfile(info, io.BytesIO(content))


def test_backup_under_writes_wipe_and_restore_gives_exactly_the_backup(new_cluster, tmp_path):
    c = new_cluster()
    with c.client() as client:
        for n in range(300):
            client.put(f"base{n:04d}", f"value {n} " * 10)
    acknowledged: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        with c.client(timeout=15) as client:
            n = 0
            while not stop.is_set():
                client.put(f"w{n:06d}", str(n))
                acknowledged.append(f"w{n:06d}")
                n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        c.wait_until(lambda: len(acknowledged) >= 50, "the writer is under way")
        before = list(acknowledged)
        path = tmp_path / "backup.tar.gz"
        made = c.run("backup", str(path))
        assert made.returncode == 0, made.stderr
        assert made.stdout.startswith(f"backup written to {path}: ")
        c.wait_until(lambda: len(acknowledged) >= len(before) + 50, "writes after the backup")
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()

    saved = backup_contents(path)
    manifest = read_archive(path).manifest
    assert manifest.keys == len(saved) and manifest.cluster_id == c.node_status(1)["cluster_id"]
    # A point in time: every write acknowledged before the backup began, a prefix of the rest.
    written = {k.encode() for k in acknowledged}
    assert {k.encode() for k in before} <= saved.keys()
    ws = sorted(k for k in saved if k.startswith(b"w"))
    assert ws == sorted(written)[: len(ws)] and len(ws) < len(acknowledged)
    assert sum(k.startswith(b"base") for k in saved) == 300

    # Change things, then wipe everything.
    with c.client() as client:
        client.put("after-backup", "gone after the restore")
        client.put("base0000", "overwritten")
        for item in client.scan():
            client.delete(item.key)
        assert client.scan() == []

    refused = c.run("restore", str(path))  # no terminal, no --yes
    assert refused.returncode == 1 and "pass --yes" in refused.stderr
    with c.client() as client:
        assert client.scan() == []

    restored = c.run("restore", str(path), "--yes", "--json")
    assert restored.returncode == 0, restored.stderr
    result = json.loads(restored.stdout)
    assert result["restored"] is True and result["keys"] == len(saved)
    for n in NODES:  # every member holds exactly the backup
        c.wait_until(lambda: c.contents(n) == saved, f"node{n} holds the backup")
    with c.client() as client:
        client.put("after-restore", "stays")
        assert client.get("after-restore") == b"stays" and client.get("after-backup") is None

    # Bad archives are refused before anything is sent: the data stays as it is.
    expected = {**saved, b"after-restore": b"stays"}
    revision = c.node_status(1)["revision"]
    raw = path.read_bytes()
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(raw[: len(raw) * 2 // 3])
    tampered = tmp_path / "tampered.tar.gz"
    retar(path, tampered, lambda name, data: data[:100] + bytes([data[100] ^ 1]) + data[101:]
          if name == DATA_NAME else data)
    relabelled = tmp_path / "relabelled.tar.gz"
    retar(path, relabelled, lambda name, data: json.dumps(
        {**json.loads(data), "sha256": "0" * 64}).encode() if name == MANIFEST_NAME else data)
    for bad, why in [(truncated, "truncated"), (tampered, "does not match the manifest's sha256"),
                     (relabelled, "does not match the manifest's sha256")]:
        outcome = c.run("restore", str(bad), "--yes")
        assert outcome.returncode == 1, bad
        assert "not restoring, nothing changed" in outcome.stderr and why in outcome.stderr, outcome.stderr
    assert c.contents(1) == expected and c.node_status(1)["revision"] == revision
