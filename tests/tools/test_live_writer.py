"""The live-write checker the Ansible scenarios rely on, against real `keyval serve` processes:
it keeps writing through a leader kill, every acknowledged write reads back from every node,
and a record of a write the cluster never saw is reported lost (exit 1)."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.node.procs import LocalCluster

WRITER = Path(__file__).resolve().parents[2] / "molecule" / "shared" / "live_writer.py"


def writer(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(WRITER), *args], capture_output=True, text=True, timeout=timeout)


def test_no_acknowledged_write_lost_through_a_leader_kill_and_a_forged_record_is_caught(tmp_path):
    cluster = LocalCluster(tmp_path / "nodes")
    cluster.start()
    out = tmp_path / "writer"
    endpoints = ",".join(cluster.endpoints())
    try:
        leader = cluster.wait_for_leader()
        started = writer("start", "--endpoints", endpoints, "--out", str(out), "--rate", "60")
        assert started.returncode == 0, started.stderr
        time.sleep(3)
        cluster.nodes[leader].kill()
        cluster.wait_for_leader(among=[n for n in cluster.initial if n != leader])
        time.sleep(2)
        cluster.start(leader)
        time.sleep(2)
        stopped = writer("stop", "--out", str(out))
        assert stopped.returncode == 0, stopped.stderr
        run = json.loads(stopped.stdout)
        assert run["acknowledged"] >= 100, run
        assert run["longest_gap_s"] is not None and run["longest_gap_s"] > 0

        checked = writer("check", "--endpoints", endpoints, "--out", str(out))
        result = json.loads(checked.stdout)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert result["lost"] == 0 and result["acknowledged"] == run["acknowledged"]
        assert set(result["per_node"]) == set(cluster.endpoints())

        # An acknowledgement the cluster never saw: the check must call it lost.
        with (out / "acks.jsonl").open("a") as acks:
            acks.write(json.dumps({"k": f"live/{run['run_id']}/999999999", "v": "never", "rev": 1, "t": 0}) + "\n")
        forged = writer("check", "--endpoints", endpoints, "--out", str(out), "--timeout", "3")
        assert forged.returncode == 1, forged.stdout
        assert json.loads(forged.stdout)["lost"] == 1
    finally:
        writer("stop", "--out", str(out))
        cluster.stop_all()
