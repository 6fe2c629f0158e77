"""The node's state machine as the Ready driver applies to it: the key-value store plus the
membership in force at the applied index (what a snapshot must record)."""
from __future__ import annotations

import logging
from typing import Callable

from keyval.kv import KVStore, WriteResult
from keyval.raft import Entry, EntryType, Membership, Snapshot

log = logging.getLogger("keyval.node")


class NodeStateMachine:
    """``on_membership(index, term, membership, from_snapshot)`` is called for each
    configuration applied, from an entry or a snapshot; ``term()`` gives the node's term for
    log lines."""

    def __init__(self, node_id: str, kv: KVStore, on_membership: Callable[[int, int, Membership, bool], None],
                 term: Callable[[], int]) -> None:
        self.node_id = node_id
        self.kv = kv
        self.membership = Membership()
        #: the index of the last entry applied (or of the snapshot restored). It runs ahead of
        #: the core's applied index within a Ready (the core learns at ``advance``), so a
        #: snapshot of ``kv`` is taken at this index, never the core's.
        self.applied = 0
        self._on_membership = on_membership
        self._term = term

    def apply(self, entry: Entry) -> WriteResult | None:
        self.applied = entry.index
        if entry.type is EntryType.CONFIG:
            self.membership = Membership.decode(entry.data)
            self._on_membership(entry.index, entry.term, self.membership, False)
            return None
        restored = self.kv.last_restore
        result = self.kv.apply(entry.data)
        if self.kv.last_restore != restored:
            log.info("node %s term %d: restore %s committed at index %d: the data is now the backup's (%d keys)",
                     self.node_id, self._term(), self.kv.last_restore, entry.index, len(self.kv))
        return result

    def restore(self, snapshot: Snapshot) -> None:
        self.applied = snapshot.meta.index
        self.kv.restore(snapshot.data)
        self.membership = snapshot.meta.membership
        log.info("node %s term %d: restored snapshot at index %d (%d keys)",
                 self.node_id, self._term(), snapshot.meta.index, len(self.kv))
        self._on_membership(snapshot.meta.index, snapshot.meta.term, self.membership, True)
