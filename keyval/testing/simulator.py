"""Deterministic simulation of a KeyVal Raft cluster, in the FoundationDB / Jepsen manner.

N RaftCores, each over its own MemoryStorage, wired by a simulated network that loses,
duplicates, delays and reorders messages and is partitioned now and then (one-way too);
nodes crash (anywhere in the Ready pipeline: after persisting, before sending...) and restart
from their storage; clients run a contentious key-value workload; an operator adds, promotes
and removes members and transfers leadership. One ``random.Random(seed)`` drives all of it,
so a seed is a complete, replayable description of a run.

Time is an integer of milliseconds; a Raft tick is about 10 ms, with a per-node skew. The
run is a heap of timed events; a *step* is one instant at which something happens:
the due events fire (ticks, deliveries, client and operator actions, faults), every core
with work has its Ready handled following the contract, and then every safety check runs
(see ``sim_checks``). The runtime is modelled both ways the contract allows, per seed: an
fsync may take a few ms (the core keeps stepping meanwhile, and gets no new Ready until the
last one advances), a leader's messages may leave before its own fsync when the Ready says
``send_before_persist``, and a commit-only hard state may be written without fsync. After ``--steps`` ms the faults stop, everything heals, and the cluster
must elect a leader and commit a final proposal within a bound (liveness); then the recorded
history must be linearizable.

    python -m keyval.testing.simulator --seeds 0-99
    python -m keyval.testing.simulator --seed 1234 --verbose     # replay one seed, full trace
"""
from __future__ import annotations

import argparse
import heapq
import random
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field

from keyval.raft import (
    InvariantViolation,
    Membership,
    MemoryStorage,
    RaftConfig,
    RaftCore,
    RaftError,
    Role,
    bootstrap_state,
)
from keyval.testing.linearizability import CheckResult, HistoryRecorder, check_history

from .sim_breaks import BREAKS
from .sim_checks import SafetyChecker, SafetyViolation
from .sim_faults import FAULT_KINDS, Knobs, Nemesis, draw_knobs
from .sim_intruder import Intruder
from .sim_net import NetFaults, Network
from .sim_node import SimNode, encode_command
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
        self.now = 0
        self._events: list = []
        self._seq = 0
        self.net = Network(self.rng, NetFaults(k.drop, k.duplicate, k.delay, k.reorder))
        self.checker = SafetyChecker(self)
        self.history = HistoryRecorder()
        self.nodes: dict[str, SimNode] = {}
        self.dirty: set[str] = set()
        self.healed = False
        self.committed_config: tuple[int, Membership] = (0, Membership())
        self._ever_member: set[str] = set()
        self._liveness_done = False
        self._leader_since: int | None = None
        self._liveness_proposed = -(10**9)

        ids = [f"n{i}" for i in range(1, k.voters + 1)]
        initial = Membership(frozenset(ids), frozenset(), tuple((n, f"sim://{n}") for n in ids))
        hard_state, entries = bootstrap_state(initial)
        for nid in ids:
            storage = MemoryStorage()
            storage.append(entries)
            storage.set_hard_state(hard_state)
            self._start_node(SimNode(nid, storage))
        self.nemesis = Nemesis(self, self.rng, k)
        self.clients = Clients(self, self.rng, k.clients, k.keys)
        self.operator = Operator(self, self.rng, next_id=k.voters + 1, gap=k.operator_gap or 1)
        self.intruder = Intruder(self, opts.seed)

    # -- events --------------------------------------------------------------------------
    def schedule(self, at: int, fn, *args) -> None:
        self._seq += 1
        heapq.heappush(self._events, (at, self._seq, fn, args))

    def _run_until(self, end: int, stop=None) -> None:
        events = self._events
        while events and events[0][0] <= end:
            now = self.now = events[0][0]
            if self._leader_since is not None:
                self.stats["leader-ms"] += now - self._leader_since
            while events and events[0][0] == now:
                _, _, fn, args = heapq.heappop(events)
                fn(*args)
            self._process_readies()
            self._leader_since = now if self.checker.after_step() else None
            self.stats["steps"] += 1
            if stop is not None and stop():
                return
        self.now = max(self.now, end)

    # -- nodes -----------------------------------------------------------------------------
    def _start_node(self, node: SimNode) -> None:
        k = self.knobs
        config = RaftConfig(id=node.id, election_tick=ELECTION_TICK, applied=0, **k.raft)
        core = RaftCore(config, node.storage, random.Random(self.rng.getrandbits(64)))
        for name in self.opts.breaks:
            BREAKS[name](core, self.stats)
        self.nodes[node.id] = node
        node.start(core)
        node.tick_interval = TICK_MS + (self.rng.choice((-1, 0, 0, 1)) if k.skew else 0)
        self.schedule(self.now + self.rng.randint(1, node.tick_interval), self._tick, node, node.incarnation)
        self.dirty.add(node.id)
        self.checker.on_restart(node)

    def add_fresh_node(self, nid: str) -> None:
        """A new learner: empty storage, no bootstrap — it learns everything from the leader."""
        self._start_node(SimNode(nid, MemoryStorage()))
        self.trace.add(self.now, nid, "started empty (new learner)")

    def live_nodes(self) -> list[SimNode]:
        return [n for _, n in sorted(self.nodes.items()) if n.alive]

    def current_leader(self) -> SimNode | None:
        best = None
        for node in self.live_nodes():
            if node.core.role is Role.LEADER and (best is None or node.core.term > best.core.term):
                best = node
        return best

    def _tick(self, node: SimNode, incarnation: int) -> None:
        if node.core is None or node.incarnation != incarnation:
            return
        node.core.tick()
        self.dirty.add(node.id)
        self.schedule(self.now + node.tick_interval, self._tick, node, incarnation)

    def _deliver(self, msg) -> None:
        node = self.nodes.get(msg.to)
        if node is None or node.core is None:
            self.trace.add(self.now, msg.to, f"lost (down) {fmt_msg(msg)}")
        elif self.net.is_cut(msg.frm, msg.to):
            self.trace.add(self.now, msg.to, f"lost (partition) {fmt_msg(msg)}")
        else:
            self.trace.add(self.now, msg.to, f"recv {fmt_msg(msg)}")
            node.core.step(msg)
            self.dirty.add(node.id)

    def _send(self, msg) -> None:
        self.checker.on_send(msg)
        self.intruder.on_send(msg)
        times = self.net.send(msg.frm, msg.to, self.now)
        if not times:
            self.trace.add(self.now, msg.frm, f"dropped {fmt_msg(msg)}")
        for at in times:
            self.schedule(at, self._deliver, msg)

    def crash(self, node: SimNode, where: str) -> None:
        node.crash()
        self.stats["crashes"] += 1
        self.trace.add(self.now, node.id, f"CRASH ({where})")
        self.clients.on_crash(node)
        if not node.stopped:
            self.schedule(self.now + self.rng.randint(10, 400), self._restart, node)

    def _restart(self, node: SimNode) -> None:
        if node.alive or node.stopped:
            return
        self._start_node(node)
        snap = node.storage.snapshot.meta
        self.trace.add(
            self.now, node.id,
            f"RESTART #{node.incarnation} term={node.core.term} vote={node.core.vote or '-'} "
            f"snapshot={snap.index} log={node.storage.first_index()}..{node.storage.last_index()} "
            f"commit={node.storage.hard_state.commit}",
        )

    def _stop(self, node: SimNode) -> None:
        if node.stopped:
            return
        node.stopped = True
        if node.alive:
            node.crash()
            self.clients.on_crash(node)
        self.trace.add(self.now, node.id, "STOPPED (removed from the cluster)")

    # -- the Ready contract ------------------------------------------------------------------
    def _process_readies(self) -> None:
        rounds = 0
        while self.dirty:
            batch = sorted(self.dirty)
            self.dirty.clear()
            for nid in batch:
                node = self.nodes[nid]
                if node.core is not None and node.in_flight is None and node.core.has_ready():
                    self._handle_ready(node)
                    self.dirty.add(nid)  # more may be ready (e.g. committed entries cut by size)
            rounds += 1
            if rounds > 10_000:
                raise SafetyViolation(f"Ready loop does not quiesce: {sorted(self.dirty)}")

    def _handle_ready(self, node: SimNode) -> None:
        core, now = node.core, self.now
        rd = core.ready()
        crash = self.nemesis.fault_for_ready(node, rd)
        if rd.soft_state is not None:
            role, leader, term = rd.soft_state
            self.trace.add(now, node.id, f"{role.value} term={term} leader={leader or '-'}")
            if role is Role.LEADER:
                self.stats["elections"] += 1
        # A leader's messages may go out before its own fsync (Ready.send_before_persist), as
        # the runtime does; a crash "before persisting" then loses entries followers hold.
        early = rd.send_before_persist and bool(rd.messages) and self.knobs.early_send
        if early:
            self._send_all(rd.messages)
        leading = core.term if core.role is Role.LEADER else None
        if self.knobs.fsync_ms and self._needs_sync(node, rd):
            # The fsync takes time: meanwhile the core keeps receiving messages and ticks (and
            # a crash loses the write), but it hands out no new Ready until this one advances.
            node.in_flight = rd
            done = self.now + self.rng.randint(1, self.knobs.fsync_ms)
            self.schedule(done, self._fsynced, node, node.incarnation, rd, crash, early, leading)
            return
        self._finish_ready(node, rd, crash, early, leading)

    def _needs_sync(self, node: SimNode, rd) -> bool:
        if rd.entries or rd.snapshot is not None:
            return True
        hs, prev = rd.hard_state, node.storage.hard_state
        return hs is not None and (not self.knobs.lazy_commit or (hs.term, hs.vote) != (prev.term, prev.vote))

    def _fsynced(self, node: SimNode, incarnation: int, rd, crash, early, leading) -> None:
        if node.incarnation != incarnation or node.in_flight is not rd:
            return  # the node crashed during the fsync: the write is lost
        node.in_flight = None
        self.dirty.add(node.id)
        self._finish_ready(node, rd, crash, early, leading)

    def _finish_ready(self, node: SimNode, rd, crash, early: bool, leading: int | None) -> None:
        """Steps 1 (persist) to 4 (advance) of the Ready contract; sending is step 2 unless
        the messages went out early."""
        core, storage, now = node.core, node.storage, self.now
        if self.healed:
            crash = None  # decided before the heal, due after it (the Ready waited for its fsync)
        if crash == "before-persist":
            return self.crash(node, "before persisting its Ready" + (" (sent early)" if early else ""))
        # 1. persist: snapshot, entries, hard state
        if rd.snapshot is not None:
            storage.apply_snapshot(rd.snapshot)
            self.trace.add(now, node.id, f"persist snapshot @{rd.snapshot.meta.index}/t{rd.snapshot.meta.term}")
        if rd.entries:
            self.checker.before_append(node, rd.entries, leading)
            storage.append(rd.entries)
            self.checker.on_persisted_entries(node, rd.entries)
            self.trace.add(now, node.id, f"persist {fmt_entries(rd.entries)}")
        self._persist_hard_state(node, rd)
        self.checker.after_persist(node)
        if crash == "after-persist":
            return self.crash(node, "after persisting" + ("" if early else ", before sending"))
        if crash == "isolate":
            self.nemesis.isolate(node)  # its messages go out into a partition
        # 2. send
        if not early:
            self._send_all(rd.messages)
        if crash == "after-send":
            return self.crash(node, "after sending, before applying")
        # 3. apply
        if rd.snapshot is not None:
            node.apply_snapshot(rd.snapshot)
            self.checker.on_apply_snapshot(node, rd.snapshot)
            self.clients.on_snapshot(node, rd.snapshot.meta.index)
            self._config_applied(rd.snapshot.meta.index, rd.snapshot.meta.membership)
            self.stats["snapshots-installed"] += 1
            self.trace.add(now, node.id, f"installed snapshot @{rd.snapshot.meta.index} kv={node.kv_digest()}")
        if rd.committed_entries:
            for entry in rd.committed_entries:
                node.apply_entry(entry)
                self.checker.on_apply(node, entry)
                self.clients.on_apply(node, entry)
                if entry.type.name == "CONFIG":
                    self._config_applied(entry.index, node.membership)
            self.trace.add(now, node.id, f"apply {fmt_entries(rd.committed_entries)}")
        for rs in rd.read_states:
            self.clients.on_read_state(node, rs)
        for ctx in rd.dropped_reads:
            self.clients.on_read_dropped(node, ctx)
        self.clients.serve_reads(node)
        if crash == "after-apply":
            return self.crash(node, "after applying, before advance")
        core.advance(rd)
        # 4. snapshots: when asked, and now and then unasked
        if rd.snapshot_request or self.rng.random() < 0.005:
            self._snapshot(node, rd.snapshot_request)

    def _persist_hard_state(self, node: SimNode, rd) -> None:
        """Term and vote are synced before anything depends on them; a new commit index alone
        may be written lazily (no fsync), as the runtime does: then a crash can lose it, until
        the next fsync (of entries, a snapshot, a term or a vote) carries it to disk."""
        hs, storage = rd.hard_state, node.storage
        synced = bool(rd.entries) or rd.snapshot is not None
        if hs is not None:
            prev = storage.hard_state
            if self.knobs.lazy_commit and not synced and (hs.term, hs.vote) == (prev.term, prev.vote):
                node.unsynced_hard_state = hs
                return
        elif synced and node.unsynced_hard_state is not None:
            hs = node.unsynced_hard_state
        if hs is not None:
            self.checker.on_hard_state(node, hs)
            storage.set_hard_state(hs)
            node.unsynced_hard_state = None

    def _send_all(self, messages) -> None:
        # Stable-sorted by destination: only per-peer order is meaningful, and this keeps the
        # run independent of the order in which the core happens to produce them.
        for msg in sorted(messages, key=lambda msg: msg.to):
            self._send(msg)

    def _snapshot(self, node: SimNode, requested: int) -> None:
        storage = node.storage
        if node.applied <= storage.snapshot.meta.index:
            return
        storage.create_snapshot(node.applied, node.membership, node.snapshot_data())
        # Keep a tail of the log sometimes, none other times, so lagging peers need snapshots.
        keep = self.rng.choice((0, 0, 1, 3, 10))
        storage.compact(node.applied - keep)
        self.stats["snapshots-taken"] += 1
        why = f"requested at {requested}" if requested else "unrequested"
        self.trace.add(
            self.now, node.id,
            f"snapshot @{node.applied} ({why}), log now {storage.first_index()}..{storage.last_index()}",
        )

    def _config_applied(self, index: int, membership: Membership) -> None:
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
        value = f"final-{self.opts.seed}"
        if leader is not None:
            members = [self.nodes.get(n) for n in sorted(leader.core.membership.members)]
            if all(n is not None and n.alive and n.kv.get(LIVENESS_KEY) == value for n in members):
                self._liveness_done = True
                self.trace.add(self.now, "sim", f"LIVE: final proposal applied on {sorted(leader.core.membership.members)}")
                return
            if leader.kv.get(LIVENESS_KEY) != value and self.now - self._liveness_proposed > 200:
                try:
                    leader.core.propose(encode_command("put", LIVENESS_KEY, value, -1, 0))
                    self._liveness_proposed = self.now
                    self.dirty.add(leader.id)
                except RaftError:
                    pass
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


def run_seed(seed: int, **options) -> SimResult:
    return Simulation(SimOptions(seed=seed, **options)).run()


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
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.seed is not None:
        seeds: range | list[int] = [args.seed]
    else:
        seeds = _seed_range(args.seeds or "1")
    faults = frozenset(k for k in FAULT_KINDS if not args.no_faults and not getattr(args, f"no_{k}"))
    base = dict(
        steps=args.steps, nodes=args.nodes, faults=faults, breaks=tuple(args.breaks),
        settle_ms=args.settle, trace_limit=args.trace_lines, verbose=args.verbose,
    )
    started = time.perf_counter()
    failures: list[SimResult] = []
    totals: Counter = Counter()
    runs = 0
    for seed in seeds:
        result = run_seed(seed, **base)
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
        f"{totals['crashes']} crashes, {totals['partitions']} partitions, "
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
