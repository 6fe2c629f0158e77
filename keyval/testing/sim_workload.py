"""What drives the cluster from outside: Jepsen-style clients, and an operator.

Clients
    Each client runs one operation at a time on a small key set (so histories are contentious)
    and records it in a HistoryRecorder with simulated time. As in Jepsen, a client is
    connected to one node, which forwards to the leader it knows across the simulated network
    (so a partition stands between a client and a leader on the other side; a client of a
    deposed leader keeps talking to it). A write is ``propose``; it completes OK when the node
    that accepted it applies the entry at the (term, index) ``propose`` returned, fails when
    another entry is applied there (or when no node ever accepted it), and is indeterminate
    otherwise — after a timeout, a crash of its node, or a snapshot that jumped over it. As in Jepsen, a client
    whose operation is indeterminate continues as a new process. A read is ``read_index`` on
    the leader, served from that node's map once it has applied the ReadState's index; reads
    have no effect, so every unhappy ending of a read is a plain failure.

Operator
    At random times, through the leader: add a learner (a fresh, empty, unbootstrapped node),
    promote a learner, remove a voter or learner (the leader included), transfer leadership to
    a voter — or to a learner, which must be refused. Refusals are counted, not errors.
"""
from __future__ import annotations

import random
from typing import TYPE_CHECKING

from keyval.raft import (
    NONE,
    ChangeKind,
    ConfigChange,
    ConfigChangeRefused,
    NotLeader,
    ProposalDropped,
    Role,
    TransferRefused,
)

from .sim_checks import SafetyViolation
from .sim_node import encode_command

if TYPE_CHECKING:
    from keyval.raft import Entry, ReadState

    from .sim_node import SimNode
    from .simulator import Simulation

WRITE_TIMEOUT = 400  # ms: after that an accepted write is indeterminate
READ_TIMEOUT = 300
MAX_VOTERS = 5
MAX_MEMBERS = 7


class _Op:
    __slots__ = ("handle", "kind", "key", "value", "data", "ctx", "deadline", "node", "term", "index", "read_index")

    def __init__(self, handle: int, kind: str, key: str, value: str | None, deadline: int) -> None:
        self.handle = handle
        self.kind = kind
        self.key = key
        self.value = value
        self.data = b""
        self.ctx = b""
        self.deadline = deadline
        self.node: str | None = None  # where it was accepted
        self.term = 0
        self.index = 0
        self.read_index: int | None = None

    def describe(self) -> str:
        if self.kind == "put":
            return f"put {self.key}={self.value}"
        return f"{self.kind} {self.key}"


class _Client:
    __slots__ = ("process", "seq", "op", "home")

    def __init__(self, process: int) -> None:
        self.process = process
        self.seq = 0
        self.op: _Op | None = None
        #: the node this client is connected to, as a Jepsen client is
        self.home = NONE


class Clients:
    def __init__(self, sim: "Simulation", rng: random.Random, count: int, keys: int) -> None:
        self.sim = sim
        self.rng = rng
        self.keys = [f"k{i}" for i in range(keys)]
        self.clients = [_Client(process=i) for i in range(count)]
        self._next_process = count
        self._writes: dict[str, dict[int, list[tuple[_Client, _Op]]]] = {}  # node -> index -> ops
        self._reads: dict[bytes, tuple[_Client, _Op]] = {}
        self.stopped = False

    def start(self) -> None:
        for client in self.clients:
            self.sim.schedule(self.sim.now + self.rng.randint(1, 50), self._invoke, client)

    # -- lifecycle of one operation ---------------------------------------------------------
    def _invoke(self, client: _Client) -> None:
        if self.stopped or client.op is not None:
            return
        sim, rng = self.sim, self.rng
        r = rng.random()
        kind = "get" if r < 0.4 else "put" if r < 0.85 else "delete"
        key = rng.choice(self.keys)
        client.seq += 1
        value = f"{client.process}.{client.seq}" if kind == "put" else None
        timeout = READ_TIMEOUT if kind == "get" else WRITE_TIMEOUT
        handle = sim.history.invoke(client.process, kind, key, value, sim.now)
        op = _Op(handle, kind, key, value, sim.now + timeout)
        if kind == "get":
            op.ctx = f"{client.process}.{client.seq}".encode()
        else:
            op.data = encode_command(kind, key, value, client.process, client.seq)
        client.op = op
        sim.trace.add(sim.now, f"p{client.process}", f"invoke {op.describe()}")
        sim.schedule(op.deadline, self._timeout, client, op)
        self._attempt(client, op)

    def _attempt(self, client: _Client, op: _Op) -> None:
        if client.op is not op or op.node is not None:
            return
        sim = self.sim
        node = self._target(client)
        if node is None:
            sim.schedule(sim.now + self.rng.randint(5, 20), self._attempt, client, op)
            return
        try:
            if op.kind == "get":
                node.core.read_index(op.ctx)
            else:
                op.term, op.index = node.core.propose(op.data)
        except NotLeader:
            sim.schedule(sim.now + self.rng.randint(1, 5), self._attempt, client, op)
            return
        except ProposalDropped:
            sim.schedule(sim.now + self.rng.randint(5, 20), self._attempt, client, op)
            return
        sim.dirty.add(node.id)
        op.node = node.id
        if op.kind == "get":
            self._reads[op.ctx] = (client, op)
            sim.trace.add(sim.now, f"p{client.process}", f"read_index at {node.id} ctx={op.ctx.decode()}")
        else:
            self._writes.setdefault(node.id, {}).setdefault(op.index, []).append((client, op))
            sim.trace.add(sim.now, f"p{client.process}", f"proposed at {node.id} as {op.index}/t{op.term}")

    def _target(self, client: _Client) -> "SimNode | None":
        """Who takes the request: the client's home node if it leads; otherwise the leader
        the home node knows of, reached by forwarding across the simulated network — so a
        client on the majority side of a partition cannot reach a deposed leader on the
        other side, and one connected to the deposed leader keeps talking to it."""
        sim = self.sim
        home = sim.nodes.get(client.home)
        if home is None or not home.alive or self.rng.random() < 0.02:
            # Reconnect somewhere else: the home is down, or connections churn now and then
            # (which also spreads clients over members added later).
            live = sim.live_nodes()
            if not live:
                return None
            home = self.rng.choice(live)
            client.home = home.id
        if home.core.role is Role.LEADER:
            return home
        target = sim.nodes.get(home.core.leader) if home.core.leader else None
        if target is None or not target.alive:
            return None
        if sim.net.is_cut(home.id, target.id) or sim.net.is_cut(target.id, home.id):
            return None
        return target

    def _timeout(self, client: _Client, op: _Op) -> None:
        if client.op is not op:
            return
        if op.node is None:
            self._finish(client, op, "fail", "no node accepted it before the timeout")
        elif op.kind == "get":
            self._finish(client, op, "fail", "timed out")
        else:
            self._finish(client, op, "info", "timed out")

    def _finish(self, client: _Client, op: _Op, outcome: str, why: str = "", value: str | None = None) -> None:
        sim = self.sim
        self._unregister(op)
        if outcome == "ok":
            sim.history.ok(op.handle, sim.now, value)
            shown = f" -> {value!r}" if op.kind == "get" else ""
            sim.trace.add(sim.now, f"p{client.process}", f"ok {op.describe()}{shown}")
        elif outcome == "fail":
            sim.history.fail(op.handle)
            sim.trace.add(sim.now, f"p{client.process}", f"fail {op.describe()}: {why}")
        else:
            # Indeterminate: leave it unresolved; carry on as a new process, as Jepsen does.
            sim.trace.add(sim.now, f"p{client.process}", f"info {op.describe()}: {why}; now p{self._next_process}")
            client.process = self._next_process
            client.seq = 0
            self._next_process += 1
        sim.stats[f"ops-{op.kind}-{outcome}"] += 1
        client.op = None
        if not self.stopped:
            sim.schedule(sim.now + self.rng.randint(0, 20), self._invoke, client)

    def _unregister(self, op: _Op) -> None:
        if op.node is None:
            return
        if op.kind == "get":
            self._reads.pop(op.ctx, None)
            return
        by_index = self._writes.get(op.node, {})
        waiting = by_index.get(op.index, [])
        waiting[:] = [(c, o) for c, o in waiting if o is not op]
        if not waiting:
            by_index.pop(op.index, None)

    # -- events from the nodes --------------------------------------------------------------
    def on_apply(self, node: "SimNode", entry: "Entry") -> None:
        waiting = self._writes.get(node.id)
        if not waiting or entry.index not in waiting:
            return
        for client, op in list(waiting[entry.index]):
            if entry.term != op.term:
                self._finish(client, op, "fail", f"{node.id} applied {entry.index}/t{entry.term} instead")
            elif entry.data != op.data:
                raise SafetyViolation(
                    f"{node.id} applied {entry.index}/t{entry.term} = {entry.data!r}, but propose() "
                    f"returned that (term, index) for {op.data!r}"
                )
            else:
                self._finish(client, op, "ok")

    def on_snapshot(self, node: "SimNode", index: int) -> None:
        waiting = self._writes.get(node.id, {})
        for at in sorted(i for i in waiting if i <= index):
            for client, op in list(waiting.get(at, [])):
                self._finish(client, op, "info", f"{node.id} installed a snapshot at {index}")

    def on_read_state(self, node: "SimNode", rs: "ReadState") -> None:
        found = self._reads.get(rs.context)
        if found is not None and found[1].node == node.id:
            found[1].read_index = rs.index

    def on_read_dropped(self, node: "SimNode", context: bytes) -> None:
        found = self._reads.get(context)
        if found is not None and found[1].node == node.id:
            self._finish(*found, "fail", f"read dropped by {node.id}")

    def serve_reads(self, node: "SimNode") -> None:
        for client, op in list(self._reads.values()):
            if op.node == node.id and op.read_index is not None and op.read_index <= node.applied:
                self._finish(client, op, "ok", value=node.kv.get(op.key))

    def on_crash(self, node: "SimNode") -> None:
        for at, waiting in sorted(self._writes.get(node.id, {}).items()):
            for client, op in list(waiting):
                self._finish(client, op, "info", f"{node.id} crashed")
        for client, op in list(self._reads.values()):
            if op.node == node.id:
                self._finish(client, op, "fail", f"{node.id} crashed")

    def stop(self) -> None:
        """No new operations; the ones in flight may still complete."""
        self.stopped = True

    def finish(self) -> None:
        """The end: whatever is still pending stays indeterminate (writes) or fails (reads)."""
        self.stopped = True
        for client in self.clients:
            op = client.op
            if op is None:
                continue
            if op.node is None or op.kind == "get":
                self._finish(client, op, "fail", "the run ended")
            else:
                self._finish(client, op, "info", "the run ended")


class Operator:
    def __init__(self, sim: "Simulation", rng: random.Random, next_id: int, gap: int) -> None:
        self.sim = sim
        self.rng = rng
        self.next_id = next_id
        self.gap = gap
        self.added = 0
        self.max_added = 6
        self.stopped = False

    def start(self) -> None:
        self.sim.schedule(self.sim.now + self.rng.randint(self.gap // 2, self.gap), self._act)

    def _act(self) -> None:
        if self.stopped:
            return
        sim, rng = self.sim, self.rng
        sim.schedule(sim.now + rng.randint(self.gap // 2, self.gap * 3 // 2), self._act)
        leader = sim.current_leader()
        if leader is None:
            sim.stats["operator-no-leader"] += 1
            return
        config = leader.core.membership
        voters, learners = sorted(config.voters), sorted(config.learners)
        action = rng.choices(
            ("add", "promote", "remove", "transfer", "transfer-learner"), weights=(25, 20, 20, 25, 10)
        )[0]
        change: ConfigChange | None = None
        target = NONE
        if action == "add":
            if len(config.members) >= MAX_MEMBERS or self.added >= self.max_added:
                return
            target = f"n{self.next_id}"
            change = ConfigChange(ChangeKind.ADD_LEARNER, target, f"sim://{target}")
        elif action == "promote":
            live = [n for n in learners if n in sim.nodes and sim.nodes[n].alive]
            if not live or len(voters) >= MAX_VOTERS:
                return
            target = rng.choice(live)
            change = ConfigChange(ChangeKind.PROMOTE, target)
        elif action == "remove":
            # Mostly three voters or more (a partition means little to one voter); now and
            # then two, rarely one (and trying to remove the last one is refused).
            pool = list(learners)
            if len(voters) > 3 or rng.random() < {3: 0.3, 2: 0.1}.get(len(voters), 0.05):
                pool += voters
            if not pool:
                return
            target = rng.choice(pool)
            change = ConfigChange(ChangeKind.REMOVE, target)
        elif action == "transfer":
            pool = [n for n in voters if n != leader.id]
            if not pool:
                return
            target = rng.choice(pool)
        else:
            if not learners:
                return
            target = rng.choice(learners)
        try:
            if change is not None:
                term, index = leader.core.propose_change(change)
                what = f"proposed {change.kind.value} {target} as {index}/t{term}"
            else:
                leader.core.transfer_leadership(target)
                what = f"transfer leadership to {target}"
        except (ConfigChangeRefused, TransferRefused, NotLeader, ProposalDropped) as exc:
            sim.stats[f"refused-{action}-{type(exc).__name__}"] += 1
            sim.trace.add(sim.now, "oper", f"{action} {target} refused by {leader.id}: {type(exc).__name__}: {exc}")
            return
        sim.dirty.add(leader.id)
        if action == "transfer-learner":
            raise SafetyViolation(f"{leader.id} accepted a leadership transfer to learner {target}")
        sim.stats[f"operator-{action}"] += 1
        sim.trace.add(sim.now, "oper", f"{what} via {leader.id}")
        if action == "add":
            self.next_id += 1
            self.added += 1
            sim.add_fresh_node(target)
