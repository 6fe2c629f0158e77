"""One simulated server: a ``SimDisk`` that survives crashes, and the production node runtime
(``keyval.runtime.node.Node`` with its Ready driver, request layer, state machine and
snapshots) started over it on each incarnation, with simulated storage, network, executor
and time swapped in.

The simulator watches the runtime from outside only: through the storage it is given, the
network, and the state machine's applies (``ObservedMachine`` wraps the node's own). A crash
kills the incarnation at once — disk writes not yet durable are lost, its network endpoint
goes dead, its tasks are cancelled, its clients' connections drop — and a restart is a new
``Node`` over the same disk.
"""
from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import msgspec

from keyval.config import NodeConfig
from keyval.kv import KVStore
from keyval.raft import Entry, EntryType, RaftCore, Snapshot
from keyval.runtime.node import Node
from keyval.runtime.timing import Timing

from .sim_disk import SimDisk, SimStorage
from .sim_io import SimOffLoop, SimTransport
from .sim_loop import SimulatedCrash

if TYPE_CHECKING:
    from .simulator import Simulation


def kv_digest(kv: KVStore) -> str:
    """The state machine's visible state: every key's value and revisions, and the revision."""
    items = ",".join(f"{i.key.decode()}={i.value.decode()}@{i.create_revision}/{i.mod_revision}" for i in kv.scan(b"", 0))
    return f"r{kv.revision}[{items}]"


def write_session(data: bytes) -> tuple[str, int] | None:
    """The (client, seq) of a put or delete command, if it carries one."""
    try:
        cmd = msgspec.msgpack.decode(data[1:])
        client, seq = (cmd[4], cmd[5]) if len(cmd) == 7 else (cmd[3], cmd[4])
    except (msgspec.DecodeError, IndexError, TypeError, ValueError):
        return None
    return (client, seq) if isinstance(client, str) and client else None


class ObservedMachine:
    """The node's own state machine, watched: every apply and restore is reported to the
    simulator (checks, exactly-once accounting), and the "after-apply" crash point fires here."""

    def __init__(self, inner: Any, sim_node: "SimNode") -> None:
        self.inner = inner
        self.sim_node = sim_node

    @property
    def membership(self):
        return self.inner.membership

    @membership.setter
    def membership(self, value) -> None:
        self.inner.membership = value

    @property
    def applied(self) -> int:
        return self.inner.applied

    @applied.setter
    def applied(self, value: int) -> None:
        self.inner.applied = value

    def apply(self, entry: Entry):
        node = self.sim_node
        node.sim.checker.before_apply(node, entry)
        revision = node.kv.revision
        result = self.inner.apply(entry)
        node.applied = entry.index
        if entry.type is EntryType.NORMAL and node.kv.revision != revision:
            node.sim.checker.took_effect(node, entry, write_session(entry.data))
        node.sim.checker.on_apply(node, entry)
        if entry.type is EntryType.CONFIG:
            node.sim.config_applied(entry.index, self.inner.membership)
        if node.fault_due("apply") == "after-apply":
            node.sim.crash(node, "after applying")
            raise SimulatedCrash("after applying")
        return result

    def restore(self, snapshot: Snapshot) -> None:
        node = self.sim_node
        self.inner.restore(snapshot)
        node.applied = snapshot.meta.index
        node.sim.checker.on_apply_snapshot(node, snapshot)
        node.sim.config_applied(snapshot.meta.index, snapshot.meta.membership)
        node.sim.stats["snapshots-installed"] += 1
        node.sim.trace.add(node.sim.now, node.id, f"installed snapshot @{snapshot.meta.index} {kv_digest(node.kv)}")


class SimNode:
    def __init__(self, sim: "Simulation", node_id: str, bootstrap: dict[str, str]) -> None:
        self.sim = sim
        self.id = node_id
        self.bootstrap = bootstrap
        self.disk = SimDisk()
        self.node: Node | None = None
        self.storage: SimStorage | None = None
        self.transport: SimTransport | None = None
        self.incarnation = 0
        #: an incarnation's start is under way (its task has not run yet)
        self.starting = False
        #: permanently stopped (removed from the cluster); never restarted
        self.stopped = False
        #: set by the nemesis: (crash point, expiry in ms)
        self.crash_point: tuple[str, int] | None = None
        #: the last term in which this node, as leader, appended (was elected) / advanced its commit
        self.elected_term = 0
        self.leader_commits = 0
        self.tick_interval = 10
        #: the state machine's applied index (ahead of the core's within a Ready)
        self.applied = 0

    # -- what the simulator and its checks look at ----------------------------------------------
    @property
    def alive(self) -> bool:
        return self.node is not None

    @property
    def core(self) -> RaftCore | None:
        return self.node.core if self.node is not None else None

    @property
    def kv(self) -> KVStore:
        return self.node.kv

    def kv_digest(self) -> str:
        return kv_digest(self.node.kv)

    def deliver(self, msg) -> None:
        if self.transport is not None:
            self.transport.deliver(msg)

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self, timing: Timing, rng: random.Random, fsync_ms: int) -> None:
        """Start an incarnation over the disk: the real ``Node`` lifecycle (contract checks,
        bootstrap, identity) with the simulator's storage and transport plugins."""
        sim = self.sim
        self.incarnation += 1
        self.applied = 0
        config = NodeConfig(id=self.id, peer_addr=f"sim://{self.id}", client_addr=f"sim://{self.id}/client",
                            bootstrap=dict(self.bootstrap), storage="sim", transport="sim",
                            storage_options={"node": self.id}, transport_options={"node": self.id})
        node = Node(config, sim.plugins, timing, rng=rng, off_loop=SimOffLoop(sim.loop, rng, fsync_ms))
        node.machine = ObservedMachine(node.machine, self)
        self.node = node
        try:
            await node.start()
        except BaseException:
            self.node = None
            raise
        snap = node.storage.snapshot_meta()
        self.applied = snap.index

    def open_storage(self) -> SimStorage:
        self.storage = self.disk.open(_DiskWatch(self))
        return self.storage

    def open_transport(self) -> SimTransport:
        self.transport = SimTransport(self.sim.send, lambda: self.fault_due("send"),
                                      lambda where: self.sim.crash(self, where))
        return self.transport

    def fault_due(self, call: str) -> str | None:
        """The crash point armed on this node, if it matches ``call`` and has not expired."""
        if self.crash_point is None:
            return None
        point, expires = self.crash_point
        if self.sim.now > expires:
            self.crash_point = None
            return None
        wanted = {
            "before-persist": ("append", "hard-state", "snapshot"),
            "during-sync": ("sync",), "after-persist": ("sync",),
            "after-send": ("send",), "after-apply": ("apply",),
        }[point]
        if call not in wanted:
            return None
        self.crash_point = None
        return point

    def crash(self) -> None:
        """Kill the incarnation where it stands (the simulator calls this)."""
        node, self.node = self.node, None
        self.crash_point = None
        self.disk.crash()
        if self.transport is not None:
            self.transport.dead = True
        if node is not None:
            if node.driver is not None:
                node.driver.halt()
            if node.requests is not None:
                # The process is gone: its clients' connections drop (outcome unknown).
                node.requests.fail_all("the node crashed")


class _DiskWatch:
    """How the simulator watches one node's disk: checks, trace, faults (``DiskObserver``)."""

    def __init__(self, node: SimNode) -> None:
        self.node = node

    def disk_fault(self, call: str) -> str | None:
        node = self.node
        fault = node.sim.nemesis.buggify(node, call)
        return fault or node.fault_due(call)

    def before_append(self, entries) -> None:
        node = self.node
        core = node.core
        leading = core.term if core is not None and core.role.value == "leader" else None
        node.sim.checker.before_append(node, entries, leading)

    def appended(self, entries) -> None:
        node = self.node
        node.sim.checker.on_persisted_entries(node, entries)
        node.sim.trace_entries(node, entries)

    def made_durable(self, durable) -> None:
        node = self.node
        node.sim.checker.on_hard_state(node, durable.hard_state)
        node.sim.checker.after_persist(node, durable)

    def crashed(self, where: str) -> None:
        self.node.sim.crash(self.node, where)

