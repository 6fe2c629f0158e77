"""Raft's safety properties and the core's invariants, checked while the simulation runs.

Figure 3 of the Raft paper lists the properties; each has a cheap incremental check here:

* Election Safety — at most one leader per term, over the whole run (``leader_of_term``);
  also, a node grants at most one vote per term (watched on the wire), and only the leader
  of a term sends appends, heartbeats and snapshots in that term.
* Log Matching — every (index, term) ever persisted anywhere must hold the same entry *and*
  follow the same previous term. By induction on the index that is exactly "same index and
  term => identical prefixes", at O(1) per persisted entry. ``full_check`` also compares the
  live logs (storage + unstable) pairwise, every few hundred steps and at the end.
* Leader Completeness — an entry known committed (some node applied it) in a term T is in
  the log of every leader of a term > T, at the same index, unless that leader compacted it.
  The commit term is over-estimated by the term of the node that first reported the commit
  (sound: it only ever checks fewer leaders).
* State Machine Safety — one entry per index over all applies, and the same key-value state
  after each index on every node (snapshots included).
* Core invariants — applied <= commit <= last index; term, vote and commit never go back
  (in memory within one incarnation, and in the persisted hard state across restarts).
* The Ready contract, as the runtime keeps it — an entry is applied only once it is durable
  on the node applying it; the core never counts as durable ("stable") an entry the disk does
  not hold durably; a persisted commit index never exceeds the persisted log.
* Exactly-once writes — a client's write (client, seq) takes effect at one log index only,
  however often it was retried.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from keyval.raft import NONE, Compacted, Entry, HardState, Role, Snapshot, Unavailable
from keyval.raft import messages as m

if TYPE_CHECKING:
    from .sim_node import SimNode
    from .simulator import Simulation

#: Run the pairwise log comparison every this many steps (and once at the end).
FULL_CHECK_EVERY = 400


class SafetyViolation(AssertionError):
    """A Raft safety property, an invariant of the core, or liveness was broken."""

    def __init__(self, message: str, kind: str = "safety") -> None:
        super().__init__(message)
        self.kind = kind


class SafetyChecker:
    def __init__(self, sim: "Simulation") -> None:
        self.sim = sim
        self.leader_of_term: dict[int, str] = {}
        self.vote_of: dict[tuple[str, int], str] = {}  # (voter, term) -> candidate granted
        #: (index, term) -> (type, data, term of the previous entry or None if compacted)
        self.entry_at: dict[tuple[int, int], tuple] = {}
        self.applied: dict[int, Entry] = {}
        self.max_applied = 0
        self.state_at: dict[int, str] = {}  # index -> key-value state right after it
        self.commit_term: dict[int, int] = {}  # index -> upper bound of the term that committed it
        self._commit_seen: dict[str, int] = {}  # node -> highest commit folded into commit_term
        self._persisted: dict[str, HardState] = {}
        self._memory: dict[str, tuple[int, str]] = {}  # node -> (term, vote) this incarnation
        #: (leader, term) -> highest applied index checked for Leader Completeness
        self._completeness: dict[tuple[str, int], int] = {}
        self._steps = 0
        #: (client, seq) -> the index at which that write took effect
        self.effect_of: dict[tuple[str, int], int] = {}

    def fail(self, message: str, kind: str = "safety") -> None:
        violation = SafetyViolation(message, kind)
        # Recorded first: raised inside the runtime, it is caught there (and the node stops).
        if self.sim.violation is None:
            self.sim.violation = violation
        raise violation

    # -- called from the Ready pipeline -------------------------------------------------------
    def on_send(self, msg: m.Message) -> None:
        if isinstance(msg, m.VoteResponse) and msg.granted and not msg.pre_vote:
            key = (msg.frm, msg.term)
            before = self.vote_of.setdefault(key, msg.to)
            if before != msg.to:
                self.fail(
                    f"Election Safety (one vote per term): {msg.frm} granted its term-{msg.term} "
                    f"vote to {before} and then to {msg.to}"
                )
        elif isinstance(msg, (m.AppendEntries, m.Heartbeat, m.InstallSnapshot)):
            leader = self.leader_of_term.get(msg.term)
            if leader is not None and leader != msg.frm:
                self.fail(
                    f"Election Safety: {msg.frm} sent {type(msg).__name__} in term {msg.term}, "
                    f"whose leader is {leader}"
                )

    def before_append(self, node: "SimNode", entries: tuple[Entry, ...], leading: int | None) -> None:
        """What the append is about to overwrite: never a committed entry, and never an entry
        of the term ``leading`` when the Ready was made by the leader of that term (Leader
        Append-Only)."""
        storage = node.storage
        commit = node.disk.durable.hard_state.commit
        for entry in entries:
            if entry.index > storage.last_index():
                break
            try:
                held = storage.term(entry.index)
            except Compacted:
                continue
            if held == entry.term:
                continue
            if entry.index <= commit:
                self.fail(
                    f"{node.id}: a Ready overwrites committed entry {entry.index}/t{held} "
                    f"(persisted commit {commit}) with {entry.index}/t{entry.term}"
                )
            if held == leading:
                self.fail(
                    f"Leader Append-Only: {node.id}, leader of term {leading}, overwrites its own "
                    f"entry {entry.index}/t{held} with {entry.index}/t{entry.term}"
                )
            break  # everything after the first conflict is replaced anyway

    def after_persist(self, node: "SimNode", durable) -> None:
        if durable.hard_state.commit > durable.last_index():
            self.fail(
                f"{node.id}: persisted commit {durable.hard_state.commit} is beyond the persisted log "
                f"(last index {durable.last_index()}): a restart could not honour it"
            )

    def on_persisted_entries(self, node: "SimNode", entries: tuple[Entry, ...]) -> None:
        storage = node.storage
        base = storage.snapshot_meta().index
        for entry in entries:
            if entry.index <= base:
                continue  # covered by the snapshot: storage skipped it
            try:
                prev_term = storage.term(entry.index - 1)
            except (Compacted, Unavailable):
                prev_term = None
            mine = (entry.type, entry.data, prev_term)
            key = (entry.index, entry.term)
            seen = self.entry_at.setdefault(key, mine)
            if seen != mine:
                if seen[:2] == mine[:2] and None in (seen[2], prev_term):
                    if prev_term is not None:
                        self.entry_at[key] = mine  # learn the previous term we did not know
                    continue
                self.fail(
                    f"Log Matching: {node.id} persisted entry {entry.index}/t{entry.term} as "
                    f"{_describe(mine)}, but another log holds {_describe(seen)} at the same index and term"
                )

    def on_hard_state(self, node: "SimNode", hs: HardState) -> None:
        prev = self._persisted.get(node.id)
        if prev == hs:
            return
        if prev is not None:
            if hs.term < prev.term:
                self.fail(f"{node.id}: persisted term went back from {prev.term} to {hs.term}")
            if hs.term == prev.term and prev.vote != NONE and hs.vote != prev.vote:
                self.fail(
                    f"{node.id}: persisted vote changed within term {hs.term}: {prev.vote} -> {hs.vote or 'none'}"
                )
            if hs.commit < prev.commit:
                self.fail(f"{node.id}: persisted commit went back from {prev.commit} to {hs.commit}")
        self._persisted[node.id] = hs

    def on_disk_loss(self, node: "SimNode") -> None:
        """The nemesis damaged the node's disk: its persisted commit fell with the log, which
        is the damage, not a bug of the node (Leader Completeness and the rest still hold it
        to account for what it does next)."""
        self._persisted[node.id] = node.disk.durable.hard_state

    def before_apply(self, node: "SimNode", entry: Entry) -> None:
        """The Ready contract: persist, then apply — never an entry this node's disk does not
        hold durably (one compacted into a durable snapshot is held)."""
        durable = node.disk.durable
        if entry.index < durable.first_index():
            return
        held = durable.term(entry.index) if entry.index <= durable.last_index() else None
        if held != entry.term:
            self.fail(
                f"Ready contract: {node.id} applies {_describe_entry(entry)} before it is durable "
                f"(its disk holds {'nothing' if held is None else f'term {held}'} there durably; "
                f"durable log {durable.first_index()}..{durable.last_index()})"
            )

    def took_effect(self, node: "SimNode", entry: Entry, session: tuple[str, int] | None) -> None:
        """Exactly-once: a client's numbered write changes the state at one index only."""
        if session is None:
            return
        first = self.effect_of.setdefault(session, entry.index)
        if first != entry.index:
            self.fail(
                f"Exactly-once: write #{session[1]} of client {session[0]} took effect at index {first} "
                f"and again at index {entry.index} (on {node.id})"
            )

    def on_apply(self, node: "SimNode", entry: Entry) -> None:
        seen = self.applied.setdefault(entry.index, entry)
        if seen != entry:
            self.fail(
                f"State Machine Safety: {node.id} applied {_describe_entry(entry)} at index "
                f"{entry.index}, but {_describe_entry(seen)} was applied there before"
            )
        if entry.index > self.max_applied:
            self.max_applied = entry.index
        self._same_state(node, entry.index)

    def on_apply_snapshot(self, node: "SimNode", snap: Snapshot) -> None:
        meta = snap.meta
        seen = self.applied.get(meta.index)
        if seen is not None and seen.term != meta.term:
            self.fail(
                f"State Machine Safety: {node.id} installed a snapshot @{meta.index}/t{meta.term}, "
                f"but {_describe_entry(seen)} was applied at that index"
            )
        self._same_state(node, meta.index)

    def _same_state(self, node: "SimNode", index: int) -> None:
        digest = node.kv_digest()
        seen = self.state_at.setdefault(index, digest)
        if seen != digest:
            self.fail(
                f"State Machine Safety: after index {index}, {node.id}'s key-value state is {digest} "
                f"but another node had {seen}"
            )

    def on_restart(self, node: "SimNode") -> None:
        core = node.core
        hs = node.disk.durable.hard_state
        if (core.term, core.vote) != (hs.term, hs.vote):
            self.fail(f"{node.id}: restarted at term {core.term}/vote {core.vote!r}, persisted {hs}")
        self._memory[node.id] = (core.term, core.vote)

    def _check_stable(self, nid: str, node: "SimNode") -> None:
        """What the core treats as durable (its stable log, which a leader counts toward
        commitment) is durable on the disk."""
        log, durable = node.core.log, node.disk.durable
        if log.pending_snapshot is not None:
            return  # a received snapshot the next Ready persists: the core knows it is not durable
        stable = log.persisted_index()
        if stable < durable.first_index():
            return
        held = durable.term(stable) if stable <= durable.last_index() else None
        if held != log.term_or_none(stable):
            self.fail(
                f"Ready contract: {nid}'s core holds entry {stable}/t{log.term_or_none(stable)} as durable, "
                f"but its disk holds {'nothing' if held is None else f'term {held}'} there durably"
            )

    # -- after every step -------------------------------------------------------------------
    def after_step(self) -> bool:
        """Run every per-step check; returns whether some live node is leader."""
        self._steps += 1
        any_leader = False
        for nid, node in self.sim.nodes.items():  # insertion order: deterministic
            core = node.core
            if core is None:
                continue
            log = core.log
            applied, committed, last = log.applied, log.committed, log.last_index()
            if not applied <= committed <= last:
                self.fail(f"{nid}: applied {applied} <= commit {committed} <= last index {last} does not hold")
            if node.applied > committed:
                self.fail(f"{nid}: state machine applied {node.applied} beyond commit {committed}")
            self._check_stable(nid, node)
            term, vote = core.term, core.vote
            prev = self._memory.get(nid)
            if prev is not None and prev != (term, vote):
                if term < prev[0]:
                    self.fail(f"{nid}: term went back from {prev[0]} to {term}")
                if term == prev[0] and prev[1] != NONE:
                    self.fail(f"{nid}: vote changed within term {term}: {prev[1]} -> {vote or 'none'}")
            self._memory[nid] = (term, vote)
            seen = self._commit_seen.get(nid, 0)
            if committed > seen:
                ct = self.commit_term
                for index in range(seen + 1, committed + 1):
                    if ct.get(index, term + 1) > term:
                        ct[index] = term
                self._commit_seen[nid] = committed
            if core.role is Role.LEADER:
                any_leader = True
                who = self.leader_of_term.setdefault(term, nid)
                if who != nid:
                    self.fail(f"Election Safety: {who} and {nid} were both leaders of term {term}")
                self._check_completeness(node)
        if self._steps % FULL_CHECK_EVERY == 0:
            self.check_logs_pairwise()
        return any_leader

    def _check_completeness(self, node: "SimNode") -> None:
        core = node.core
        key = (node.id, core.term)
        done = self._completeness.get(key, 0)
        if done >= self.max_applied:
            return
        first = core.log.first_index()
        for index in range(max(done + 1, first - 1), self.max_applied + 1):
            entry = self.applied.get(index)
            if entry is None or self.commit_term.get(index, core.term) >= core.term:
                continue
            have = core.log.term_or_none(index)
            if have != entry.term:
                where = "nothing" if have is None else f"an entry of term {have}"
                self.fail(
                    f"Leader Completeness: {node.id}, leader of term {core.term}, has {where} at index "
                    f"{index}, where {_describe_entry(entry)} was committed by term "
                    f"{self.commit_term.get(index)} (log {core.log.first_index()}..{core.log.last_index()})"
                )
        # Entries that become known committed later are checked on a later step.
        self._completeness[key] = self.max_applied

    def check_logs_pairwise(self) -> None:
        """Log Matching over the live logs (storage plus unstable tail), every pair of nodes."""
        live = [(nid, node.core.log) for nid, node in sorted(self.sim.nodes.items()) if node.core is not None]
        for i, (a, la) in enumerate(live):
            for b, lb in live[i + 1 :]:
                lo = max(la.first_index(), lb.first_index())
                hi = min(la.last_index(), lb.last_index())
                top = hi
                while top >= lo and la.term_or_none(top) != lb.term_or_none(top):
                    top -= 1
                if top < lo:
                    continue
                ea, eb = la.slice(lo, top + 1), lb.slice(lo, top + 1)
                if ea != eb:
                    bad = next(x for x, y in zip(ea, eb) if x != y)
                    other = eb[ea.index(bad)]
                    self.fail(
                        f"Log Matching: {a} and {b} agree on entry {top}/t{la.term(top)} but differ at "
                        f"{bad.index}: {_describe_entry(bad)} vs {_describe_entry(other)}"
                    )


def _describe(rec: tuple) -> str:
    etype, data, prev = rec
    return f"{etype.name} {data[:60]!r} after term {prev}"


def _describe_entry(entry: Entry) -> str:
    return f"{entry.index}/t{entry.term} {entry.type.name} {entry.data[:60]!r}"
