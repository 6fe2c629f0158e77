"""Checks on what comes in: membership changes an operator asks for, messages a peer sends."""
from __future__ import annotations

from . import messages as m
from .types import ChangeKind, ConfigChange, ConfigChangeRefused, EntryType, Membership


def changed_membership(current: Membership, change: ConfigChange) -> Membership:
    node = change.node
    if not node:
        raise ConfigChangeRefused("a member id must not be empty")
    if change.kind is ChangeKind.ADD_LEARNER:
        if node in current.voters:
            raise ConfigChangeRefused(f"{node} is already a voting member")
        if node in current.learners:
            raise ConfigChangeRefused(f"{node} is already a learner")
        return Membership(current.voters, current.learners | {node}, current.addresses, current.cluster_id).with_address(
            node, change.address
        )
    if change.kind is ChangeKind.PROMOTE:
        if node in current.voters:
            raise ConfigChangeRefused(f"{node} is already a voting member")
        if node not in current.learners:
            raise ConfigChangeRefused(f"{node} is not a member; add it as a learner first")
        return Membership(current.voters | {node}, current.learners - {node}, current.addresses, current.cluster_id)
    if change.kind is ChangeKind.REMOVE:
        if node not in current.members:
            raise ConfigChangeRefused(f"{node} is not a member of the cluster")
        if current.voters == {node}:
            raise ConfigChangeRefused(f"cannot remove {node}: it is the last voting member")
        return current.without(node)
    raise ConfigChangeRefused(f"unknown change {change.kind!r}")


def well_formed(msg: m.Message) -> bool:
    """Cheap sanity checks so a confused or hostile peer cannot crash the core."""
    if msg.term < 0 or not msg.frm:
        return False
    if isinstance(msg, m.AppendEntries):
        if msg.prev_index < 0 or msg.prev_term < 0 or msg.commit < 0:
            return False
        expected = msg.prev_index + 1
        last_term = msg.prev_term
        for entry in msg.entries:
            if entry.index != expected or entry.term < last_term or entry.term > msg.term:
                return False
            if entry.type is EntryType.CONFIG:
                try:
                    Membership.decode(entry.data)
                except ValueError:
                    return False
            expected += 1
            last_term = entry.term
    elif isinstance(msg, m.InstallSnapshot):
        if msg.offset < 0 or msg.meta.index <= 0 or msg.meta.term <= 0 or msg.meta.term > msg.term:
            return False
        if not msg.meta.membership.voters:
            return False  # as for a configuration entry: every real configuration has a voter
    elif isinstance(msg, (m.AppendResponse, m.Heartbeat, m.RequestVote, m.SnapshotResponse)):
        numbers = [v for v in (getattr(msg, f, 0) for f in ("index", "commit", "last_index", "offset")) if isinstance(v, int)]
        if any(v < 0 for v in numbers):
            return False
    return True

