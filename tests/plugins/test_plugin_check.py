"""`keyval plugin-check NAME`: a real 3-node cluster on the named storage, one line per step."""
from __future__ import annotations

import re

STEPS = ["plugin", "start", "write", "restart node", "snapshot", "compact", "restart all", "read back"]


def test_segment_passes_every_step_on_one_screen(run_script, tmp_path):
    ran = run_script("keyval", "plugin-check", "segment", "--dir", str(tmp_path / "cluster"))
    lines = ran.stdout.splitlines()
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert [line[6:].split("  ")[0].strip() for line in lines if line.startswith("PASS  ")] == STEPS, ran.stdout
    assert re.fullmatch(r"plugin-check segment: all 8 steps passed in [\d.]+s", lines[-1]), lines[-1]
    assert len(lines) <= 12, "more than one screen"
    assert "caught up to index" in ran.stdout and "read back from each node" in ran.stdout
    assert not (tmp_path / "cluster" / "node1" / "keyval.pid").exists(), "a node was left running"


def test_an_unknown_plugin_fails_the_first_step_and_skips_the_rest(run_script):
    ran = run_script("keyval", "plugin-check", "no-such-storage")
    assert ran.returncode == 1, ran.stdout + ran.stderr
    assert "FAIL  plugin        unknown storage backend 'no-such-storage'; available: " in ran.stdout
    assert [line for line in ran.stdout.splitlines() if line.startswith("SKIP  ")] == [f"SKIP  {s}" for s in STEPS[1:]]
