"""Smoke test of the benchmark (``python -m keyval.bench``): a very short run against a real
local cluster prints every figure it should. Only shape and plausibility are checked, never
speed: the machine may be busy."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.timeout(180)
def test_bench_prints_every_point(tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, "-m", "keyval.bench", "--dir", str(tmp_path / "cluster"),
         "--clients", "1,4", "--duration", "1", "--warmup", "0.2", "--setup-s", "1",
         "--keyspace", "500", "--json-out", str(out)],
        capture_output=True, text=True, timeout=170,
    )
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"

    # the table: a header, then one line per point, in order
    lines = run.stdout.splitlines()
    assert any(line.startswith("point") and "ops/s" in line and "p99 ms" in line for line in lines), run.stdout
    points = [line.split()[0:2] for line in lines if line.startswith(("put c=", "get c="))]
    assert points == [["put", "c=1"], ["put", "c=4"], ["get", "c=1"], ["get", "c=4"]], run.stdout
    assert "# preloaded 500 keys" in run.stdout

    doc = json.loads(out.read_text())
    assert doc["meta"]["nodes"] == 3
    assert doc["meta"]["key_bytes"] == 16 and doc["meta"]["value_bytes"] == 100
    results = doc["results"]
    assert [(r["op"], r["clients"]) for r in results] == [("put", 1), ("put", 4), ("get", 1), ("get", 4)]
    for r in results:
        assert r["ops"] > 0 and r["errors"] == 0, r
        assert r["ops_per_s"] == pytest.approx(r["ops"] / r["duration_s"], rel=0.01)
        assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] <= r["p999_ms"] <= r["max_ms"], r
        assert r["max_ms"] < 60_000
    for r in results[2:]:
        assert r["not_found"] == 0, r  # every key was preloaded

    # the cluster it started is gone
    assert not (tmp_path / "cluster").exists() or not any((tmp_path / "cluster").glob("node*/keyval.pid"))
