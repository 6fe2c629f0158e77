"""The nemesis's levers on their own, against the real parts: the disk fault on a real segment
log, the partitions it writes for the faulty transport, the saved history and --check."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from keyval.raft.types import Entry
from keyval.testing.linearizability import Operation
from keyval.testing.nemesis import RunOptions
from keyval.testing.nemesis_clients import load_history, save_history
from keyval.testing.nemesis_cluster import Cluster
from keyval.testing.nemesis_disk import damage_last_segment
from keyval.testing.nemesis_faults import DEFAULT_FAULTS
from keyval_plugins.storage.segment.options import SegmentOptions
from keyval_plugins.storage.segment.storage import SegmentStorage
from keyval_plugins.transport.faulty_rules import parse_rules


def write_log(data_dir, batches: int) -> int:
    """``batches`` appends of 3 entries each, each synced, as a node writes them; the last index."""
    store = SegmentStorage(str(data_dir), SegmentOptions(segment_size=1 << 20))
    index = 0
    for _ in range(batches):
        store.append([Entry(1, index + k, data=b"x" * 50) for k in (1, 2, 3)])
        store.sync()
        index += 3
    store.close()
    return index


def last_index_after_reopen(data_dir) -> int:
    store = SegmentStorage(str(data_dir), SegmentOptions(segment_size=1 << 20))
    try:
        return store.last_index()
    finally:
        store.close()


@pytest.mark.parametrize("variant, where", [(0.1, 0.0), (0.1, 0.9), (0.7, 0.5)])
def test_disk_fault_loses_synced_entries_at_the_tail_of_a_real_segment_log(tmp_path, variant, where):
    last = write_log(tmp_path, batches=10)
    what = damage_last_segment(tmp_path / "log", variant, where)
    after = last_index_after_reopen(tmp_path)
    # The damaged tail reads as a torn write: the storage opens, without the entries it held.
    assert after < last, what
    lost_from = int(what.split("from index ")[1].split(" ")[0])
    assert after == lost_from - 1, what
    assert ("cut" in what) == (variant < 0.5) and ("flipped" in what) == (variant >= 0.5)


def test_disk_fault_on_an_empty_log_says_so(tmp_path):
    (tmp_path / "log").mkdir()
    assert damage_last_segment(tmp_path / "log", 0.1, 0.5) == "no segment to damage"


def test_partitions_are_a_rules_document_the_faulty_transport_accepts(tmp_path):
    cluster = Cluster(tmp_path, "udp", 3)
    cluster.set_partitions([["n1", "n2"], {"from": "n3", "to": "n1", "one_way": True}])
    rules = parse_rules(json.loads(cluster.control.read_text()))
    cuts = {(p.a, p.b, p.one_way) for p in rules.partitions}
    assert cuts == {("n1", "n2", False), ("n3", "n1", True)}
    cluster.set_partitions([])
    assert not parse_rules(json.loads(cluster.control.read_text()))
    config = json.loads(cluster.config.read_text())  # YAML, written as JSON
    assert config["transport"] == "faulty" and config["transport_options"]["inner"] == "udp"


def test_saved_history_round_trips_and_check_finds_a_stale_read(tmp_path):
    ops = [Operation(1, "put", "k", "a", 0.0, 1.0), Operation(2, "put", "k", "b", 2.0, 3.0),
           Operation(3, "cas", "k", "c", 3.5, None, True, "b"), Operation(4, "get", "k", "a", 4.0, 5.0)]
    path = tmp_path / "history.jsonl"
    save_history(ops, path)
    assert load_history(path) == ops
    result = subprocess.run([sys.executable, "-m", "keyval.testing.nemesis", "--check", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "not linearizable" in result.stdout, result.stdout + result.stderr
    save_history(ops[:3], path)
    result = subprocess.run([sys.executable, "-m", "keyval.testing.nemesis", "--check", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("linearizable"), result.stdout + result.stderr


def test_replay_command_names_the_seed_and_only_faults_off_the_default():
    options = RunOptions(seed=42, duration=30, transport="udp", nodes=5, faults=DEFAULT_FAULTS)
    assert options.replay_command() == "python -m keyval.testing.nemesis --seed 42 --duration 30 --transport udp --nodes 5"
    options = RunOptions(seed=42, duration=30, transport="tcp", nodes=5, faults=("kill", "disk"))
    assert options.replay_command().endswith("--nodes 5 --faults kill,disk")


def test_bad_usage_is_one_line_and_exit_2():
    result = subprocess.run([sys.executable, "-m", "keyval.testing.nemesis", "--faults", "kill,meteor"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "unknown fault kind(s) meteor" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
