"""The nemesis's faults: one at a time, drawn from a seeded schedule, each undone before the next.

Every step draws the same numbers in the same order (``Step``) whatever happened before, so a
seed fixes the schedule: which kind, leader or some node, which variant, how long. What the
draws land on (which node leads now) is the real cluster's business. Every action is written
with its time to the run's fault log.
"""
from __future__ import annotations

import asyncio
import random
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .nemesis_cluster import Cluster, NodeFailed, NodeProcess
from .nemesis_disk import damage_last_segment

FAULT_KINDS = ("kill", "pause", "partition", "membership", "transfer", "snapshot", "disk")
#: how often each kind is drawn, relatively: partitions most (the faults a quorum system is
#: really about), operations least (each takes a while and changes little at once)
WEIGHTS = {"kill": 2, "pause": 2, "partition": 3, "membership": 1, "transfer": 1, "snapshot": 1, "disk": 1}
DEFAULT_FAULTS = FAULT_KINDS
GAP = (0.5, 3.0)  # seconds between faults
HOLD = (1.0, 6.0)  # seconds a kill, pause or partition lasts
#: a removed node shuts itself down; after this long it is stopped
RETIRE_GRACE = 15.0
PROMOTE_WAIT = 30.0


@dataclass(frozen=True)
class Step:
    gap: float
    kind: str
    leader: bool  # aim at the leader (else at ``pick``)
    pick: float  # which node, as a fraction of the sorted candidates
    variant: float  # which form of the fault
    hold: float

    @staticmethod
    def draw(rng: random.Random, kinds: tuple[str, ...]) -> "Step":
        return Step(gap=rng.uniform(*GAP), kind=rng.choices(kinds, [WEIGHTS[k] for k in kinds])[0],
                    leader=rng.random() < 0.4,
                    pick=rng.random(), variant=rng.random(), hold=rng.uniform(*HOLD))


def _pick(nodes: list, fraction: float):
    return nodes[min(int(fraction * len(nodes)), len(nodes) - 1)]


class Nemesis:
    def __init__(self, cluster: Cluster, seed: int, kinds: tuple[str, ...], clock: Callable[[], float],
                 log_path: Path, size: int) -> None:
        self.cluster = cluster
        self.rng = random.Random(f"{seed}/nemesis")
        self.kinds = kinds
        self.now = clock
        self.size = size
        self.counts: Counter[str] = Counter()
        self.trouble: list[str] = []  # nodes that would not start again, and the like
        self._log = open(log_path, "a", encoding="utf-8")

    def note(self, text: str) -> None:
        # The wall clock as the node logs print it, to find the same moment there.
        now = time.time()
        wall = time.strftime("%H:%M:%S", time.localtime(now)) + f",{int(now % 1 * 1000):03d}"
        self._log.write(f"{self.now():9.3f} {wall} {text}\n")
        self._log.flush()

    def close(self) -> None:
        self._log.close()

    async def run(self, until: float) -> None:
        while True:
            step = Step.draw(self.rng, self.kinds)
            if self.now() + step.gap >= until:
                return
            await asyncio.sleep(step.gap)
            try:
                await getattr(self, f"_{step.kind}")(step)
            except NodeFailed as exc:
                self.trouble.append(str(exc).splitlines()[0])
                self.note(f"trouble: {exc}")
            except Exception as exc:  # noqa: BLE001 - the nemesis's own bug: fail the run, not lose it
                self.trouble.append(f"nemesis error in a {step.kind} fault: {exc!r}")
                self.note(f"nemesis error in a {step.kind} fault:\n{traceback.format_exc()}")
                await self.heal()

    # -- targets -----------------------------------------------------------------------------
    async def _members(self) -> tuple[str | None, list[str], list[str]]:
        """(leader, voters, learners) as the leader sees them; nothing known: (None, [], [])."""
        leader, status = await self.cluster.leader()
        if status is None:
            return None, [], []
        return leader, status["voters"], status["learners"]

    async def _target(self, step: Step) -> tuple[NodeProcess | None, str]:
        """The leader if the step says so and there is one, else the picked running member;
        and how to name it in the log."""
        leader, voters, learners = await self._members()
        ids = set(voters) | set(learners)
        nodes = [n for n in self.cluster.live() if n.running and not n.paused and (not ids or n.id in ids)]
        if step.leader and leader is not None and leader in self.cluster.nodes:
            return self.cluster.nodes[leader], f"{leader} (leader)"
        node = _pick(nodes, step.pick) if nodes else None
        return node, "" if node is None else node.id + (" (leader)" if node.id == leader else "")

    # -- process faults ----------------------------------------------------------------------
    async def _kill(self, step: Step) -> None:
        node, name = await self._target(step)
        if node is None:
            return
        node.kill()
        self.counts["kill"] += 1
        self.note(f"kill -9 {name}; restart in {step.hold:.1f}s")
        await asyncio.sleep(step.hold)
        await self._restart(node)

    async def _restart(self, node: NodeProcess) -> None:
        if node.retired or node.running:
            return
        node.start()
        self.note(f"restart {node.id}")
        await self.cluster.wait_started(node)

    async def _pause(self, step: Step) -> None:
        node, name = await self._target(step)
        if node is None:
            return
        node.pause()
        self.counts["pause"] += 1
        self.note(f"SIGSTOP {name} for {step.hold:.1f}s")
        await asyncio.sleep(step.hold)
        node.resume()
        self.note(f"SIGCONT {node.id}")

    # -- the network -------------------------------------------------------------------------
    async def _partition(self, step: Step) -> None:
        leader, voters, learners = await self._members()
        ids = sorted(set(voters) | set(learners), key=lambda i: (len(i), i))
        if len(ids) < 3:
            return
        random.Random(step.pick).shuffle(ids)
        if step.leader and leader in ids:
            ids.remove(leader)
            ids.insert(0, leader)  # into the minority, or the bridge: the first group below
        if step.variant < 0.4:
            minority = ids[: (len(ids) - 1) // 2]
            groups, what = [minority, ids[len(minority):]], "majority/minority"
            pairs = [[a, b] for a in groups[0] for b in groups[1]]
        elif step.variant < 0.65:
            # Two sides that hear each other only through one node in the middle.
            bridge, rest = ids[0], ids[1:]
            half = len(rest) // 2
            groups, what = [rest[:half], [bridge], rest[half:]], f"bridge through {bridge}"
            pairs = [[a, b] for a in groups[0] for b in groups[2]]
        elif leader is not None and step.variant < 0.9:
            groups, what = [[leader], [i for i in ids if i != leader]], "leader isolated"
            pairs = [[leader, i] for i in ids if i != leader]
        elif leader is not None:
            # The leader still speaks but hears nothing: its heartbeats go out, no acks come back.
            groups, what = [[leader], [i for i in ids if i != leader]], "leader deaf (one-way)"
            pairs = [{"from": i, "to": leader, "one_way": True} for i in ids if i != leader]
        else:
            return
        self.cluster.set_partitions(pairs)
        self.counts["partition"] += 1
        self.note(f"partition {what}: {' | '.join(','.join(g) for g in groups)} for {step.hold:.1f}s")
        await asyncio.sleep(step.hold)
        self.cluster.set_partitions([])
        self.note("heal partition")

    # -- operations --------------------------------------------------------------------------
    async def _kvctl(self, *args: str, timeout: float = 30.0) -> int:
        code, out = await self.cluster.kvctl(*args, timeout=timeout)
        self.note(f"kvctl {' '.join(args)}: exit {code}: {out[:300]}")
        return code

    async def _transfer(self, step: Step) -> None:
        leader, voters, _ = await self._members()
        others = [v for v in voters if v != leader and self.cluster.nodes.get(v) and self.cluster.nodes[v].running]
        if leader is None or not others:
            return
        self.counts["transfer"] += 1
        if step.variant < 0.8:
            await self._kvctl("cluster", "transfer", _pick(others, step.pick), timeout=10)
        else:
            await self._kvctl("cluster", "transfer", timeout=10)  # to the most caught-up

    async def _snapshot(self, step: Step) -> None:
        self.counts["snapshot"] += 1
        if step.variant < 0.5:
            await self._kvctl("snapshot", "create")
        else:
            await self._kvctl("compact")

    async def _membership(self, step: Step) -> None:
        leader, voters, learners = await self._members()
        if leader is None:
            return
        old = leader if step.leader else _pick(voters, step.pick)
        self.counts["membership"] += 1
        if len(voters) > self.size or (len(voters) == self.size and step.variant < 0.4):
            # Shrink (and, when at the size, grow back after the hold).
            code = await self._kvctl("cluster", "remove", old, *(["--force"] if old == leader else []))
            if code == 0 and len(voters) <= self.size:
                await asyncio.sleep(step.hold)
                await self._add()
        elif len(voters) < self.size:
            await self._add()
        else:
            new = await self._fresh_node()
            await self._kvctl("cluster", "replace", old, new.id, new.peer_addr, timeout=60)
        await self._settle_membership()

    async def _fresh_node(self) -> NodeProcess:
        node = self.cluster.new_node()
        node.start()
        await self.cluster.wait_started(node)
        return node

    async def _add(self) -> None:
        node = await self._fresh_node()
        if await self._kvctl("cluster", "add", node.id, node.peer_addr) != 0:
            return
        deadline = time.monotonic() + PROMOTE_WAIT
        while time.monotonic() < deadline:
            _, voters, _ = await self._members()
            if node.id in voters:
                self.note(f"{node.id} promoted to voter")
                return
            await asyncio.sleep(0.5)
        self.note(f"{node.id} not promoted within {PROMOTE_WAIT:g}s")

    async def _settle_membership(self) -> None:
        """Make the processes agree with the membership: a node no longer a member shuts
        itself down (else it is stopped) and is never started again."""
        deadline = time.monotonic() + RETIRE_GRACE
        while True:
            leader, voters, learners = await self._members()
            members = set(voters) | set(learners)
            strays = [n for n in self.cluster.live() if leader is not None and n.id not in members]
            if not strays:
                return
            if time.monotonic() >= deadline:
                for node in strays:
                    node.terminate()
                    node.retired = True
                    self.note(f"{node.id} is no member: stopped")
                return
            for node in strays:
                if not node.running:
                    node.retired = True
                    self.note(f"{node.id} left the cluster and exited")
            await asyncio.sleep(0.5)

    # -- the disk ----------------------------------------------------------------------------
    async def _disk(self, step: Step) -> None:
        # One damaged node at a time, in a settled configuration: damage on a majority at once
        # (or with the others unable to make a majority without it) is data loss no protocol
        # survives (docs/operations.md, Disk damage).
        statuses = await self.cluster.statuses()
        if any(s.get("recovering_to") for s in statuses.values()):
            self.note("disk fault skipped: a node is still re-fetching what it lost")
            return
        leader, voters, _learners = await self._members()
        if len(voters) < 3 or len({tuple(s.get("voters", ())) for s in statuses.values()}) > 1:
            self.note("disk fault skipped: fewer than three voters, or a membership change in flight")
            return
        node, name = await self._target(step)
        if node is None:
            return
        node.kill()
        self.counts["disk"] += 1
        self.note(f"kill -9 {name} for a disk fault: "
                  f"{damage_last_segment(node.data_dir / 'log', step.variant, step.pick)}")
        await asyncio.sleep(step.hold)
        await self._restart(node)

    # -- the end -----------------------------------------------------------------------------
    async def heal(self) -> None:
        """Undo everything: no partition, nothing paused, every member running."""
        self.cluster.set_partitions([])
        for node in self.cluster.live():
            node.resume()
        for node in self.cluster.live():
            try:
                await self._restart(node)
            except NodeFailed as exc:
                self.trouble.append(str(exc).splitlines()[0])
                self.note(f"trouble: {exc}")
        self.note("healed: no partition, every node running")

