"""A full disk never stops a node (issue 15). Real `keyval serve` processes, each data dir on
a small loop-mounted ext4 of its own, filled with a filler file:

* below ``space_reserve``: the NOSPACE alarm — writes refused at once with a clear error,
  reads and leadership carry on, the alarm shows in status, /health, /metrics and `kvctl
  cluster health`; the filler deleted, writes are accepted again with no restart;
* truly full (no reserve) while writes go on: the node does not exit, retries until space
  returns and catches up; every data dir, reopened, reads back every acknowledged write
  and nothing that was not written (no partial record)."""
from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import time
from contextlib import ExitStack

import pytest

from keyval.client import Client
from keyval.errors import NoSpace
from keyval.kv import KVStore
from keyval.raft.types import EntryType
from keyval_plugins.storage.segment.options import SegmentOptions
from keyval_plugins.storage.segment.storage import SegmentStorage

from .procs import BackgroundWriter, LocalCluster
from .small_fs import MiB, fill, small_filesystem
from .test_node_metrics import scrape
from .test_node_stuck_member import http_health, wait_until

DISK = 32 * MiB


@pytest.fixture
def disks():
    with ExitStack() as stack:
        yield stack


def on_small_disks(tmp_path, stack: ExitStack, *flags: str) -> LocalCluster:
    """Three nodes, each data dir on its own small ext4; stopped before the disks go."""
    config = tmp_path / "node.yaml"
    config.write_text("storage_options:\n  segment_size: 1MiB\n")
    cluster = LocalCluster(tmp_path, extra=("--config", str(config), *flags))
    for node_id in cluster.initial:
        stack.enter_context(small_filesystem(cluster.nodes[node_id].data_dir, DISK))
    stack.callback(cluster.stop_all)
    cluster.start()
    return cluster


def kvctl(cluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kvctl.cli", "--endpoints", ",".join(cluster.endpoints()), *args],
                          capture_output=True, text=True, timeout=30)


def test_below_the_reserve_writes_are_refused_and_reads_and_leadership_go_on(tmp_path, disks):
    c = on_small_disks(tmp_path, disks, "--space-reserve", "4MiB")
    leader = c.wait_for_leader()
    node = c.nodes[leader]
    pids = {n: c.nodes[n].proc.pid for n in c.initial}
    with c.client() as client:
        client.put("before", "full")
    term = c.status(leader)["term"]

    filler = fill(node.data_dir / "filler", leave=2 * MiB)
    with c.client(timeout=5) as client:
        refused = wait_until(lambda: _refused(client), 5, "writes refused", c)
        assert re.fullmatch(rf"no space left on device for node {leader}'s log: writes are refused until space is "
                            rf"freed \(NOSPACE alarm: \d+\.\d MiB free in {node.data_dir}, below space_reserve "
                            rf"\(4\.0 MiB\)\)", str(refused)), str(refused)
        for write in (lambda: client.delete("before"), lambda: client.put("before", "cas", expect_revision=1)):
            with pytest.raises(NoSpace):
                write()
        # Reads (linearizable ones too) and leadership go on.
        for _ in range(10):
            assert client.get("before") == b"full" and [i.key for i in client.scan("bef")] == [b"before"]
            time.sleep(0.3)
    status = c.status(leader)
    assert status["role"] == "leader" and status["term"] == term
    assert status["alarms"] == ["NOSPACE"] and status["space"]["free_bytes"] < 4 * MiB
    code, own = http_health(node)
    assert code == 503 and own["alarms"] == ["NOSPACE"] and own["reason"].startswith("NOSPACE alarm: "), own
    metrics = scrape(node)
    assert metrics['keyval_alarm{alarm="nospace"}'] == 1 and metrics["keyval_space_reserve_bytes"] == 4 * MiB
    assert metrics["keyval_disk_free_bytes"] < 4 * MiB
    assert scrape(c.nodes[next(n for n in c.initial if n != leader)])['keyval_alarm{alarm="nospace"}'] == 0
    put = kvctl(c, "put", "k", "v")
    assert put.returncode == 1 and put.stdout == ""
    assert put.stderr.splitlines() == [f"kvctl put: the cluster refused: {refused}"]
    health = kvctl(c, "cluster", "health")
    assert health.returncode == 1 and f"Member {leader} has the NOSPACE alarm raised: " in health.stdout, health
    doc = json.loads(kvctl(c, "cluster", "health", "--json").stdout)
    assert doc["healthy"] is False and doc["alarms"] == {leader: ["NOSPACE"]}
    added = kvctl(c, "cluster", "add", "n4", c.nodes["n4"].peer_addr)
    assert added.returncode == 1 and "NOSPACE alarm" in added.stderr, added

    filler.unlink()
    with c.client(timeout=10) as client:
        wait_until(lambda: _accepted(client), 5, "writes accepted again", c)
        assert client.get("after") == b"space"
    assert c.status(leader)["alarms"] == [] and http_health(node)[0] == 200
    assert kvctl(c, "cluster", "health").returncode == 0
    log = node.log()
    assert log.count("NOSPACE alarm raised") == 1 and log.count("NOSPACE alarm cleared") == 1, log[-3000:]

    # A follower's alarm: the leader writes on, and `kvctl cluster health` names the follower.
    follower = next(n for n in c.initial if n != leader)
    filler = fill(c.nodes[follower].data_dir / "filler", leave=2 * MiB)
    health = wait_until(lambda: (r := kvctl(c, "cluster", "health")).returncode == 1 and r, 5, "the follower named", c)
    assert f"Member {follower} has the NOSPACE alarm raised: " in health.stdout, health.stdout
    with c.client() as client:
        client.put("follower", "full")
    filler.unlink()
    wait_until(lambda: kvctl(c, "cluster", "health").returncode == 0, 5, "healthy again", c)
    assert {n: c.nodes[n].proc.pid for n in c.initial} == pids and all(c.nodes[n].running for n in c.initial)


def _refused(client) -> NoSpace | None:
    try:
        client.put("during", "full")
    except NoSpace as exc:
        return exc
    return None


def _accepted(client) -> bool:
    try:
        client.put("after", "space")
    except NoSpace:
        return False
    return True


def test_a_truly_full_disk_stops_no_node_and_loses_no_acknowledged_write(tmp_path, disks, caplog):
    c = on_small_disks(tmp_path, disks, "--space-reserve", "0")
    leader = c.wait_for_leader()
    node = c.nodes[leader]
    with BackgroundWriter(lambda: c.client(timeout=2), value_bytes=1100) as writer:
        wait_until(lambda: len(writer.acked) >= 50, 20, "writes before the disk fills", c)
        filler = fill(node.data_dir / "filler")  # to the last byte
        wait_until(lambda: "persisting failed: " in node.log(), 30, f"{leader}'s writes failing", c)
        failing = c.status(leader)
        assert failing["alarms"] == ["NOSPACE"] and failing["space"]["persist_error"].startswith("ENOSPC"), failing
        # Stuck on its disk, it stops heartbeating: another node leads and writes go on.
        acked = len(writer.acked)
        wait_until(lambda: len(writer.acked) >= acked + 50, 30, "writes going on elsewhere", c)
        assert node.running

        filler.unlink()
        wait_until(lambda: "persisting works again" in node.log(), 15, f"{leader} writing again", c)
        wait_until(lambda: len(writer.acked) >= acked + 100, 30, "more writes", c)
    assert node.running and c.status(leader)["alarms"] == []
    assert c.status(leader)["space"]["persist_error"] is None
    # Every node catches up with the last write acknowledged.
    last = max(writer.acked)
    with Client([node.client_addr], timeout=5) as client:
        wait_until(lambda: client.get(last, serializable=True) is not None, 20, f"{leader} caught up", c)
    assert scrape(node)['keyval_persist_retries_total{error="ENOSPC"}'] >= 1
    log = node.log()
    assert log.count("persisting failed") == 1 and "Traceback" not in log and "fatal" not in log, log[-3000:]
    for n in c.initial:
        assert c.nodes[n].stop() == 0, c.nodes[n].log()[-3000:]

    # Each data dir, reopened, holds every acknowledged write and nothing else.
    caplog.set_level(logging.WARNING)
    for n in c.initial:
        held = read_back(c.nodes[n].data_dir)
        assert set(writer.acked) <= set(held) <= writer.tried, n
        assert all(held[key] == value for key, value in writer.acked.items()), n
    assert not [r for r in caplog.records if "torn" in r.getMessage() or "damaged" in r.getMessage()], caplog.text


def read_back(data_dir) -> dict[str, bytes]:
    """The keys written, as the data dir's snapshot and log say (every entry must decode)."""
    storage = SegmentStorage(str(data_dir), SegmentOptions(segment_size=MiB))
    try:
        kv = KVStore()
        snapshot = storage.load_snapshot()
        if snapshot is not None and snapshot.data:
            kv.restore(snapshot.data)
        first = max(storage.first_index(), storage.snapshot_meta().index + 1)
        for entry in storage.entries(first, storage.last_index() + 1):
            if entry.type is EntryType.NORMAL and entry.data:
                kv.apply(entry.data)
        return {item.key.decode(): item.value for item in kv.scan(b"w")}
    finally:
        storage.close()
