"""What drives the cluster from outside: Jepsen-style clients, and an operator.

Clients
    Each client runs one operation at a time on a small key set (so histories are contentious)
    and records it in a HistoryRecorder with simulated time. A client talks to the node's
    request layer (``Node.submit``, ``Node.read_barrier``) as the service does for a real
    client. As in Jepsen it is connected to one node, and reaches the leader that node knows
    across the simulated network (so a partition stands between a client and a leader on the
    other side; a client of a deposed leader keeps talking to it).

    A write carries the client's session (client id, seq), as a real client's does, and is
    retried — same session — when an attempt's outcome is unknown (a timeout, its node
    crashing) or definitely nothing (not the leader, dropped, superseded), until the
    operation's deadline. It completes OK with the first answer, fails if no attempt can have
    taken effect, and is indeterminate otherwise; as in Jepsen, a client whose operation is
    indeterminate continues as a new process. A read is a read barrier on the leader and then
    a read of that node's state; reads have no effect, so every unhappy ending is a failure.

Operator
    At random times, through the leader's facade: add a learner (a fresh, empty,
    unbootstrapped node), promote a learner, remove a voter or learner (the leader included),
    transfer leadership to a voter — or to a learner, which must be refused. Refusals are
    counted, not errors.
"""
from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING

from keyval.errors import NodeUnavailable, ProposalLost
from keyval.kv import encode_delete, encode_put
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
from keyval.raft.quorum import majority

from .sim_checks import SafetyViolation

if TYPE_CHECKING:
    from .sim_node import SimNode
    from .simulator import Simulation

WRITE_TIMEOUT = 400  # ms: after that a write not answered is indeterminate
READ_TIMEOUT = 300
ATTEMPT_TIMEOUT = 0.15  # s: one request's deadline at the node (the service's request timeout)
MAX_VOTERS = 5
MAX_MEMBERS = 7
#: entries a learner may lag its leader by and still be promoted
CATCHUP_THRESHOLD = 20


class _Op:
    __slots__ = ("handle", "kind", "key", "value", "data", "seq", "deadline", "node", "unknown", "attempts")

    def __init__(self, handle: int, kind: str, key: str, value: str | None, deadline: int) -> None:
        self.handle = handle
        self.kind = kind
        self.key = key
        self.value = value
        self.data = b""
        self.seq = 0
        self.deadline = deadline
        #: the node the current attempt is waiting on
        self.node: str | None = None
        #: some attempt's outcome is unknown: the write may have taken effect
        self.unknown = False
        self.attempts = 0

    def describe(self) -> str:
        if self.kind == "put":
            return f"put {self.key}={self.value}"
        return f"{self.kind} {self.key}"


class _Client:
    __slots__ = ("process", "session", "seq", "acked", "op", "home")

    def __init__(self, process: int) -> None:
        self.process = process
        self.session = f"c{process}"
        self.seq = 0
        #: the highest seq answered: the state machine may forget sessions' results below it
        self.acked = 0
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
        value = None
        op_timeout = READ_TIMEOUT
        if kind != "get":
            client.seq += 1
            op_timeout = WRITE_TIMEOUT
            value = f"{client.process}.{client.seq}" if kind == "put" else None
        handle = sim.history.invoke(client.process, kind, key, value, sim.now)
        op = _Op(handle, kind, key, value, sim.now + op_timeout)
        if kind != "get":
            op.seq = client.seq
            session = dict(client=client.session, seq=client.seq, acked=client.acked)
            op.data = (encode_put(key.encode(), value.encode(), **session) if kind == "put"
                       else encode_delete(key.encode(), **session))
        client.op = op
        sim.trace.add(sim.now, f"p{client.process}", f"invoke {op.describe()}")
        sim.schedule(op.deadline, self._timeout, client, op)
        self._attempt(client, op)

    def _attempt(self, client: _Client, op: _Op) -> None:
        if client.op is not op or op.node is not None or self.sim.now >= op.deadline:
            return
        sim = self.sim
        target = self._target(client)
        if target is None:
            self._retry(client, op, 5, 20)
            return
        node = target.node
        try:
            if op.kind == "get":
                fut = node.read_barrier(ATTEMPT_TIMEOUT)
            else:
                fut = node.submit(op.data, ATTEMPT_TIMEOUT, (client.session, op.seq))
        except (NotLeader, NodeUnavailable):
            self._retry(client, op, 1, 5)
            return
        op.node = target.id
        op.attempts += 1
        fut.add_done_callback(lambda f: self._answered(client, op, target, node, f))
        sim.trace.add(sim.now, f"p{client.process}", f"attempt #{op.attempts} of {op.describe()} at {target.id}")

    def _retry(self, client: _Client, op: _Op, low: int, high: int) -> None:
        self.sim.schedule(self.sim.now + self.rng.randint(low, high), self._attempt, client, op)

    def _answered(self, client: _Client, op: _Op, target: "SimNode", node, fut: asyncio.Future) -> None:
        if client.op is not op or op.node != target.id:
            return
        op.node = None
        exc = None if fut.cancelled() else fut.exception()
        if fut.cancelled() or exc is not None:
            if op.kind != "get" and not isinstance(exc, (NotLeader, ProposalDropped, ProposalLost)):
                op.unknown = True  # timed out, or its node went away: it may still apply
            why = "cancelled" if exc is None else type(exc).__name__
            self.sim.trace.add(self.sim.now, f"p{client.process}", f"attempt of {op.describe()} at {target.id}: {why}")
            self._retry(client, op, 1, 10)
            return
        if op.kind == "get":
            if target.node is not node:
                self._retry(client, op, 1, 10)  # the node crashed before the answer was read
                return
            item = node.get(op.key.encode())
            self._finish(client, op, "ok", value=item.value.decode() if item is not None else None)
            return
        result = fut.result()
        if result is not None and result.ok:
            self._finish(client, op, "ok")
        else:
            raise SafetyViolation(f"{target.id} answered {op.describe()} of {client.session}#{op.seq} with {result!r}")

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
        if op.kind == "get":
            self._finish(client, op, "fail", "timed out")
        elif op.unknown or op.node is not None:
            self._finish(client, op, "info", "timed out")
        else:
            self._finish(client, op, "fail", "no attempt can have taken effect")

    def _finish(self, client: _Client, op: _Op, outcome: str, why: str = "", value: str | None = None) -> None:
        sim = self.sim
        if outcome == "ok":
            sim.history.ok(op.handle, sim.now, value)
            shown = f" -> {value!r}" if op.kind == "get" else ""
            sim.trace.add(sim.now, f"p{client.process}", f"ok {op.describe()}{shown}")
        elif outcome == "fail":
            sim.history.fail(op.handle)
            sim.trace.add(sim.now, f"p{client.process}", f"fail {op.describe()}: {why}")
        else:
            # Indeterminate: leave it unresolved; carry on as a new process (and session), as
            # Jepsen does.
            sim.trace.add(sim.now, f"p{client.process}", f"info {op.describe()}: {why}; now p{self._next_process}")
            fresh = _Client(self._next_process)
            client.process, client.session, client.seq, client.acked = fresh.process, fresh.session, 0, 0
            self._next_process += 1
        if outcome != "info" and op.kind != "get":
            client.acked = op.seq
        sim.stats[f"ops-{op.kind}-{outcome}"] += 1
        if op.attempts > 1 and op.kind != "get":
            sim.stats["ops-retried"] += 1
        client.op = None
        if not self.stopped:
            sim.schedule(sim.now + self.rng.randint(0, 20), self._invoke, client)

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
            if op.kind == "get" or not (op.unknown or op.node is not None):
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
            # As kvctl does (MembershipManager.check_promote): only a learner that has caught
            # up. A voter that holds nothing cannot vote for anyone it does not know yet.
            live = [n for n in learners if n in sim.nodes and sim.nodes[n].alive and self._caught_up(leader, n)]
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
            # As kvctl does (MembershipManager.check_remove): the voters that remain must hold
            # a quorum that counts, and one re-fetching lost entries does not count.
            recovering = {p.id for p in leader.node.status().peers if p.lost_to}
            remaining = [v for v in voters if v != target]
            if target in voters and sum(v not in recovering for v in remaining) < majority(len(remaining)):
                return
            # Nor, like an operator reading `cluster health`, while a node re-fetches what it
            # lost: a smaller configuration may leave it no majority to recover from.
            if target in voters and any(n.disk.lost() for n in sim.nodes.values()):
                return
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
        if change is not None:
            task = sim.loop.create_task(self._change(leader, change, action, target))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            if action == "add":
                self.next_id += 1
                self.added += 1
            return
        try:
            leader.node.transfer_leadership(target)
        except (TransferRefused, NotLeader) as exc:
            self._refused(leader, action, target, exc)
            return
        if action == "transfer-learner":
            raise SafetyViolation(f"{leader.id} accepted a leadership transfer to learner {target}")
        sim.stats[f"operator-{action}"] += 1
        sim.trace.add(sim.now, "oper", f"transfer leadership to {target} via {leader.id}")

    @staticmethod
    def _caught_up(leader: "SimNode", learner: str) -> bool:
        status = leader.node.status()
        match = next((p.match for p in status.peers if p.id == learner), 0)
        return match > 0 and status.last_index - match <= CATCHUP_THRESHOLD

    async def _change(self, leader: "SimNode", change: ConfigChange, action: str, target: str) -> None:
        """A membership change through the leader's facade, as ``kvctl cluster`` makes one;
        a node being added is started unless the change was refused."""
        sim = self.sim
        try:
            index = await leader.node.propose_change(change, 1.0)
        except (ConfigChangeRefused, NotLeader, ProposalDropped) as exc:
            self._refused(leader, action, target, exc)
            return
        except (asyncio.TimeoutError, ProposalLost, NodeUnavailable) as exc:
            sim.trace.add(sim.now, "oper", f"{action} {target} via {leader.id}: outcome unknown ({type(exc).__name__})")
        else:
            sim.stats[f"operator-{action}"] += 1
            sim.trace.add(sim.now, "oper", f"{change.kind.value} {target} applied at {index} via {leader.id}")
        if action == "add" and target not in sim.nodes:
            sim.add_fresh_node(target)

    def _refused(self, leader: "SimNode", action: str, target: str, exc: Exception) -> None:
        sim = self.sim
        sim.stats[f"refused-{action}-{type(exc).__name__}"] += 1
        sim.trace.add(sim.now, "oper", f"{action} {target} refused by {leader.id}: {type(exc).__name__}: {exc}")
