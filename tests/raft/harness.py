"""A small in-memory cluster of RaftCores for scenario tests that read as stories.

Every node has a MemoryStorage, its own seeded ``random.Random`` and a toy state machine
(the list of applied command strings). Messages travel through one queue the test controls:

    c = Cluster(3)                     # n1, n2, n3 bootstrapped with the same configuration
    c.elect("n1")                      # campaign + stabilize
    c.propose("n1", "x=1"); c.stabilize()
    c.isolate("n3"); c.tick(n=30); c.heal()
    assert c.applied("n3") == ["x=1"]

``stabilize()`` follows the Ready contract exactly: persist (snapshot, entries, hard state),
then send (into the queue), then apply (snapshot, committed entries, read states), then
``advance``; and delivers messages until nothing is left to do. Messages across a cut link
or to a crashed node are dropped when delivered. ``hold(...)`` keeps matching messages in
flight until ``release()``; ``deliver(...)`` / ``drop(...)`` act on chosen messages.

``trace`` collects one readable line per event (messages sent and dropped, role changes,
persisted and applied ranges, test notes); the conftest prints it when a test fails.

Why this harness stays below the runtime's Ready driver (``keyval.runtime.driver``): these
tests are about the core alone, told as stories in which the test decides every message's
fate — hold this one, drop that one, deliver them in this order. The driver is asyncio code
that owns time (a tick task) and sends as soon as a Ready allows, which is what production
needs and what a scenario must not have. ``stabilize()`` is therefore the Ready contract in
its plainest synchronous form, with no early send, no fsync delay and no early apply — the
things the driver adds. The driver itself is exercised by the simulator, which runs every
simulated node's real ``keyval.runtime`` (``keyval/testing/simulator.py``), and by the node
tests over real processes.

The harness also checks Raft's safety properties on the fly and raises AssertionError:
at most one leader per term, state machines never disagree on an index, entries are applied
in order without gaps, and a ReadState is never below an index that was already committed
somewhere when the read was asked (linearizable reads).
"""
from __future__ import annotations

import builtins
import json
import random
from typing import Callable, Iterable

from keyval.raft import (
    Entry,
    EntryType,
    Membership,
    MemoryStorage,
    RaftConfig,
    RaftCore,
    ReadState,
    Ready,
    Role,
    Snapshot,
    bootstrap_state,
)
from keyval.raft import messages as m

#: Clusters built by the running test; the conftest prints their traces on failure.
CLUSTERS: list["Cluster"] = []

LEADER, FOLLOWER, CANDIDATE, PRE_CANDIDATE = Role.LEADER, Role.FOLLOWER, Role.CANDIDATE, Role.PRE_CANDIDATE


# ==========================================================================================
# Formatting
# ==========================================================================================
def _show(data: bytes) -> str:
    text = data.decode("utf-8", "replace")
    return text if len(text) <= 20 else text[:17] + "..."


def fmt_entries(entries: Iterable[Entry]) -> str:
    entries = list(entries)
    if not entries:
        return "[]"
    if len(entries) <= 4:
        parts = []
        for e in entries:
            kind = "cfg" if e.type is EntryType.CONFIG else ("noop" if not e.data else repr(_show(e.data)))
            parts.append(f"{e.index}@t{e.term}:{kind}")
        return "[" + " ".join(parts) + "]"
    terms = sorted({e.term for e in entries})
    span = f"t{terms[0]}" if len(terms) == 1 else f"t{terms[0]}-t{terms[-1]}"
    return f"[{entries[0].index}..{entries[-1].index} {span}]"


def fmt_msg(msg: m.Message) -> str:
    head = f"{msg.frm} -> {msg.to} "
    t = msg.term
    if isinstance(msg, m.AppendEntries):
        body = (f"AppendEntries term={t} prev=({msg.prev_index},t{msg.prev_term}) "
                f"entries={fmt_entries(msg.entries)} commit={msg.commit}")
    elif isinstance(msg, m.AppendResponse):
        if msg.reject:
            body = f"AppendResponse term={t} REJECT index={msg.index} hint=({msg.hint_index},t{msg.hint_term})"
        else:
            body = f"AppendResponse term={t} index={msg.index}"
    elif isinstance(msg, m.RequestVote):
        kind = "PreVote" if msg.pre_vote else "RequestVote"
        body = f"{kind} term={t} last=({msg.last_index},t{msg.last_term})" + (" transfer" if msg.transfer else "")
    elif isinstance(msg, m.VoteResponse):
        kind = "PreVoteResponse" if msg.pre_vote else "VoteResponse"
        body = f"{kind} term={t} {'granted' if msg.granted else 'REJECTED'}"
    elif isinstance(msg, m.Heartbeat):
        body = f"Heartbeat term={t} commit={msg.commit}" + (f" ctx={msg.context!r}" if msg.context else "")
    elif isinstance(msg, m.HeartbeatResponse):
        body = f"HeartbeatResponse term={t}" + (f" ctx={msg.context!r}" if msg.context else "")
    elif isinstance(msg, m.InstallSnapshot):
        body = (f"InstallSnapshot term={t} snap=({msg.meta.index},t{msg.meta.term}) "
                f"offset={msg.offset} len={len(msg.data)}" + (" done" if msg.done else ""))
    elif isinstance(msg, m.SnapshotResponse):
        flags = (" done" if msg.done else "") + (" REJECT" if msg.reject else "")
        body = f"SnapshotResponse term={t} snap={msg.snapshot_index} offset={msg.offset}{flags}"
    elif isinstance(msg, m.TimeoutNow):
        body = f"TimeoutNow term={t}"
    else:
        body = repr(msg)
    return head + body


def _span(entries) -> str:
    return f"{entries[0].index}..{entries[-1].index}" if entries else ""


# ==========================================================================================
# Message filters
# ==========================================================================================
Filter = Callable[[m.Message], bool]


def match(type=None, frm=None, to=None, where: Filter | None = None) -> Filter:
    """A message filter: ``type`` is a message class (or tuple) -- or a bare predicate --,
    ``frm``/``to`` a node id (or collection of ids), ``where`` any extra predicate."""

    if callable(type) and not isinstance(type, (builtins.type, tuple)):
        type, where = None, type  # a bare predicate: deliver(lambda msg: ...)

    def ids(x):
        return None if x is None else ({x} if isinstance(x, str) else set(x))

    frm_ids, to_ids = ids(frm), ids(to)

    def f(msg: m.Message) -> bool:
        return (
            (type is None or isinstance(msg, type))
            and (frm_ids is None or msg.frm in frm_ids)
            and (to_ids is None or msg.to in to_ids)
            and (where is None or where(msg))
        )

    return f


# ==========================================================================================
# One node: core + storage + toy state machine
# ==========================================================================================
class Node:
    def __init__(self, cluster: "Cluster", id: str, storage: MemoryStorage, config: RaftConfig) -> None:
        self.cluster = cluster
        self.id = id
        self.storage = storage
        self.config = config
        self.incarnation = 0
        self.core: RaftCore | None = None
        self.read_states: list[ReadState] = []
        self.dropped_reads: list[bytes] = []
        self.snapshots_restored = 0
        self.start()

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """(Re)start from what the storage holds; the state machine is rebuilt from the
        stored snapshot and then from the committed entries the core hands out again."""
        self.incarnation += 1
        seed = f"{self.cluster.seed}/{self.id}/{self.incarnation}"
        self.rng = random.Random(seed)
        self._restore_state_machine(self.storage.snapshot)
        self.core = RaftCore(self.config, self.storage, self.rng)
        self.last_soft: tuple | None = None

    def _restore_state_machine(self, snapshot: Snapshot) -> None:
        self.applied_index = snapshot.meta.index
        self.membership = snapshot.meta.membership
        self.data: list[str] = json.loads(snapshot.data)["data"] if snapshot.data else []

    def serialize(self) -> bytes:
        return json.dumps({"index": self.applied_index, "data": self.data}).encode()

    # -- the Ready contract ----------------------------------------------------------------
    def handle_ready(self) -> Ready:
        core, st, c = self.core, self.storage, self.cluster
        rd = core.ready()
        if rd.soft_state is not None:
            role, leader, term = rd.soft_state
            if self.last_soft is None or self.last_soft[0] != role:
                c.log_line(f"{self.id} is {role.value} at term {term}" + (f" (leader {leader})" if leader and role is not LEADER else ""))
            self.last_soft = rd.soft_state
            c.roles.append((self.id, role, term))
            if role is LEADER:
                other = c.leaders_by_term.setdefault(term, self.id)
                assert other == self.id, f"election safety: {other} and {self.id} both lead term {term}"
        # 1. persist: snapshot, entries, hard state
        parts = []
        if rd.snapshot is not None:
            st.apply_snapshot(rd.snapshot)
            parts.append(f"snapshot=({rd.snapshot.meta.index},t{rd.snapshot.meta.term})")
        if rd.entries:
            st.append(rd.entries)
            parts.append(f"entries={fmt_entries(rd.entries)}")
        if rd.hard_state is not None:
            st.set_hard_state(rd.hard_state)
            hs = rd.hard_state
            parts.append(f"hs=(term {hs.term}, vote {hs.vote or '-'}, commit {hs.commit})")
        if parts:
            c.log_line(f"{self.id} persists " + " ".join(parts))
        # 2. send
        for msg in rd.messages:
            c.send(msg)
        # 3. apply
        if rd.snapshot is not None:
            self._restore_state_machine(rd.snapshot)
            self.snapshots_restored += 1
            c.log_line(f"{self.id} restores snapshot at {rd.snapshot.meta.index}")
        for entry in rd.committed_entries:
            self._apply(entry)
        if rd.committed_entries:
            c.log_line(f"{self.id} applies {_span(rd.committed_entries)}")
        for rs in rd.read_states:
            c.log_line(f"{self.id} read state ctx={rs.context!r} index={rs.index}")
            floors = c.read_floors.get((self.id, rs.context))
            if floors:
                floor = floors.pop(0)
                assert rs.index >= floor, (
                    f"linearizability: {self.id} answers read {rs.context!r} at index {rs.index}, but "
                    f"index {floor} was already committed when the read was asked"
                )
        self.read_states.extend(rd.read_states)
        for ctx in rd.dropped_reads:
            c.log_line(f"{self.id} dropped read ctx={ctx!r}")
        self.dropped_reads.extend(rd.dropped_reads)
        # 4. advance
        core.advance(rd)
        # The core asked for a snapshot (its log grew past snapshot_threshold): take one.
        if rd.snapshot_request:
            c.compact(self.id)
        return rd

    def _apply(self, entry: Entry) -> None:
        assert entry.index == self.applied_index + 1, (
            f"{self.id} applied index {entry.index} right after {self.applied_index}"
        )
        seen = self.cluster.applied_at.setdefault(entry.index, entry)
        assert seen == entry, f"state machine safety: index {entry.index} applied as {seen} and as {entry}"
        self.applied_index = entry.index
        if entry.type is EntryType.CONFIG:
            self.membership = Membership.decode(entry.data)
        elif entry.data:
            self.data.append(entry.data.decode())


# ==========================================================================================
# The cluster
# ==========================================================================================
class Cluster:
    def __init__(self, size: int = 3, *, learners: Iterable[str] = (), seed: int = 0, **config) -> None:
        """``size`` voters n1..n{size} (plus ``learners``), all bootstrapped with the same
        configuration entry. ``config`` overrides RaftConfig fields for every node."""
        self.seed = seed
        self.config = {"election_tick": 10, "heartbeat_tick": 1, **config}
        self.nodes: dict[str, Node] = {}
        self.queue: list[m.Message] = []
        self.sent: list[m.Message] = []
        self.trace: list[str] = []
        self.cut_links: set[frozenset[str]] = set()
        self.holds: list[Filter] = []
        self.roles: list[tuple[str, Role, int]] = []
        self.leaders_by_term: dict[int, str] = {}
        self.applied_at: dict[int, Entry] = {}
        self.read_floors: dict[tuple[str, bytes], list[int]] = {}
        CLUSTERS.append(self)

        voters = [f"n{i}" for i in range(1, size + 1)]
        membership = Membership(voters=frozenset(voters), learners=frozenset(learners))
        hard_state, entries = bootstrap_state(membership)
        for id in voters + list(learners):
            storage = MemoryStorage()
            storage.append(entries)
            storage.set_hard_state(hard_state)
            self.nodes[id] = Node(self, id, storage, self._config_for(id))
        self.log_line(f"bootstrap voters={sorted(membership.voters)} learners={sorted(membership.learners)}")
        self.stabilize()

    def _config_for(self, id: str, **overrides) -> RaftConfig:
        return RaftConfig(id=id, **{**self.config, **overrides})

    # -- trace -----------------------------------------------------------------------------
    def log_line(self, line: str) -> None:
        self.trace.append(line)

    def note(self, text: str) -> None:
        """A line of narrative in the trace."""
        self.trace.append(f"# {text}")

    def format_trace(self, last: int | None = None) -> str:
        lines = self.trace if last is None else self.trace[-last:]
        skipped = len(self.trace) - len(lines)
        return (f"... ({skipped} earlier lines)\n" if skipped else "") + "\n".join(lines)

    # -- looking at nodes ------------------------------------------------------------------
    def node(self, id: str) -> Node:
        return self.nodes[id]

    def core(self, id: str) -> RaftCore:
        core = self.nodes[id].core
        assert core is not None, f"{id} is down"
        return core

    def ids(self) -> list[str]:
        return sorted(self.nodes, key=lambda i: (len(i), i))

    def live(self) -> list[str]:
        return [i for i in self.ids() if self.nodes[i].core is not None]

    def status(self, id: str):
        return self.core(id).status()

    def role(self, id: str) -> Role:
        return self.core(id).role

    def term(self, id: str) -> int:
        return self.core(id).term

    def commit(self, id: str) -> int:
        return self.core(id).log.committed

    def leader(self) -> str | None:
        """The live leader with the highest term (a stale, partitioned one may coexist)."""
        leaders = [i for i in self.live() if self.role(i) is LEADER]
        return max(leaders, key=self.term) if leaders else None

    def applied(self, id: str) -> list[str]:
        """The commands node ``id`` has applied, in order (no-ops and config entries left out)."""
        return list(self.nodes[id].data)

    def log(self, id: str) -> list[tuple[int, int]]:
        """(index, term) of every entry in the node's persisted log after its snapshot."""
        st = self.nodes[id].storage
        first, last = st.first_index(), st.last_index()
        return [(e.index, e.term) for e in st.entries(first, last + 1)] if last >= first else []

    def log_data(self, id: str) -> list[tuple[int, int, str]]:
        st = self.nodes[id].storage
        first, last = st.first_index(), st.last_index()
        ents = st.entries(first, last + 1) if last >= first else []
        return [(e.index, e.term, "cfg" if e.type is EntryType.CONFIG else e.data.decode()) for e in ents]

    def membership(self, id: str) -> Membership:
        return self.core(id).membership

    def read_states(self, id: str) -> list[ReadState]:
        return list(self.nodes[id].read_states)

    def dropped_reads(self, id: str) -> list[bytes]:
        return list(self.nodes[id].dropped_reads)

    def sent_messages(self, type=None, frm=None, to=None, where=None) -> list[m.Message]:
        """Every message ever sent (delivered or not) that matches."""
        f = match(type, frm, to, where)
        return [msg for msg in self.sent if f(msg)]

    def pending(self, type=None, frm=None, to=None, where=None) -> list[m.Message]:
        """Messages in flight that match."""
        f = match(type, frm, to, where)
        return [msg for msg in self.queue if f(msg)]

    # -- client and operator calls ---------------------------------------------------------
    def propose(self, id: str, data: str) -> tuple[int, int]:
        """Propose a command (not yet replicated: call stabilize())."""
        term, index = self.core(id).propose(data.encode())
        self.log_line(f"{id} proposes {data!r} -> index {index} term {term}")
        return term, index

    def replicate(self, id: str, *datas: str) -> list[int]:
        """Propose each command at ``id`` and stabilize; returns their indexes."""
        indexes = [self.propose(id, d)[1] for d in datas]
        self.stabilize()
        return indexes

    def propose_change(self, id: str, change) -> tuple[int, int]:
        term, index = self.core(id).propose_change(change)
        self.log_line(f"{id} proposes {change.kind.value} {change.node} -> index {index} term {term}")
        return term, index

    def transfer(self, id: str, target: str) -> None:
        self.log_line(f"{id} transfers leadership to {target}")
        self.core(id).transfer_leadership(target)

    def read_index(self, id: str, context: bytes) -> None:
        """Ask ``id`` for a linearizable read. The harness remembers the highest index any
        node knew committed at this moment: the ReadState must not be below it."""
        self.log_line(f"{id} read_index ctx={context!r}")
        self.core(id).read_index(context)
        self.read_floors.setdefault((id, context), []).append(self.max_commit())

    def max_commit(self) -> int:
        """The highest index known committed anywhere (live cores, persisted hard states)."""
        known = [n.storage.hard_state.commit for n in self.nodes.values()]
        known += [self.commit(i) for i in self.live()]
        return max(known)

    def campaign(self, id: str) -> None:
        """``id`` starts an election; its Ready is processed, nothing is delivered."""
        self.log_line(f"{id} campaigns")
        self.core(id).campaign()
        self.process(id)

    def elect(self, id: str) -> None:
        """``id`` campaigns, then everything settles; ``id`` must have won."""
        self.campaign(id)
        self.stabilize()
        assert self.role(id) is LEADER, f"{id} did not win: it is {self.role(id).value} at term {self.term(id)}"

    def step(self, id: str, msg: m.Message) -> None:
        """Hand ``msg`` straight to node ``id`` (for hand-made messages), then process its Ready."""
        self.log_line(f"inject {fmt_msg(msg)}")
        self.core(id).step(msg)
        self.process(id)

    # -- time ------------------------------------------------------------------------------
    def tick(self, ids: str | Iterable[str] | None = None, n: int = 1, settle: bool = True) -> None:
        """``n`` rounds of: tick every node in ``ids`` (default: all live nodes) once, then
        stabilize (unless ``settle`` is False)."""
        ids = self.live() if ids is None else ([ids] if isinstance(ids, str) else list(ids))
        self.log_line(f"tick {','.join(ids)} x{n}")
        for _ in range(n):
            for id in ids:
                if self.nodes[id].core is not None:
                    self.core(id).tick()
            if settle:
                self.stabilize()
            else:
                for id in ids:
                    if self.nodes[id].core is not None:
                        self.process(id)

    def tick_until(self, cond: Callable[[], bool], ids=None, limit: int = 500) -> int:
        """Tick (and stabilize) round by round until ``cond()``; returns the rounds taken."""
        for rounds in range(1, limit + 1):
            self.tick(ids)
            if cond():
                return rounds
        raise AssertionError(f"condition not reached after {limit} ticks")

    # -- failures --------------------------------------------------------------------------
    def cut(self, a: str, b: str) -> None:
        self.cut_links.add(frozenset((a, b)))

    def isolate(self, id: str) -> None:
        self.log_line(f"isolate {id}")
        for other in self.nodes:
            if other != id:
                self.cut_links.add(frozenset((id, other)))

    def partition(self, *groups: Iterable[str]) -> None:
        """Cut every link between nodes of different groups."""
        groups = [set(g) for g in groups]
        self.log_line("partition " + " | ".join(",".join(sorted(g)) for g in groups))
        for i, g in enumerate(groups):
            for h in groups[i + 1 :]:
                for a in g:
                    for b in h:
                        self.cut_links.add(frozenset((a, b)))

    def heal(self) -> None:
        self.log_line("heal")
        self.cut_links.clear()

    def crash(self, id: str) -> None:
        """The process dies: whatever the core holds that was not persisted is lost."""
        self.log_line(f"crash {id}")
        self.nodes[id].core = None

    def restart(self, id: str) -> None:
        """A new RaftCore on the same storage: only what was persisted survives."""
        node = self.nodes[id]
        assert node.core is None, f"{id} is running"
        node.start()
        hs = node.storage.hard_state
        self.log_line(f"restart {id} from hs=(term {hs.term}, vote {hs.vote or '-'}, commit {hs.commit}) "
                      f"last index {node.storage.last_index()}")

    def add_node(self, id: str, **config) -> None:
        """A new, uninitialised process with empty storage (it learns everything from a leader)."""
        self.log_line(f"add node {id} (empty storage)")
        self.nodes[id] = Node(self, id, MemoryStorage(), self._config_for(id, **config))

    def compact(self, id: str) -> Snapshot:
        """Snapshot ``id``'s state machine at its applied index and compact the log below it."""
        node = self.nodes[id]
        snap = node.storage.create_snapshot(node.applied_index, node.membership, node.serialize())
        node.storage.compact(node.applied_index)
        self.log_line(f"{id} snapshots at {snap.meta.index} ({len(snap.data)} bytes) and compacts its log")
        return snap

    # -- the message queue -----------------------------------------------------------------
    def send(self, msg: m.Message) -> None:
        self.sent.append(msg)
        self.queue.append(msg)
        self.log_line(fmt_msg(msg))

    def hold(self, type=None, frm=None, to=None, where=None) -> None:
        """Keep matching messages in flight (stabilize won't deliver them) until release()."""
        self.holds.append(match(type, frm, to, where))

    def release(self) -> None:
        self.holds.clear()

    def _held(self, msg: m.Message) -> bool:
        return any(h(msg) for h in self.holds)

    def _deliver_one(self, msg: m.Message) -> None:
        self.queue.remove(msg)
        node = self.nodes.get(msg.to)
        if frozenset((msg.frm, msg.to)) in self.cut_links:
            self.log_line(f"  dropped (partition): {fmt_msg(msg)}")
        elif node is None or node.core is None:
            self.log_line(f"  dropped ({msg.to} down): {fmt_msg(msg)}")
        else:
            node.core.step(msg)

    def deliver(self, type=None, frm=None, to=None, where=None, process: bool = True) -> int:
        """Deliver the matching messages now in flight (held ones too), then process the
        Readies (so replies are queued, not delivered). Returns how many were delivered."""
        f = match(type, frm, to, where)
        batch = [msg for msg in self.queue if f(msg)]
        for msg in batch:
            self._deliver_one(msg)
        if process:
            self.process_all()
        return len(batch)

    def drop(self, type=None, frm=None, to=None, where=None) -> int:
        """Lose the matching messages now in flight."""
        f = match(type, frm, to, where)
        batch = [msg for msg in self.queue if f(msg)]
        for msg in batch:
            self.queue.remove(msg)
            self.log_line(f"  lost: {fmt_msg(msg)}")
        return len(batch)

    def duplicate(self, type=None, frm=None, to=None, where=None) -> int:
        """The network delivers the matching in-flight messages twice: queue a copy of each."""
        f = match(type, frm, to, where)
        batch = [msg for msg in self.queue if f(msg)]
        for msg in batch:
            self.queue.append(msg)
            self.log_line(f"  duplicated: {fmt_msg(msg)}")
        return len(batch)

    def reverse(self) -> None:
        """The network reorders: everything in flight will arrive in reverse order."""
        self.queue.reverse()
        self.log_line("  (messages in flight reordered)")

    def process(self, id: str) -> bool:
        """Handle node ``id``'s Readies until it has none."""
        core = self.nodes[id].core
        did = False
        while core is not None and core.has_ready():
            self.nodes[id].handle_ready()
            did = True
        return did

    def process_all(self) -> bool:
        did = False
        for id in self.live():
            did |= self.process(id)
        return did

    def stabilize(self, limit: int = 10_000) -> None:
        """Process Readies and deliver messages (except held ones) until all is quiet."""
        for _ in range(limit):
            did = self.process_all()
            batch = [msg for msg in self.queue if not self._held(msg)]
            for msg in batch:
                self._deliver_one(msg)
            if not did and not batch:
                return
        raise AssertionError(f"cluster did not stabilize within {limit} rounds")
