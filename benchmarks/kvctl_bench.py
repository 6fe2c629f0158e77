"""kvctl benchmark: how long one ``kvctl`` command takes, as a shell loop or Ansible runs it.

    .venv/bin/python benchmarks/kvctl_bench.py [--runs 20] [--kvctl PATH]

Starts a 3-node local cluster (``kvctl local up`` on free ports, segment storage: a put is
answered once a quorum has fdatasynced it) in a temp dir, then runs each command ``--runs``
times as a new process, in turns (one of each, then again), so a busy machine slows them
alike, and prints the minimum, median and maximum wall time of each. Each command runs once
first, untimed, with bytecode caching on (``$PYTHONDONTWRITEBYTECODE`` is dropped): what is
timed is what an installed kvctl costs, not compiling its sources.

* ``python -c pass``: the interpreter's own start, the floor of any Python command;
* ``kvctl --version``;
* ``kvctl put bench/key value`` and ``kvctl get bench/key``, run in the directory holding
  the cluster's ``.keyval``, so kvctl finds it the way the README's dev cluster is found.

Targets (issue 16): ``kvctl --version`` under 80 ms, ``kvctl put`` under 120 ms. The kvctl
timed is the one installed beside this interpreter; ``--kvctl PATH``, repeated, times several
in the same turns (an older checkout's venv beside this one: a before/after that a busy
machine slows alike). Not a test: it asserts nothing but that every command succeeds.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from keyval.bench import BenchCluster

TARGETS_MS = {"kvctl --version": 80.0, "kvctl put": 120.0}


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"`{' '.join(argv)}` failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()}")
    return took


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks/kvctl_bench.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20, help="runs of each command (default 20)")
    ap.add_argument("--kvctl", action="append", metavar="PATH",
                    help="a kvctl to time; repeat to compare several in the same turns "
                         "(default: the one beside this interpreter)")
    ap.add_argument("--storage", default="segment")
    a = ap.parse_args(argv)
    if a.runs < 1:
        ap.error("--runs must be at least 1")
    kvctls = a.kvctl or [str(Path(sys.executable).parent / "kvctl")]
    for path in kvctls:
        if not os.access(path, os.X_OK):
            ap.error(f"--kvctl: {path} is not an executable")
    # With several, each line names its kvctl by number: "[1] kvctl put".
    tags = [f"[{n}] " if len(kvctls) > 1 else "" for n in range(1, len(kvctls) + 1)]

    where = Path(tempfile.mkdtemp(prefix="kvctl-bench-"))
    # Only the cluster in `where` may be found: no endpoints from the caller's environment.
    env = {k: v for k, v in os.environ.items()
           if k not in ("KVCTL_ENDPOINTS", "KVCTL_TOKEN", "PYTHONDONTWRITEBYTECODE")}
    cluster = BenchCluster(str(where / ".keyval"), 3, a.storage, "tcp")
    try:
        cluster.up()
        commands = {"python -c pass": [sys.executable, "-c", "pass"]}
        for tag, path in zip(tags, kvctls):
            commands.update({
                f"{tag}kvctl --version": [path, "--version"],
                f"{tag}kvctl put": [path, "put", "bench/key", "value"],
                f"{tag}kvctl get": [path, "get", "bench/key"],
            })
        for command in commands.values():  # bytecode caches written, page cache and cluster warm
            timed(command, where, env)
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(a.runs):
            for name, command in commands.items():
                times[name].append(timed(command, where, env))
    finally:
        cluster.down()
        shutil.rmtree(where, ignore_errors=True)

    print(f"# {a.runs} runs each, in turns; 3 nodes, {a.storage} storage, tcp; load average {_loadavg()}")
    for tag, path in zip(tags, kvctls):
        print(f"# {tag or 'kvctl: '}{path}")
    width = max(map(len, times)) + 2
    print(f"{'command':<{width}}{'min ms':>9}{'median ms':>11}{'max ms':>9}  target")
    for name, runs in times.items():
        ms = [t * 1000 for t in runs]
        target = TARGETS_MS.get(name.rpartition("] ")[2])
        verdict = "" if target is None else f"< {target:g} ms: {'met' if statistics.median(ms) < target else 'NOT met'} (median)"
        print(f"{name:<{width}}{min(ms):>9.1f}{statistics.median(ms):>11.1f}{max(ms):>9.1f}  {verdict}")
    return 0


def _loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
