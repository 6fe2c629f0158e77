"""The membership policy: who is caught up, who gets promoted, which changes are safe.

``MembershipManager`` is pure: it takes the leader's view of the members (as ``Member``
values or the interface's member objects) and answers questions; it never changes
anything. The runtime (``keyval.cluster.operations``) asks it before every change and acts
on the answer; kvctl can ask it too, from ``cluster members --json``.

Every ``check_*`` method either returns ``None`` (go ahead), returns a note saying the
change is already in place (an idempotent success: say so and change nothing), or raises
``MembershipRefused`` with one sentence an operator can act on.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Iterable, Mapping

from keyval.ops.admin import OperationRefused
from keyval.raft.quorum import majority

VOTER = "Voter"
LEARNER = "Learner"
DEFAULT_CATCHUP_THRESHOLD = 100
#: A member the leader has not heard from for this long is unhealthy (seconds).
DEFAULT_CONTACT_TIMEOUT = 2.0
#: A follower this many entries behind the leader is reported as lagging.
DEFAULT_MAX_LAG = 1000
#: A member (voter or learner) behind the leader whose replication made no progress for this
#: long is stuck (seconds).
DEFAULT_STUCK_AFTER = 10.0


class MembershipRefused(OperationRefused):
    """A membership change or transfer the policy will not allow; the message says why."""


@dataclass(frozen=True, slots=True)
class Member:
    id: str
    type: str = VOTER
    match_index: int = 0
    #: seconds since the leader last heard from it; None: not since this leader took over
    last_contact: float | None = None
    is_leader: bool = False
    peer_address: str = ""
    bytes_replicated: int = 0
    #: per-member overrides recorded by `kvctl cluster add` (None: the manager's own); member
    #: objects carry it only when it was set (``effective_catchup_threshold`` is not one)
    catchup_threshold: int | None = None
    auto_promote: bool | None = None
    #: seconds its replication has made no progress while it was behind (None: not behind)
    stalled_for: float | None = None
    #: appends it rejected under this leader, and seconds since the last (None: none)
    append_rejections: int = 0
    last_rejection: float | None = None
    #: non-zero while it re-fetches entries it lost on disk, up to this index: it is then not
    #: counted toward commits (keyval.raft.core: recovering_to)
    recovering_to: int = 0

    @property
    def voter(self) -> bool:
        return self.type == VOTER

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> "Member":
        """From an interface member object (``cluster members --json``); extra keys ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in known})


class MembershipManager:
    """The leader's membership policy.

    ``members``: the leader's view, ``Member`` values or member objects (dicts). The leader's
    last log index is the leader member's match index unless ``last_index`` is given.
    """

    def __init__(
        self,
        members: Iterable[Member | Mapping[str, Any]],
        catchup_threshold: int = DEFAULT_CATCHUP_THRESHOLD,
        *,
        last_index: int | None = None,
        auto_promote: bool = True,
        min_voters: int = 1,
        contact_timeout: float = DEFAULT_CONTACT_TIMEOUT,
    ) -> None:
        if catchup_threshold < 0:
            raise ValueError("catchup_threshold must be >= 0")
        if min_voters < 1:
            raise ValueError("min_voters must be >= 1")
        self.members: dict[str, Member] = {}
        for m in members:
            member = m if isinstance(m, Member) else Member.from_dict(m)
            self.members[member.id] = member
        self.catchup_threshold = catchup_threshold
        self.auto_promote = auto_promote
        self.min_voters = min_voters
        self.contact_timeout = contact_timeout
        leader = self.leader
        if last_index is None:
            last_index = self.members[leader].match_index if leader else max(
                (m.match_index for m in self.members.values()), default=0)
        self.last_index = last_index

    # -- facts -----------------------------------------------------------------------------
    @property
    def leader(self) -> str | None:
        return next((m.id for m in self.members.values() if m.is_leader), None)

    @property
    def voters(self) -> list[str]:
        return sorted(m.id for m in self.members.values() if m.voter)

    @property
    def learners(self) -> list[str]:
        return sorted(m.id for m in self.members.values() if not m.voter)

    @property
    def quorum(self) -> int:
        return majority(len(self.voters))

    def lag(self, node: str) -> int:
        return max(0, self.last_index - self.members[node].match_index)

    def threshold_for(self, node: str, override: int | None = None) -> int:
        if override is not None:
            return override
        own = self.members[node].catchup_threshold
        return self.catchup_threshold if own is None else own

    def healthy(self, node: str) -> bool:
        m = self.members[node]
        return m.is_leader or (m.last_contact is not None and m.last_contact <= self.contact_timeout)

    def counts_toward_quorum(self, node: str) -> bool:
        """Healthy, and not re-fetching entries it lost: the leader counts its acknowledgements."""
        return self.healthy(node) and not self.members[node].recovering_to

    def caught_up(self, node: str, threshold: int | None = None) -> bool:
        """Within the threshold of the leader's last index — and heard from at least once
        (a match index of 0 means the leader does not know where its log stands yet)."""
        m = self.members[node]
        if m.is_leader:
            return True
        return m.match_index > 0 and self.lag(node) <= self.threshold_for(node, threshold)

    def stuck(self, node: str, stuck_after: float = DEFAULT_STUCK_AFTER) -> str | None:
        """Why ``node`` is stuck — behind the leader, and its replication has not moved for
        ``stuck_after`` seconds although the leader reaches it — or None. A follower that
        keeps rejecting appends never moves, so it is caught here too; the rejections it
        made while stalled are named."""
        m = self.members[node]
        if m.is_leader or m.stalled_for is None or m.stalled_for < stuck_after or self.lag(node) == 0:
            return None
        if not self.healthy(node):
            return None  # unreachable, which says more
        kind = "Member" if m.voter else "Learner"
        why = f"{kind} {node} is stuck: {self.lag(node)} entries behind, no replication progress for {m.stalled_for:.0f}s"
        if m.append_rejections and m.last_rejection is not None and m.last_rejection <= m.stalled_for:
            why += f" (rejected {m.append_rejections} appends, the last {m.last_rejection:.1f}s ago)"
        return why

    def promotion_candidates(self) -> list[str]:
        """Learners to promote now: caught up, healthy, and auto-promotion on for them."""
        out = []
        for node in self.learners:
            own = self.members[node].auto_promote
            if (self.auto_promote if own is None else own) and self.healthy(node) and self.caught_up(node):
                out.append(node)
        return out

    def best_transfer_target(self, exclude: Iterable[str] = ()) -> str | None:
        """The healthy voter (other than the leader and ``exclude``) closest to the leader."""
        skip = set(exclude)
        ranked = sorted((self.lag(n), n) for n in self.voters
                        if n not in skip and not self.members[n].is_leader and self.healthy(n))
        return ranked[0][1] if ranked else None

    # -- checks ----------------------------------------------------------------------------
    def _member(self, node: str, doing: str) -> Member:
        m = self.members.get(node)
        if m is None:
            known = ", ".join(sorted(self.members)) or "none"
            raise MembershipRefused(f"cannot {doing} {node}: it is not a member of the cluster (members: {known})")
        return m

    def _contact(self, node: str) -> str:
        m = self.members[node]
        if m.last_contact is None:
            where = f" at {m.peer_address}" if m.peer_address else ""
            return f"the leader has not reached it (is it running{where}?)"
        return f"the leader last heard from it {m.last_contact:.1f}s ago"

    def check_add(self, node: str, address: str) -> str | None:
        m = self.members.get(node)
        if m is not None:
            if m.peer_address and m.peer_address != address:
                raise MembershipRefused(f"cannot add {node} at {address}: it is already a member at "
                                        f"{m.peer_address}; remove it first to add it at another address")
            return f"{node} is already a {m.type.lower()} at {m.peer_address or address}"
        for other in self.members.values():
            if other.peer_address == address:
                raise MembershipRefused(f"cannot add {node} at {address}: member {other.id} already uses that address")
        return None

    def check_promote(self, node: str, threshold: int | None = None) -> str | None:
        m = self.members.get(node)
        if m is None:
            raise MembershipRefused(f"cannot promote {node}: it is not a member; add it as a learner first "
                                    f"(kvctl cluster add {node} HOST:PORT)")
        if m.voter:
            return f"{node} is already a voter"
        limit = self.threshold_for(node, threshold)
        if not self.caught_up(node, threshold):
            reached = "" if m.match_index > 0 and m.last_contact is not None else f"; {self._contact(node)}"
            raise MembershipRefused(
                f"cannot promote {node}: it has not caught up, {self.lag(node)} entries behind the leader "
                f"(match index {m.match_index} of {self.last_index}; caught up means within {limit}){reached}")
        if not self.healthy(node):
            raise MembershipRefused(f"cannot promote {node}: {self._contact(node)}")
        return None

    def check_remove(self, node: str, *, force: bool = False) -> str | None:
        """Learners go freely. A voter may go unless it is the last one, the voters would
        drop below ``min_voters``, or the remaining voters would lack a healthy quorum. The
        leader goes only with ``force`` (the caller transfers leadership first)."""
        m = self._member(node, "remove")
        if not m.voter:
            return None
        voters = self.voters
        if voters == [node]:
            raise MembershipRefused(f"cannot remove {node}: it is the last voting member of the cluster")
        remaining = [v for v in voters if v != node]
        if len(remaining) < self.min_voters:
            raise MembershipRefused(
                f"cannot remove {node}: the cluster would have {len(remaining)} voter(s), below the "
                f"configured minimum of {self.min_voters} (min_voters)")
        healthy = [v for v in remaining if self.counts_toward_quorum(v)]
        need = majority(len(remaining))
        if len(healthy) < need:
            sick = ", ".join(v for v in remaining if v not in healthy)
            raise MembershipRefused(
                f"cannot remove {node}: of the {len(remaining)} voters that would remain only {len(healthy)} "
                f"are healthy ({sick} not), and they need {need} for a quorum; bring {sick} back first")
        if m.is_leader:
            target = self.best_transfer_target(exclude=[node])
            if not force:
                hint = f"kvctl cluster transfer {target}" if target else "kvctl cluster transfer ID"
                raise MembershipRefused(f"cannot remove {node}: it is the leader; transfer leadership first "
                                        f"({hint}) or use `kvctl cluster remove {node} --force`")
            if target is None:
                raise MembershipRefused(f"cannot remove {node}: it is the leader and no other voter is healthy "
                                        f"enough to take over")
        return None

    def check_transfer(self, node: str) -> str | None:
        m = self._member(node, "transfer leadership to")
        if m.is_leader:
            return f"{node} is already the leader"
        if not m.voter:
            raise MembershipRefused(f"cannot transfer leadership to {node}: it is a learner; only a voter can "
                                    f"become leader (promote it first)")
        if not self.healthy(node):
            raise MembershipRefused(f"cannot transfer leadership to {node}: it is not healthy; {self._contact(node)}")
        limit = self.threshold_for(node)
        if self.lag(node) > limit:
            raise MembershipRefused(f"cannot transfer leadership to {node}: it is {self.lag(node)} entries behind "
                                    f"the leader (more than {limit}); wait for it to catch up")
        return None

    # -- health ----------------------------------------------------------------------------
    def health(self, max_lag: int = DEFAULT_MAX_LAG, stuck_after: float = DEFAULT_STUCK_AFTER) -> dict[str, Any]:
        """The interface's ``cluster health`` object, as seen by this (the leader's) view."""
        issues: list[str] = []
        stuck_members: list[str] = []
        voters = self.voters
        healthy_voters = [v for v in voters if self.counts_toward_quorum(v)]
        quorum_available = len(healthy_voters) >= self.quorum
        if not quorum_available:
            issues.append(f"Quorum lost: only {len(healthy_voters)} of {len(voters)} voters are healthy "
                          f"(a quorum needs {self.quorum})")
        for node in sorted(self.members):
            m = self.members[node]
            if m.is_leader:
                continue
            if not self.healthy(node):
                if m.voter:
                    issues.append(f"Member {node} is unreachable: {self._contact(node)}")
                else:
                    issues.append(f"Learner {node} is stuck: {self._contact(node)}")
            elif m.recovering_to:
                issues.append(f"{'Member' if m.voter else 'Learner'} {node} lost entries on disk and is re-fetching "
                              f"them: {self.lag(node)} entries behind, up to index {m.recovering_to} to go; not "
                              f"counted toward commits until it holds them")
            elif stuck := self.stuck(node, stuck_after):
                issues.append(stuck)
                stuck_members.append(node)
            elif m.voter and self.lag(node) > max_lag:
                issues.append(f"Follower {node} is lagging: {self.lag(node)} entries behind the leader "
                              f"(threshold {max_lag})")
        return {
            "healthy": not issues,
            "leader": self.leader,
            "quorum_available": quorum_available,
            "healthy_members": sum(self.healthy(n) for n in self.members),
            "total_members": len(self.members),
            "voters": len(voters),
            "healthy_voters": len(healthy_voters),
            "quorum": self.quorum,
            "issues": issues,
            # beyond the interface's minimum: members reachable but not replicating
            "stuck": stuck_members,
            "stuck_after": stuck_after,
        }
