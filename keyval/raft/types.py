"""Values the Raft core takes in and hands out.

Everything here is an immutable value: the core never shares mutable state with its caller.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum, IntEnum

from .quorum import majority

NodeId = str
#: ``vote`` / ``leader`` value meaning "nobody".
NONE: NodeId = ""


class Role(Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class EntryType(IntEnum):
    NORMAL = 0
    #: data is an encoded :class:`Membership`; takes effect as soon as it is appended.
    CONFIG = 1


@dataclass(frozen=True, slots=True)
class Entry:
    term: int
    index: int
    type: EntryType = EntryType.NORMAL
    #: Opaque to the core for NORMAL entries. An empty NORMAL entry is a leader's no-op.
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be durable before any message that depends on it is sent.

    term and vote are persisted together, in one atomic write: a vote is never cleared
    within a term, so a restarted node cannot vote twice in the same term.
    """

    term: int = 0
    vote: NodeId = NONE
    commit: int = 0


@dataclass(frozen=True, slots=True)
class Membership:
    """A cluster configuration: the voters and the learners.

    ``addresses`` (peer addresses by id) and ``cluster_id`` are opaque context carried
    through the log for the runtime — a node added later learns both from the first
    configuration it receives; the core only looks at the ids.
    """

    voters: frozenset[NodeId] = frozenset()
    learners: frozenset[NodeId] = frozenset()
    addresses: tuple[tuple[NodeId, str], ...] = ()
    cluster_id: str = ""

    def __post_init__(self) -> None:
        if self.voters & self.learners:
            raise ValueError(f"members both voter and learner: {sorted(self.voters & self.learners)}")

    @property
    def members(self) -> frozenset[NodeId]:
        return self.voters | self.learners

    @property
    def quorum(self) -> int:
        return majority(len(self.voters))

    def address_of(self, node: NodeId) -> str | None:
        return dict(self.addresses).get(node)

    def encode(self) -> bytes:
        doc = {
            "v": 1,
            "voters": sorted(self.voters),
            "learners": sorted(self.learners),
            "addresses": dict(sorted(self.addresses)),
        }
        if self.cluster_id:
            doc["cluster_id"] = self.cluster_id
        return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> "Membership":
        """Raises ValueError for anything but a well-formed configuration with a voter."""
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, RecursionError) as exc:
            raise ValueError(f"configuration is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise ValueError("configuration must be a JSON object")
        voters, learners = doc.get("voters"), doc.get("learners", [])
        addresses, cluster_id = doc.get("addresses", {}), doc.get("cluster_id", "")
        if not (_str_list(voters) and voters and _str_list(learners)):
            raise ValueError("configuration needs a non-empty list of voter ids and a list of learner ids")
        if not (isinstance(addresses, dict) and all(isinstance(v, str) for v in addresses.values())):
            raise ValueError("configuration addresses must map ids to strings")
        if not isinstance(cluster_id, str):
            raise ValueError("configuration cluster_id must be a string")
        return cls(
            voters=frozenset(voters),
            learners=frozenset(learners),
            addresses=tuple(sorted(addresses.items())),
            cluster_id=cluster_id,
        )

    def with_address(self, node: NodeId, address: str | None) -> "Membership":
        if address is None:
            return self
        addrs = dict(self.addresses)
        addrs[node] = address
        return Membership(self.voters, self.learners, tuple(sorted(addrs.items())), self.cluster_id)

    def without(self, node: NodeId) -> "Membership":
        addrs = tuple((n, a) for n, a in self.addresses if n != node)
        return Membership(self.voters - {node}, self.learners - {node}, addrs, self.cluster_id)


def _str_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


class ChangeKind(Enum):
    ADD_LEARNER = "add-learner"
    PROMOTE = "promote"
    REMOVE = "remove"


@dataclass(frozen=True, slots=True)
class ConfigChange:
    """One single-server membership change."""

    kind: ChangeKind
    node: NodeId
    address: str | None = None


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    index: int = 0
    term: int = 0
    membership: Membership = field(default_factory=Membership)


@dataclass(frozen=True, slots=True)
class Snapshot:
    meta: SnapshotMeta
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read may be served once the state machine has applied ``index``."""

    context: bytes
    index: int


@dataclass(frozen=True, slots=True)
class Ready:
    """One batch of work handed out by the core.

    The contract, in this order:

    1. persist ``snapshot`` (if any), then append ``entries`` (truncating any conflicting
       suffix the storage holds at or after ``entries[0].index``), then persist
       ``hard_state`` (if not None) — all durable (fsynced) before step 2;
    2. send ``messages``;
    3. apply ``snapshot`` (if any) to the state machine, then ``committed_entries`` in order;
       hand ``read_states`` to waiting readers once their index is applied, and fail
       ``dropped_reads``;
    4. call ``core.advance(ready)``. Until then ``core.ready()`` raises ``InvariantViolation``
       (it would hand out the same entries again), as does advancing any other Ready.

    Messages may depend on the persisted state (a vote, an acknowledged append), which is why
    they are sent only after step 1 — unless ``send_before_persist`` says they are a leader's,
    which the runtime may send first so followers write in parallel with the leader.
    """

    hard_state: HardState | None = None
    entries: tuple[Entry, ...] = ()
    snapshot: Snapshot | None = None
    messages: tuple = ()
    committed_entries: tuple[Entry, ...] = ()
    read_states: tuple[ReadState, ...] = ()
    dropped_reads: tuple[bytes, ...] = ()
    #: (role, leader, term) whenever it changed since the last Ready; informational.
    soft_state: tuple[Role, NodeId, int] | None = None
    #: Non-zero: the core asks the runtime to snapshot its state machine (at or after this
    #: applied index) and compact the log below it.
    snapshot_request: int = 0
    #: True: ``messages`` may be sent before (or while) step 1 persists — they are a
    #: leader's, and a leader counts its own entries only after ``advance``. False: send
    #: only after persisting (a vote or an acknowledgement depends on what is on disk).
    send_before_persist: bool = False

    def is_empty(self) -> bool:
        return not (
            self.hard_state
            or self.entries
            or self.snapshot
            or self.messages
            or self.committed_entries
            or self.read_states
            or self.dropped_reads
            or self.soft_state
            or self.snapshot_request
        )


class RaftError(Exception):
    """Base for errors the core raises back to a caller of its API."""


class NotLeader(RaftError):
    def __init__(self, leader: NodeId = NONE) -> None:
        self.leader = leader
        super().__init__(f"not the leader (leader is {leader or 'unknown'})")


class ProposalDropped(RaftError):
    """The leader refused a proposal (for example, during a leadership transfer)."""


class ConfigChangeRefused(RaftError):
    """A membership change was refused; the message says why."""


class TransferRefused(RaftError):
    """A leadership transfer was refused; the message says why."""
