"""A Jepsen-style nemesis of real ``keyval serve`` processes.

    python -m keyval.testing.nemesis --seed 7 --duration 60 --transport udp
    python -m keyval.testing.nemesis --duration 1800              # the long form
    python -m keyval.testing.nemesis --check DIR/history.jsonl    # check a saved history again

Five nodes (``--nodes``) over the faulty transport around tcp or udp, concurrent clients doing
put, get, delete and compare-and-set, and a seeded nemesis: kill -9 (the leader or any node),
SIGSTOP/SIGCONT, partitions (majority/minority, bridge, leader isolated, leader deaf),
membership changes (remove and add, replace) and leadership transfers through kvctl,
snapshots and compaction, and (``--faults ...,disk``) a damaged log tail on a stopped node.
At the end it heals everything, lets the cluster settle, reads every key once more and checks:
the history is linearizable (``keyval.testing.linearizability``), every acknowledged write is
present, every replica holds the same data. It prints one summary line; a failure keeps the run's
directory (history, fault log, node logs and data) and prints the command that replays its seed.
The seed fixes the schedule of faults and of client choices; real processes' timing still varies,
so a replay catches the same bug again rather than repeating the same history.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from keyval.errors import KeyvalError
from keyval.testing.linearizability import CasRegisterModel, check_history

from .nemesis_checks import CheckFailed, elections, final_reads, ledger_present, replicas_identical, settle
from .nemesis_clients import Workload, elapsed_clock, load_history, save_history
from .nemesis_cluster import Cluster, NodeFailed
from .nemesis_faults import DEFAULT_FAULTS, FAULT_KINDS, Nemesis

CLIENTS = 16
#: quiet time on the healed cluster before the clients stop (the ops then see no faults)
QUIET = 3.0
MAX_STATES = 2_000_000


@dataclass(frozen=True)
class RunOptions:
    seed: int
    duration: float
    transport: str
    nodes: int
    faults: tuple[str, ...]
    out: Path | None = None
    clients: int = CLIENTS

    def replay_command(self) -> str:
        faults = "" if self.faults == DEFAULT_FAULTS else f" --faults {','.join(self.faults)}"
        return (f"python -m keyval.testing.nemesis --seed {self.seed} --duration {self.duration:g} "
                f"--transport {self.transport} --nodes {self.nodes}{faults}")


@dataclass
class Outcome:
    ok: bool
    summary: str
    out: Path


async def _run(options: RunOptions, out: Path) -> tuple[list[str], list[str]]:
    """The run itself; (findings that fail it, facts for the summary)."""
    # SIGTERM (a CI timeout, kill) ends the run as Ctrl-C does: the nodes are stopped, not leaked.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)
    clock = elapsed_clock()
    cluster = Cluster(out, options.transport, options.nodes)
    nemesis = Nemesis(cluster, options.seed, options.faults, clock, out / "faults.log", options.nodes)
    workload = Workload(options.seed, options.clients, cluster.endpoints, clock)
    failures: list[str] = []
    facts: list[str] = []
    try:
        await _exercise(options, cluster, nemesis, workload, failures, facts)
    except (CheckFailed, NodeFailed, KeyvalError) as exc:
        failures.append(str(exc).splitlines()[0])
        nemesis.note(f"failed: {exc}")
    except Exception as exc:  # noqa: BLE001 - a bug of the nemesis itself: keep what the run saw
        failures.append(f"nemesis error: {exc!r}")
        nemesis.note(f"nemesis error:\n{traceback.format_exc()}")
    finally:
        await asyncio.gather(workload.stop(), return_exceptions=True)
        cluster.shutdown()
        nemesis.close()
    failures[:0] = nemesis.trouble
    ops = workload.history.operations()
    save_history(ops, out / "history.jsonl")
    result = check_history(ops, model=CasRegisterModel(), max_states=MAX_STATES)
    if result.ok is False:
        failures.insert(0, result.explanation)
    elif result.ok is None:
        facts.append(f"checker gave up on {result.explanation}")
    counts = workload.counts
    kinds = " ".join(f"{k}={nemesis.counts.get(k, 0)}" for k in options.faults)
    terms, top = elections(node.log_tail(10**9) for node in cluster.nodes.values())
    verdict = "linearizable" if result.ok else "NOT linearizable" if result.ok is False else "unknown (gave up)"
    facts[:0] = [f"ops {sum(counts.values())} (ok {counts['ok']}, fail {counts['fail']}, unknown {counts['unknown']})",
                 f"faults {kinds}", f"elections {terms} (terms up to {top})",
                 f"{verdict}: {result.checked_ops} ops over {result.keys} keys"]
    if workload.errors:
        facts.append("errors " + " ".join(f"{k}={v}" for k, v in sorted(workload.errors.items())))
    return failures, facts


async def _exercise(options: RunOptions, cluster: Cluster, nemesis: Nemesis, workload: Workload,
                    failures: list[str], facts: list[str]) -> None:
    """Start, fault, heal, settle, and the checks that need the running cluster."""
    nemesis.note(f"start: {options.replay_command()}")
    cluster.bootstrap()
    for node in cluster.live():
        await cluster.wait_started(node)
    await settle(cluster, timeout=30)
    workload.start()
    await nemesis.run(until=options.duration)
    await nemesis.heal()
    await asyncio.sleep(QUIET)
    await workload.stop()
    nemesis.note("clients stopped")
    try:
        settled = await settle(cluster)
    except CheckFailed as exc:
        # Not live; what the cluster acknowledged must still be there and consistent.
        failures.append(str(exc))
        nemesis.note(f"failed: {exc}")
        settled = None
    await final_reads(cluster, workload)
    checks = [ledger_present(cluster, workload)]
    if settled is not None:
        checks.append(replicas_identical(cluster, *settled))
    for check in checks:
        try:
            facts.append(await check)
        except CheckFailed as exc:
            failures.append(str(exc))
            nemesis.note(f"failed: {exc}")


def run(options: RunOptions) -> Outcome:
    out = options.out or Path(tempfile.mkdtemp(prefix=f"keyval-nemesis-{options.seed}-"))
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    failures, facts = asyncio.run(_run(options, out))
    wall = time.monotonic() - started
    head = f"nemesis seed {options.seed} {options.transport} {options.nodes} nodes {options.duration:g}s"
    summary = f"{head}: {'; '.join(facts)}; wall {wall:.0f}s"
    (out / "summary.json").write_text(json.dumps(
        {"ok": not failures, "summary": summary, "failures": failures, "replay": options.replay_command()},
        indent=2) + "\n")
    if failures:
        summary += "\nFAILED: " + "\nFAILED: ".join(failures)
        summary += f"\nkept in {out} (history.jsonl, faults.log, n*/keyval.log, n*/data)"
        summary += f"\nreplay: {options.replay_command()}"
    else:
        # A pass keeps its logs and fault log; its data and history (a long run's is large) go.
        for data in out.glob("n*/data"):
            shutil.rmtree(data, ignore_errors=True)
        (out / "history.jsonl").unlink(missing_ok=True)
        summary += f" - PASS ({out})"
    return Outcome(not failures, summary, out)


def _faults(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(f"unknown fault kind(s) {', '.join(unknown) or '(none given)'}; "
                                         f"choose from {', '.join(FAULT_KINDS)}")
    return kinds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m keyval.testing.nemesis",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=None, help="the schedule's seed (default: random)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of faults (default 60)")
    parser.add_argument("--transport", choices=("tcp", "udp"), default="tcp")
    parser.add_argument("--nodes", type=int, default=5, help="voters (default 5; at least 3)")
    parser.add_argument("--faults", type=_faults, default=DEFAULT_FAULTS,
                        help=f"comma-separated kinds from {','.join(FAULT_KINDS)} "
                             f"(default {','.join(DEFAULT_FAULTS)})")
    parser.add_argument("--clients", type=int, default=CLIENTS, help=f"concurrent clients (default {CLIENTS})")
    parser.add_argument("--out", type=Path, help="the run's directory (default: a new one under the temp dir)")
    parser.add_argument("--check", type=Path, metavar="HISTORY", help="only check a saved history.jsonl")
    args = parser.parse_args(argv)
    if args.check is not None:
        result = check_history(load_history(args.check), model=CasRegisterModel(), max_states=MAX_STATES)
        print(result.explanation)
        return 0 if result.ok else 1
    if args.nodes < 3 or args.duration <= 0 or args.clients < 1:
        parser.error("--nodes must be at least 3, --duration and --clients positive")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1_000_000)
    outcome = run(RunOptions(seed, args.duration, args.transport, args.nodes, args.faults, args.out, args.clients))
    print(outcome.summary)
    return 0 if outcome.ok else 1


if __name__ == "__main__":
    sys.exit(main())
