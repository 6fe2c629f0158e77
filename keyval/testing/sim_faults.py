"""What goes wrong, and how often: the per-seed knobs and the nemesis (Jepsen's word).

Faults come in storms separated by quiet spells, as a Jepsen nemesis schedule does: in a
storm, partitions (symmetric, one-way, bridges) come and go, nodes crash at random points
of the Ready pipeline and restart later. Crashes and one-node partitions pick the leader
half the time. Besides, the nemesis "buggifies" (FoundationDB's word) two moments that
matter to the protocol — the Ready that makes a node leader, and a new leader's first
commit — with the seed's probability: the node crashes there or is cut off from everyone
(an isolated leader keeps accepting writes it cannot replicate). Those are the moments the
Figure 8 scenario of the Raft paper is made of.

Message loss, duplication, delay spikes and reordering are the network's (``sim_net``)
and last the whole faulty run; so do messages from non-members (``sim_intruder``).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from keyval.raft import Role

from .sim_net import partition_links

if TYPE_CHECKING:
    from .sim_node import SimNode
    from .simulator import Simulation

#: Every fault kind, all on by default; each has a --no-KIND switch.
FAULT_KINDS = (
    "drop", "duplicate", "delay", "reorder", "partitions", "crashes", "skew", "membership", "intruder", "disk-loss",
)
#: Where in the Ready pipeline a crash may strike ("now": between two steps). Each but "now"
#: is armed as a fault of the node's disk, network or state machine (``SimNode.fault_due``).
CRASH_POINTS = ("now", "before-persist", "during-sync", "after-persist", "after-send", "after-apply")


@dataclass(frozen=True)
class Knobs:
    """Everything drawn from the seed before the run: fault intensities and Raft tunables."""

    voters: int
    clients: int
    keys: int
    drop: float
    duplicate: float
    delay: float
    reorder: bool
    partition_gap: int  # mean ms between partitions (0: none)
    crash_gap: int  # mean ms between crashes (0: none)
    operator_gap: int  # mean ms between operator actions (0: none)
    skew: bool
    phases: bool  # storms and quiet spells; False: one long storm
    buggify: float  # probability of a fault at an election or a new leader's first commit
    fsync_ms: int  # an fsync off the loop takes 1..fsync_ms ms, the loop running meanwhile (0: instant)
    follower_sync_inline: bool  # a follower fsyncs on the loop (Timing.follower_sync_inline)
    catchup_entries: int  # log entries kept behind a snapshot (Timing.snapshot_catchup_entries)
    #: probability that a crash also damages the disk: the last synced batch of entries is
    #: lost with the unsynced writes (the durable watermark remembers it)
    disk_loss: float = 0.0
    raft: dict = field(default_factory=dict)

    def describe(self) -> str:
        raft = " ".join(f"{k}={v}" for k, v in sorted(self.raft.items()))
        return (
            f"voters={self.voters} clients={self.clients} keys={self.keys} drop={self.drop:.3f} "
            f"duplicate={self.duplicate:.3f} delay={self.delay:.3f} reorder={self.reorder} "
            f"partition_gap={self.partition_gap} crash_gap={self.crash_gap} "
            f"operator_gap={self.operator_gap} skew={self.skew} phases={self.phases} "
            f"buggify={self.buggify} fsync_ms={self.fsync_ms} "
            f"follower_sync_inline={self.follower_sync_inline} catchup_entries={self.catchup_entries} "
            f"disk_loss={self.disk_loss}\n"
            f"  raft: {raft}"
        )


def draw_knobs(rng: random.Random, faults: frozenset[str], voters: int | None) -> Knobs:
    # Draw everything whatever the switches say, so that turning one fault off does not
    # reshuffle the rest of the seed.
    on = faults
    drawn_voters = rng.choice((3, 5))
    knobs = dict(
        voters=voters or drawn_voters,
        clients=rng.randint(4, 10),
        keys=rng.choice((2, 3, 3)),
        drop=rng.uniform(0.0, 0.1) if "drop" in on else 0.0,
        duplicate=rng.uniform(0.0, 0.05) if "duplicate" in on else 0.0,
        delay=rng.uniform(0.0, 0.1) if "delay" in on else 0.0,
        reorder=("reorder" in on) & (rng.random() < 0.8),
        # Some seeds flap partitions every few tens of ms (the MIT 6.824 "Figure 8 unreliable"
        # regime, which is what exposes commit-rule bugs), others partition rarely.
        partition_gap=rng.choice((20, 50, 150, 400, 800)) if "partitions" in on else 0,
        crash_gap=rng.choice((50, 150, 300, 600, 1500)) if "crashes" in on else 0,
        operator_gap=rng.randint(100, 400) if "membership" in on else 0,
        skew="skew" in on,
        phases=rng.random() < 0.8,
        buggify=rng.choice((0.0, 0.2, 0.4, 0.6)),
    )
    raft = dict(
        heartbeat_tick=rng.choice((1, 2, 3)),
        # Small batches split a new leader's catch-up into many appends (Figure 8 needs that).
        max_entries_per_msg=rng.choice((1, 1, 2, 3, 8, 512)),
        max_bytes_per_msg=rng.choice((100, 300, 1 << 20)),
        max_inflight=rng.choice((1, 2, 4, 64)),
        max_apply_bytes=rng.choice((50, 200, 4 << 20)),
        # Snapshots of a few keys (and the clients' sessions) still cross in several chunks.
        snapshot_chunk_size=rng.choice((64, 128, 256, 512)),
        snapshot_threshold=rng.choice((4, 8, 16, 64)),
        pre_vote=rng.random() < 0.85,
        check_quorum=rng.random() < 0.75,
    )
    # How the runtime is tuned: fsync latency, where a follower syncs, how much log a
    # snapshot leaves behind (none: lagging peers need snapshots).
    runtime = dict(
        fsync_ms=rng.choice((0, 0, 1, 3, 8)), follower_sync_inline=rng.random() < 0.5,
        catchup_entries=rng.choice((0, 0, 1, 3, 10)),
    )
    disk_loss = rng.choice((0.0, 0.1, 0.3, 0.6))
    return Knobs(**knobs, **runtime, disk_loss=disk_loss if "disk-loss" in on else 0.0, raft=raft)


class Nemesis:
    def __init__(self, sim: "Simulation", rng: random.Random, knobs: Knobs) -> None:
        self.sim = sim
        self.rng = rng
        self.knobs = knobs
        self.stopped = False
        self.stormy = True
        self._storm = 0  # generation of the storm: stale partition events are ignored
        self._partition = 0  # generation of the partition in force: stale heals are ignored

    def start(self) -> None:
        k, sim = self.knobs, self.sim
        if k.partition_gap:
            sim.schedule(self._next(k.partition_gap), self._partition_event, self._storm)
        if k.crash_gap:
            sim.schedule(self._next(k.crash_gap), self._crash_event)
        if k.phases:
            sim.schedule(sim.now + self.rng.randint(500, 3000), self._phase)

    def stop(self) -> None:
        """No new faults; partitions heal; pending crash points are cancelled."""
        self.stopped = True
        self.sim.net.heal()
        for node in self.sim.nodes.values():
            node.crash_point = None

    def buggify(self, node: "SimNode", call: str) -> str | None:
        """At the two moments that matter — a new leader's first append (its election) and
        its first commit — with the seed's probability, a fault: the node is cut off from
        everyone, or a crash point is armed (or, "before-persist", fires now)."""
        core, k = node.core, self.knobs
        if core is None or core.role is not Role.LEADER or not k.buggify or self.stopped:
            return None
        elected = call == "append" and node.elected_term != core.term
        first_commit = (call == "hard-state" and node.leader_commits != core.term
                        and core.log.committed > node.disk.durable.hard_state.commit)
        if elected:
            node.elected_term = core.term
        if first_commit:
            node.leader_commits = core.term
        if not (elected or first_commit) or self.rng.random() >= k.buggify:
            return None
        # Mostly the two faults that strand the leader's newest entries on it alone.
        faults, weights = [], []
        if k.partition_gap:
            faults.append("isolate")
            weights.append(45)
        if k.crash_gap and self._down() < self._max_down():
            faults += ["after-persist", "before-persist", "during-sync", "after-send", "after-apply"]
            weights += [40, 4, 5, 3, 3]
        if not faults:
            return None
        fault = self.rng.choices(faults, weights)[0]
        self.sim.trace.add(self.sim.now, node.id, f"buggify ({'elected' if elected else 'first commit'}): {fault}")
        if fault == "isolate":
            self.isolate(node)
            return None
        if fault == "before-persist":
            return fault
        node.crash_point = fault, self.sim.now + 2000
        return None

    def isolate(self, node: "SimNode") -> None:
        sim = self.sim
        if self.stopped:
            return  # decided before the heal, due after it (the Ready waited for its fsync)
        others = [nid for nid, n in sorted(sim.nodes.items()) if nid != node.id and not n.stopped]
        self._partition += 1
        sim.net.cut = {(node.id, o) for o in others} | {(o, node.id) for o in others}
        sim.stats["partitions"] += 1
        sim.trace.add(sim.now, "net", f"PARTITION isolate {node.id} (buggify)")
        sim.schedule(sim.now + self._partition_duration(), self._heal_partition, self._partition)

    # -- the schedule ---------------------------------------------------------------------
    def _next(self, gap: int) -> int:
        return self.sim.now + max(1, int(self.rng.expovariate(1.0 / gap)))

    def _phase(self) -> None:
        sim = self.sim
        if self.stopped:
            return
        self.stormy = not self.stormy
        self._storm += 1
        self._partition += 1  # a partition in force ends with its storm
        sim.net.heal()
        if self.stormy:
            sim.schedule(sim.now + self.rng.randint(500, 3000), self._phase)
            sim.trace.add(sim.now, "sim", "storm: faults start")
            if self.knobs.partition_gap:
                sim.schedule(self._next(self.knobs.partition_gap), self._partition_event, self._storm)
        else:
            sim.schedule(sim.now + self.rng.randint(300, 1500), self._phase)
            sim.trace.add(sim.now, "sim", "quiet: no new faults, partitions healed")

    def _partition_event(self, storm: int) -> None:
        sim = self.sim
        if self.stopped or storm != self._storm:
            return
        nodes = [nid for nid, node in sorted(sim.nodes.items()) if not node.stopped]
        leader = sim.current_leader()
        what, links = partition_links(self.rng, nodes, leader.id if leader else None)
        self._partition += 1
        sim.net.cut = links
        sim.stats["partitions"] += 1
        sim.trace.add(sim.now, "net", f"PARTITION {what}")
        sim.schedule(sim.now + self._partition_duration(), self._heal_partition, self._partition)

    def _partition_duration(self) -> int:
        """Most are blips in the seed's rhythm (flapping, when partitions come every few
        tens of ms); the rest last long enough for the majority side to elect a leader and
        move on while the minority side still runs (a deposed leader that does not know it
        yet), some for seconds, as Jepsen's do."""
        r = self.rng.random()
        if r < 0.6:
            return self.rng.randint(10, max(20, 2 * self.knobs.partition_gap))
        if r < 0.85:
            return self.rng.randint(100, 600)
        return self.rng.randint(600, 3000)

    def _heal_partition(self, generation: int) -> None:
        sim = self.sim
        if generation != self._partition or self.stopped:
            return
        sim.net.heal()
        sim.trace.add(sim.now, "net", "partition healed")
        sim.schedule(self._next(self.knobs.partition_gap), self._partition_event, self._storm)

    def _victim(self, candidates: list["SimNode"]) -> "SimNode":
        """Half the time the leader: that is where the interesting failures are."""
        leader = self.sim.current_leader()
        if leader is not None and leader in candidates and self.rng.random() < 0.5:
            return leader
        return self.rng.choice(candidates)

    def _down(self) -> int:
        return sum(1 for n in self.sim.nodes.values() if not n.stopped and (not n.alive or n.crash_point))

    def _max_down(self) -> int:
        return max(2, sum(1 for n in self.sim.nodes.values() if not n.stopped) // 2)

    def _crash_event(self) -> None:
        sim = self.sim
        if self.stopped:
            return
        sim.schedule(self._next(self.knobs.crash_gap), self._crash_event)
        if not self.stormy:
            return
        live = sim.live_nodes()
        if self._down() >= self._max_down() or not live:
            return
        point = self.rng.choice(CRASH_POINTS)
        if point == "now":
            sim.crash(self._victim(live), "between steps")
        else:
            node = self._victim(live)
            node.crash_point = point, sim.now + self.rng.randint(200, 2000)
            sim.trace.add(sim.now, node.id, f"armed crash point {point}")
