"""The nemesis's short form, as CI runs it: five real `keyval serve` processes over tcp and over
udp, concurrent clients, every default fault kind, fixed seeds; the history must be
linearizable, every acknowledged write present, every replica the same. About a minute each;
deselect with ``-m "not slow"``. The long form: ``python -m keyval.testing.nemesis --duration 1800``."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from keyval.testing.nemesis import RunOptions, run
from keyval.testing.nemesis_faults import DEFAULT_FAULTS

DURATION = 45


def _check_summary(summary: str) -> None:
    # What the long run's note needs: operations, faults of each kind, elections, the verdict.
    ops = re.search(r"ops (\d+) \(ok (\d+), fail (\d+), unknown (\d+)\)", summary)
    assert ops and int(ops.group(2)) > 1000, summary
    faults = dict((k, int(v)) for k, v in re.findall(r"(\w+)=(\d+)", summary.split("faults ")[1].split(";")[0]))
    assert set(faults) == set(DEFAULT_FAULTS) and sum(faults.values()) >= 8, summary
    assert sum(1 for n in faults.values() if n) >= 3, summary  # several kinds, not one over and over
    elections = re.search(r"elections (\d+)", summary)
    assert elections and int(elections.group(1)) >= 2, summary
    assert "; linearizable: " in summary and "acked writes present" in summary and "replicas identical" in summary


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_nemesis_over_tcp(tmp_path):
    outcome = run(RunOptions(seed=1, duration=DURATION, transport="tcp", nodes=5, faults=DEFAULT_FAULTS,
                             out=tmp_path / "run"))
    assert outcome.ok, outcome.summary
    _check_summary(outcome.summary)
    log = (tmp_path / "run" / "faults.log").read_text()
    assert "start: python -m keyval.testing.nemesis --seed 1" in log and "healed" in log, log
    assert list((tmp_path / "run").glob("n*/keyval.log"))
    # A pass keeps logs, not data nor history.
    assert not list((tmp_path / "run").glob("n*/data")) and not (tmp_path / "run" / "history.jsonl").exists()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_nemesis_over_udp_from_the_command_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "keyval.testing.nemesis", "--seed", "2", "--duration",
                             str(DURATION), "--transport", "udp", "--out", str(tmp_path / "run")],
                            capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nemesis seed 2 udp 5 nodes") and "PASS" in lines[0], result.stdout
    _check_summary(lines[0])
