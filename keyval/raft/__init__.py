"""The Raft core: a pure, deterministic state machine (no I/O, clock or global state).

See docs/architecture.md for the batch-of-work (Ready) contract.
"""
from .config import RaftConfig
from .core import PeerStatus, RaftCore, Status, bootstrap_state
from .log import InvariantViolation
from .storage import Compacted, LogStorage, MemoryStorage, SnapshotUnavailable, Unavailable
from .types import (
    NONE,
    ChangeKind,
    ConfigChange,
    ConfigChangeRefused,
    Entry,
    EntryType,
    HardState,
    Membership,
    NodeId,
    NotLeader,
    ProposalDropped,
    RaftError,
    Ready,
    ReadState,
    Role,
    Snapshot,
    SnapshotMeta,
    TransferRefused,
)

__all__ = [name for name in dir() if not name.startswith("_")]
