"""The Raft core: a pure, deterministic state machine (no I/O, clock or global state).

See docs/architecture.md for the batch-of-work (Ready) contract.

The names below load their module on first use: ``keyval.errors`` imports
``keyval.raft.storage_errors`` for StorageError, and what imports only that (kvctl, the
client library, plugins) must not pay for loading the whole core.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

#: each public name -> the module of the core that defines it
_HOMES = {
    "RaftConfig": "config",
    **dict.fromkeys(["PeerStatus", "RaftCore", "Status", "bootstrap_state"], "core"),
    "InvariantViolation": "log",
    **dict.fromkeys(["Compacted", "LogStorage", "MemoryStorage", "SnapshotUnavailable", "Unavailable"], "storage"),
    **dict.fromkeys([
        "NONE", "ChangeKind", "ConfigChange", "ConfigChangeRefused", "Entry", "EntryType", "HardState", "Membership",
        "NodeId", "NotLeader", "ProposalDropped", "RaftError", "Ready", "ReadState", "Role", "Snapshot",
        "SnapshotMeta", "TransferRefused",
    ], "types"),
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # for type checkers, which do not run __getattr__
    from .config import RaftConfig  # noqa: F401
    from .core import PeerStatus, RaftCore, Status, bootstrap_state  # noqa: F401
    from .log import InvariantViolation  # noqa: F401
    from .storage import Compacted, LogStorage, MemoryStorage, SnapshotUnavailable, Unavailable  # noqa: F401
    from .types import (  # noqa: F401
        NONE, ChangeKind, ConfigChange, ConfigChangeRefused, Entry, EntryType, HardState, Membership, NodeId,
        NotLeader, ProposalDropped, RaftError, Ready, ReadState, Role, Snapshot, SnapshotMeta, TransferRefused,
    )
