"""Deterministic simulation of a KeyVal cluster, in the FoundationDB / Jepsen manner.

Every simulated server runs the production node runtime — ``keyval.runtime.node.Node`` with
its Ready driver, request layer, key-value state machine and snapshots — with only its I/O
swapped: a simulated disk (``sim_disk``: writes durable exactly when the storage contract
says, lost in a crash otherwise), a simulated network (``sim_net``: it loses, duplicates,
delays and reorders messages, and is partitioned now and then, one-way too), a simulated
fsync executor, and simulated time (``sim_loop``: an asyncio loop whose clock jumps from one
timer to the next). Nodes crash (at any moment, or at a point of the Ready pipeline armed as
a fault of the disk, network or state machine) and restart from their disks; clients run a
contentious key-value workload through the same request layer a real client meets, retries
included; an operator adds, promotes and removes members, transfers leadership and takes
snapshots. One ``random.Random(seed)`` drives all of it, so a seed is a complete, replayable
description of a run.

After each instant of simulated time every safety check runs (``sim_checks``). After
``--steps`` ms the faults stop, everything heals, and the cluster must elect a leader and
apply a final write on every member within a bound (liveness); then the recorded history
must be linearizable.

    python -m keyval.testing.simulator --seeds 0-99
    python -m keyval.testing.simulator --seed 1234 --verbose     # replay one seed, full trace
"""
from __future__ import annotations

import argparse
import logging
import multiprocessing
import random
import sys
import time
import traceback
from collections import Counter, deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from typing import Iterable, Iterator

from keyval import hookimpl
from keyval.plugin_api.backends import StorageBackend, TransportBackend
from keyval.kv import encode_put
from keyval.plugin_api.loading import build_plugin_manager
from keyval.raft import InvariantViolation, Membership, Role
from keyval.runtime.timing import Timing
from keyval.testing.linearizability import CheckResult, HistoryRecorder, check_history

from .sim_breaks import BREAKS
from .sim_checks import SafetyChecker, SafetyViolation
from .sim_faults import FAULT_KINDS, Knobs, Nemesis, draw_knobs
from .sim_intruder import Intruder
from .sim_loop import SimLoop
from .sim_net import NetFaults, Network
from .sim_node import SimNode
from .sim_trace import Trace, fmt_entries, fmt_msg
from .sim_workload import Clients, Operator

TICK_MS = 10
ELECTION_TICK = 10
LIVENESS_KEY = "__liveness__"


@dataclass(frozen=True)
class SimOptions:
    seed: int = 0
    steps: int = 10_000  # ms of faulty run (then heal, settle, check)
    nodes: int | None = None  # initial voters; None: 3 or 5, drawn from the seed
    faults: frozenset[str] = frozenset(FAULT_KINDS)
    breaks: tuple[str, ...] = ()
    settle_ms: int = 3000  # liveness bound after healing (300 ticks)
    trace_limit: int = 250
    verbose: bool = False
    max_states: int = 200_000

    def replay_command(self) -> str:
        args = [f"python -m keyval.testing.simulator --seed {self.seed}"]
        if self.steps != SimOptions.steps:
            args.append(f"--steps {self.steps}")
        if self.nodes is not None:
            args.append(f"--nodes {self.nodes}")
        args += [f"--no-{kind}" for kind in FAULT_KINDS if kind not in self.faults]
        args += [f"--break {name}" for name in self.breaks]
        if self.settle_ms != SimOptions.settle_ms:
            args.append(f"--settle {self.settle_ms}")
        return " ".join(args) + " --verbose"


@dataclass
class SimResult:
    seed: int
    ok: bool
    kind: str | None = None  # safety | core-invariant | liveness | linearizability | exception
    failure: str | None = None
    report: str = ""
    lin: CheckResult | None = None
    stats: Counter = field(default_factory=Counter)
    digest: str = ""
    wall: float = 0.0


class _SimBackends:
    """The simulated disk and network, registered as storage and transport plugins the way
    third-party backends are, so each node opens them through its real lifecycle."""

    def __init__(self, sim: "Simulation") -> None:
        self.sim = sim

    @hookimpl
    def keyval_storage_backends(self) -> list[StorageBackend]:
        return [StorageBackend("sim", lambda data_dir, options: self.sim.nodes[options["node"]].open_storage())]

    @hookimpl
    def keyval_transport_backends(self) -> list[TransportBackend]:
        return [TransportBackend("sim", lambda options: self.sim.nodes[options["node"]].open_transport())]


class Simulation:
    def __init__(self, opts: SimOptions) -> None:
        unknown = [b for b in opts.breaks if b not in BREAKS]
        if unknown:
            raise ValueError(f"unknown --break {unknown}; known: {sorted(BREAKS)}")
        self.opts = opts
        self.rng = random.Random(opts.seed)
        self.knobs: Knobs = draw_knobs(self.rng, opts.faults, opts.nodes)
        k = self.knobs
        self.trace = Trace(opts.trace_limit, echo=opts.verbose)
        self.stats: Counter = Counter()
        self.loop = SimLoop()
        self.loop.on_quiet = self._after_step
        self.plugins = build_plugin_manager([_SimBackends(self)], entry_points=False)
        self.net = Network(self.rng, NetFaults(k.drop, k.duplicate, k.delay, k.reorder))
        self.checker = SafetyChecker(self)
        self.violation: SafetyViolation | None = None
        self.history = HistoryRecorder()
        self.nodes: dict[str, SimNode] = {}
        self.healed = False
        self.committed_config: tuple[int, Membership] = (0, Membership())
        self._ever_member: set[str] = set()
        self._liveness_done = False
        self._leader_since: int | None = None
        self._liveness_proposed = -(10**9)
        self._roles: dict[str, tuple] = {}

        ids = [f"n{i}" for i in range(1, k.voters + 1)]
        bootstrap = {nid: f"sim://{nid}" for nid in ids}
        for nid in ids:
            self._start_node(SimNode(self, nid, bootstrap))
        self.nemesis = Nemesis(self, self.rng, k)
        self.clients = Clients(self, self.rng, k.clients, k.keys)
        self.operator = Operator(self, self.rng, next_id=k.voters + 1, gap=k.operator_gap or 1)
        self.intruder = Intruder(self, opts.seed)

    # -- time and events ---------------------------------------------------------------------
    @property
    def now(self) -> int:
        """Simulated time in ms."""
        return round(self.loop.time() * 1000)

    def schedule(self, at: int, fn, *args) -> None:
        self.loop.call_at(at / 1000, fn, *args)

    def _run_until(self, end: int, stop=None) -> None:
        self.loop.run_until(end / 1000, stop)
        if self.violation is not None:
            raise self.violation

    def _after_step(self) -> None:
        """Everything due at this instant has happened: check."""
        if self.violation is not None:
            raise self.violation
        now = self.now
        if self._leader_since is not None:
            self.stats["leader-ms"] += now - self._leader_since
        for node in self.live_nodes():
            fatal = node.node.fatal
            if fatal is not None:
                raise fatal  # the runtime stopped on an error (a broken invariant, a bug)
            self._watch_role(node)
        self._leader_since = now if self.checker.after_step() else None
        self.stats["steps"] += 1

    def _watch_role(self, node: SimNode) -> None:
        core = node.core
        seen = (core.role, core.leader, core.term)
        if self._roles.get(node.id) != seen:
            self._roles[node.id] = seen
            self.trace.add(self.now, node.id, f"{core.role.value} term={core.term} leader={core.leader or '-'}")
            if core.role is Role.LEADER:
                self.stats["elections"] += 1

    # -- nodes -----------------------------------------------------------------------------
    def _timing(self, node: SimNode) -> Timing:
        k = self.knobs
        raft = dict(k.raft)
        return Timing(
            tick_interval=node.tick_interval / 1000,
            election_ticks=ELECTION_TICK,
            heartbeat_ticks=raft.pop("heartbeat_tick"),
            snapshot_threshold=raft.pop("snapshot_threshold"),
            snapshot_catchup_entries=k.catchup_entries,
            follower_sync_inline=k.follower_sync_inline,
            raft=tuple(sorted(raft.items())),
        )

    def _start_node(self, node: SimNode) -> None:
        k = self.knobs
        self.nodes[node.id] = node
        node.tick_interval = TICK_MS + (self.rng.choice((-1, 0, 0, 1)) if k.skew else 0)
        rng = random.Random(self.rng.getrandbits(64))
        node.starting = True  # one incarnation at a time: no second start before this one runs
        task = self.loop.create_task(node.start(self._timing(node), rng, k.fsync_ms))
        task.add_done_callback(lambda t, node=node: self._started(node, t))

    def _started(self, node: SimNode, task) -> None:
        node.starting = False
        exc = task.exception()
        if exc is not None:
            raise exc  # a node that cannot start from its own disk is a failure
        for name in self.opts.breaks:
            BREAKS[name](node.node, self.stats)
        self.checker.on_restart(node)

    def add_fresh_node(self, nid: str) -> None:
        """A new learner: empty disk, no bootstrap — it learns everything from the leader."""
        self._start_node(SimNode(self, nid, {}))
        self.trace.add(self.now, nid, "started empty (new learner)")

    def live_nodes(self) -> list[SimNode]:
        return [n for _, n in sorted(self.nodes.items()) if n.alive]

    def current_leader(self) -> SimNode | None:
        best = None
        for node in self.live_nodes():
            if node.core.role is Role.LEADER and (best is None or node.core.term > best.core.term):
                best = node
        return best

    # -- the network ---------------------------------------------------------------------------
    def send(self, msg) -> None:
        self.checker.on_send(msg)
        self.intruder.on_send(msg)
        times = self.net.send(msg.frm, msg.to, self.now)
        if not times:
            self.trace.add(self.now, msg.frm, f"dropped {fmt_msg(msg)}")
        for at in times:
            self.schedule(at, self._deliver, msg)

    def _deliver(self, msg) -> None:
        node = self.nodes.get(msg.to)
        if node is None or not node.alive:
            self.trace.add(self.now, msg.to, f"lost (down) {fmt_msg(msg)}")
        elif self.net.is_cut(msg.frm, msg.to):
            self.trace.add(self.now, msg.to, f"lost (partition) {fmt_msg(msg)}")
        else:
            self.trace.add(self.now, msg.to, f"recv {fmt_msg(msg)}")
            node.deliver(msg)

    def trace_entries(self, node: SimNode, entries) -> None:
        self.trace.add(self.now, node.id, f"persist {fmt_entries(entries)}")

    # -- crashes and stops -----------------------------------------------------------------------
    def crash(self, node: SimNode, where: str) -> None:
        if not node.alive:
            return
        # A damaged node votes only for a candidate holding what it lost. When the others
        # cannot make a majority without it — two voters, or voters that disagree on the
        # configuration while a change is in flight — no election may safely succeed until an
        # operator steps in (docs/operations.md, Disk damage). The simulator damages clusters
        # that can recover: three voters or more, one committed configuration that every live
        # node holds, one damaged node at a time.
        core = node.core
        configs = {n.core.membership for n in self.nodes.values() if n.alive and n.core is not None}
        damageable = (len(core.membership.voters) >= 3 and core.config_committed() and len(configs) == 1
                      and not self._damaged_other(node))
        node.crash()
        self.stats["crashes"] += 1
        self.trace.add(self.now, node.id, f"CRASH ({where})")
        if self.knobs.disk_loss and self.rng.random() < self.knobs.disk_loss and damageable:
            lost = node.disk.lose_last_batch()
            if lost is not None:
                self.stats["disk-losses"] += 1
                self.checker.on_disk_loss(node)
                self.trace.add(self.now, node.id, f"DISK LOSS: synced entries {lost[0]}..{lost[1]} gone "
                                                   f"(watermark {node.disk.watermark[0]}/t{node.disk.watermark[1]})")
        if not node.stopped:
            self.schedule(self.now + self.rng.randint(10, 400), self._restart, node)

    def _damaged_other(self, node: SimNode) -> bool:
        """Another node still misses synced entries it lost. Damage on a majority at once
        loses data for good whatever a protocol does (CTRL's bound too): one at a time."""
        return any(
            n is not node and n.disk.lost() for n in self.nodes.values()
        )

    def _restart(self, node: SimNode) -> None:
        if node.alive or node.stopped or node.starting:
            return
        self._start_node(node)
        durable = node.disk.durable
        hs = durable.hard_state
        self.trace.add(
            self.now, node.id,
            f"RESTART #{node.incarnation + 1} term={hs.term} vote={hs.vote or '-'} "
            f"snapshot={durable.snapshot_meta().index} log={durable.first_index()}..{durable.last_index()} "
            f"commit={hs.commit}",
        )

    def _stop(self, node: SimNode) -> None:
        if node.stopped:
            return
        node.stopped = True
        if node.alive:
            node.crash()
        self.trace.add(self.now, node.id, "STOPPED (removed from the cluster)")

    def _snapshot_event(self) -> None:
        """Now and then a node snapshots and compacts unasked (an operator's ``kvctl snapshot``)."""
        if self.healed:
            return
        self.schedule(self.now + self.rng.randint(100, 1500), self._snapshot_event)
        live = self.live_nodes()
        if not live:
            return
        node = self.rng.choice(live)
        full = self.rng.random() < 0.3
        if node.node.snapshots.busy() or not node.core.membership.members:
            return
        self.trace.add(self.now, node.id, f"snapshot asked ({'full compaction' if full else 'keeping a tail'})")
        task = node.node.snapshots.start(full)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def config_applied(self, index: int, membership: Membership) -> None:
        """Track the committed configuration; stop members once their removal is committed."""
        if index <= self.committed_config[0]:
            return
        self.committed_config = (index, membership)
        self._ever_member |= membership.members
        for nid in sorted(self._ever_member - membership.members):
            node = self.nodes.get(nid)
            if node is not None and not node.stopped:
                self.schedule(self.now + self.rng.randint(50, 300), self._stop, node)

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> SimResult:
        started = time.perf_counter()
        result = SimResult(seed=self.opts.seed, ok=False, stats=self.stats)
        # The runtime logs for operators; here its lines would only slow the run down
        # (``--verbose`` prints the simulator's own trace).
        logger = logging.getLogger("keyval")
        level, logger.level = logger.level, logging.CRITICAL + 1
        try:
            self._play()
            result.lin = lin = check_history(self.history.operations(), max_states=self.opts.max_states)
            self.stats["ops-checked"] += lin.checked_ops
            if lin.ok is False:
                result.kind, result.failure = "linearizability", lin.explanation
            else:
                result.ok = True
                if lin.ok is None:
                    self.stats["linearizability-gave-up"] += 1
        except SafetyViolation as exc:
            result.kind, result.failure = exc.kind, str(exc)
        except InvariantViolation:
            result.kind, result.failure = "core-invariant", traceback.format_exc()
        except Exception:
            result.kind, result.failure = "exception", traceback.format_exc()
        finally:
            logger.level = level
            self.loop.close()
        result.digest = self.trace.digest()
        result.wall = time.perf_counter() - started
        if not result.ok:
            result.report = self.failure_report(result)
        return result

    def _play(self) -> None:
        k = self.knobs
        self.clients.start()
        if k.operator_gap:
            self.operator.start()
        self.nemesis.start()
        if "intruder" in self.opts.faults:
            self.intruder.start()
        self.schedule(self.now + self.rng.randint(100, 1500), self._snapshot_event)
        self._run_until(self.opts.steps)
        self._heal()
        self._settle()
        self.checker.check_logs_pairwise()
        self.clients.finish()

    def _heal(self) -> None:
        self.healed = True
        self.operator.stopped = True
        self.clients.stop()
        self.nemesis.stop()
        self.intruder.stop()
        self.net.calm()
        self.trace.add(self.now, "sim", "HEAL: faults off, partitions healed, crashed nodes restart")
        for node in list(self.nodes.values()):
            if not node.alive and not node.stopped:
                self._restart(node)
        self._healed_at = self.now

    def _settle(self) -> None:
        self.schedule(self.now + 1, self._liveness_probe)
        self._run_until(self.now + self.opts.settle_ms, stop=lambda: self._liveness_done)
        if not self._liveness_done:
            leader = self.current_leader()
            state = "; ".join(
                f"{n.id}:{'down' if not n.alive else n.core.role.value}"
                f"{'' if not n.alive else f' t{n.core.term} c{n.core.log.committed} a{n.applied}'}"
                f" last {n.disk.durable.last_index()}"
                f"{f' recovering to {n.core.recovering_to}' if n.alive and n.core.recovering_to else ''}"
                for _, n in sorted(self.nodes.items()) if not n.stopped
            )
            raise SafetyViolation(
                f"Liveness: {self.opts.settle_ms} ms ({self.opts.settle_ms // TICK_MS} ticks) after healing, "
                f"the final proposal is not applied on every member (leader: "
                f"{leader.id if leader else 'none'}; {state})",
                kind="liveness",
            )
        self.stats["liveness-ms"] = self.now - self._healed_at

    def _liveness_probe(self) -> None:
        leader = self.current_leader()
        value = f"final-{self.opts.seed}".encode()
        if leader is not None:
            members = [self.nodes.get(n) for n in sorted(leader.core.membership.members)]
            if all(n is not None and n.alive and _value(n, LIVENESS_KEY) == value for n in members):
                self._liveness_done = True
                self.trace.add(self.now, "sim", f"LIVE: final proposal applied on {sorted(leader.core.membership.members)}")
                return
            if _value(leader, LIVENESS_KEY) != value and self.now - self._liveness_proposed > 200:
                try:
                    fut = leader.node.submit(encode_put(LIVENESS_KEY.encode(), value), 1.0)
                except Exception:  # not the leader after all, or not started yet: try again soon
                    pass
                else:
                    fut.add_done_callback(lambda f: f.cancelled() or f.exception())
                    self._liveness_proposed = self.now
        self.schedule(self.now + 10, self._liveness_probe)

    def failure_report(self, result: SimResult) -> str:
        opts = self.opts
        lines = [
            f"FAIL seed={opts.seed} kind={result.kind} at t={self.now} ms: {result.failure.rstrip()}",
            f"  switches: faults={','.join(k for k in FAULT_KINDS if k in opts.faults) or 'none'} "
            f"breaks={','.join(opts.breaks) or 'none'} steps={opts.steps}",
            f"  knobs: {self.knobs.describe()}",
            f"  last {len(self.trace.lines)} of {self.trace.count} trace events:",
            *(f"    {line}" for line in self.trace.tail()),
            f"  replay: {opts.replay_command()}",
        ]
        return "\n".join(lines)


def _value(node: SimNode, key: str) -> bytes | None:
    item = node.kv.get(key.encode())
    return item.value if item is not None else None


def run_seed(seed: int, **options) -> SimResult:
    return Simulation(SimOptions(seed=seed, **options)).run()


def run_seeds(seeds: Iterable[int], jobs: int = 1, **options) -> Iterator[SimResult]:
    """``run_seed`` for each seed, results in seed order. With ``jobs > 1`` the seeds run in
    that many worker processes: a seed's run depends on nothing but the seed (see
    ``test_same_trace_whatever_the_hash_seed``), so the results are the same either way. Only
    a few seeds run ahead of the consumer, which may stop early (at the first failure)."""
    if jobs <= 1:
        yield from (run_seed(seed, **options) for seed in seeds)
        return
    # spawn, not fork: the caller may have threads (pytest-timeout's, a sync thread's).
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"))
    try:
        todo = iter(seeds)
        ahead: deque[Future] = deque(pool.submit(run_seed, seed, **options) for seed in islice(todo, 2 * jobs))
        while ahead:
            result = ahead.popleft().result()
            for seed in islice(todo, 1):
                ahead.append(pool.submit(run_seed, seed, **options))
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# -- command line ----------------------------------------------------------------------------
def _seed_range(text: str) -> range:
    if "-" in text:
        lo, hi = text.split("-", 1)
        return range(int(lo), int(hi) + 1)
    return range(int(text))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m keyval.testing.simulator",
        description="Deterministic fault-injection simulation of a KeyVal Raft cluster.",
    )
    p.add_argument("--seed", type=int, help="run this one seed")
    p.add_argument("--seeds", default=None, help="N (seeds 0..N-1) or A-B (inclusive)")
    p.add_argument("--steps", type=int, default=SimOptions.steps, help="ms of faulty run (default %(default)s)")
    p.add_argument("--nodes", type=int, choices=(1, 3, 5), help="initial voters (default: 3 or 5 per seed)")
    p.add_argument("--settle", type=int, default=SimOptions.settle_ms, help="liveness bound in ms after healing")
    for kind in FAULT_KINDS:
        p.add_argument(f"--no-{kind}", action="store_true", help=f"disable {kind} faults")
    p.add_argument("--no-faults", action="store_true", help="disable every fault kind")
    p.add_argument("--break", dest="breaks", action="append", default=[], choices=sorted(BREAKS),
                   help="patch a deliberate bug into every core (to show it is caught)")
    p.add_argument("--verbose", action="store_true", help="print the whole trace as it happens")
    p.add_argument("--trace-lines", type=int, default=SimOptions.trace_limit, help="trace lines kept for reports")
    p.add_argument("--stop-on-failure", action="store_true", help="stop at the first failing seed")
    p.add_argument("--digest", action="store_true", help="print each seed's trace digest")
    p.add_argument("--jobs", type=int, default=1, help="seeds run at once, in worker processes (default 1; worth it only with real cores to spare)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.seed is not None:
        seeds: range | list[int] = [args.seed]
    else:
        seeds = _seed_range(args.seeds or "1")
    faults = frozenset(k for k in FAULT_KINDS if not args.no_faults and not getattr(args, f"no_{k.replace('-', '_')}"))
    base = dict(
        steps=args.steps, nodes=args.nodes, faults=faults, breaks=tuple(args.breaks),
        settle_ms=args.settle, trace_limit=args.trace_lines, verbose=args.verbose,
    )
    started = time.perf_counter()
    failures: list[SimResult] = []
    totals: Counter = Counter()
    runs = 0
    if args.jobs < 1:
        print("--jobs must be at least 1", file=sys.stderr)
        return 2
    for result in run_seeds(seeds, jobs=1 if args.verbose else args.jobs, **base):
        seed = result.seed
        runs += 1
        totals.update(result.stats)
        if args.digest or args.verbose:
            print(f"seed {seed}: {'ok' if result.ok else 'FAIL'} digest={result.digest} ({result.wall:.2f}s)")
        if result.lin is not None and result.lin.ok is None:
            print(f"seed {seed}: linearizability check gave up: {result.lin.explanation}")
        if not result.ok:
            failures.append(result)
            print(result.report, flush=True)
            if args.stop_on_failure:
                break
    wall = time.perf_counter() - started
    print(
        f"simulated {runs} seed(s): {len(failures)} failure(s), {wall:.1f}s wall, "
        f"{totals['ops-checked']} ops checked, {totals['steps']} steps, {totals['elections']} elections, "
        f"{totals['crashes']} crashes ({totals['disk-losses']} losing synced entries), {totals['partitions']} partitions, "
        f"{totals['snapshots-installed']} snapshots installed, "
        f"{sum(v for k, v in totals.items() if k.startswith('refused-'))} refusals, "
        f"{totals['intruder-forged']} forged and {totals['intruder-replayed']} replayed non-member messages, "
        f"{totals['linearizability-gave-up']} checks gave up"
    )
    if failures:
        print("failing seeds: " + " ".join(str(r.seed) for r in failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
