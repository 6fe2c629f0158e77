"""The node's facade: what the service, maintenance, cluster operations, metrics, the server
and snapshots use. They do not reach into the core, the state machine, the storage or the
transport (tests/node/test_node_facade.py reads their source for that), so those can change
behind it.

``NodeFacade`` is mixed into ``keyval.runtime.node.Node``, which owns the parts it reads:
``core``, ``kv`` and ``machine``, ``storage``, ``transport``, ``requests``, ``snapshots``.
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Iterable

from keyval.errors import NodeUnavailable
from keyval.kv import Limits, WriteResult
from keyval.raft import NONE, ConfigChange, Membership, Role, Status

if TYPE_CHECKING:
    from .snapshots import SnapshotOutcome


class NodeFacade:
    def started(self) -> bool:
        """Whether the node has opened its storage and core (``start`` got that far)."""
        return self.core is not None

    def status(self) -> Status:
        """The core's status: role, term, indexes, membership, and on a leader each peer's progress."""
        if self.core is None:
            raise NodeUnavailable("the node is starting")
        return self.core.status()

    @property
    def term(self) -> int:
        """The current term (0 before start)."""
        return self.core.term if self.core is not None else 0

    @property
    def applied_index(self) -> int:
        """The state machine's applied index: what ``get``, ``scan`` and ``freeze`` reflect."""
        return self.machine.applied

    @property
    def membership(self) -> Membership:
        """The newest configuration in the log (in force from when it was appended)."""
        return self.core.membership if self.core is not None else Membership()

    def is_member(self, node_id: str | None = None) -> bool:
        """Whether ``node_id`` (this node if None) is in the newest configuration."""
        return (self.id if node_id is None else node_id) in self.membership.members

    def pending_change(self) -> int:
        """The log index of a configuration change appended but not committed yet; 0 if none."""
        core = self.core
        return core.pending_config_index if core is not None and core.pending_config_index > core.log.committed else 0

    def is_leader(self) -> bool:
        """Whether this node leads now."""
        return self.core is not None and self.core.role is Role.LEADER

    def leader(self) -> str:
        """The leader this node knows of ('' if none)."""
        return self.core.leader if self.core is not None else NONE

    def get(self, key: bytes):
        """The state machine's item at ``key`` (no read barrier: see ``read_barrier``)."""
        return self.kv.get(key)

    def scan(self, prefix: bytes, limit: int):
        """Up to ``limit`` items whose keys start with ``prefix`` (no read barrier)."""
        return self.kv.scan(prefix, limit)

    @property
    def revision(self) -> int:
        """The state machine's revision."""
        return self.kv.revision

    def meta(self, name: str, default: str = "") -> str:
        """A value the cluster keeps beside the data (client addresses, cluster records)."""
        return self.kv.meta.get(name, default)

    def meta_items(self) -> Iterable[tuple[str, str]]:
        """Every (name, value) the cluster keeps beside the data."""
        return self.kv.meta.items()

    @property
    def key_count(self) -> int:
        """Keys in the state machine."""
        return len(self.kv)

    @property
    def limits(self) -> Limits:
        """The key and value size limits writes are checked against."""
        return self.kv.limits

    def term_at(self, index: int) -> int | None:
        """The term of the entry at ``index``, if this node still holds it."""
        return self.core.log.term_or_none(index) if self.core is not None else None

    def freeze(self):
        """The state machine as of now, while later entries apply (``KVStore.freeze``)."""
        return self.kv.freeze()

    def list_snapshots(self):
        """The snapshots the storage holds, oldest first (blocking: reads the data dir)."""
        return self.storage.list_snapshots()

    def alarms(self) -> dict[str, str]:
        """The alarms raised on this node, by name, and why ({} when none): NOSPACE."""
        return self.space.alarms()

    def space_status(self) -> dict:
        """Free space of the data dir as last measured, the reserve, and the error persisting
        keeps failing with while the driver retries it (None when nothing is failing)."""
        space = self.space
        return {"free_bytes": space.free, "reserve_bytes": space.reserve, "persist_error": space.failing}

    def transport_stats(self) -> dict[str, int]:
        """The transport's message counts by event ({} before start)."""
        return self.transport.stats() if self.transport is not None else {}

    async def propose(self, data: bytes, timeout: float) -> WriteResult | None:
        """Replicate a command; its result once applied here. Raises NotLeader,
        ProposalDropped, ProposalLost or asyncio.TimeoutError (outcome unknown)."""
        return await self.submit(data, timeout)

    def submit(self, data: bytes, timeout: float, session=None) -> asyncio.Future:
        """``Requests.submit``: queue a write; a future of its result once applied here."""
        if self.requests is None:
            raise NodeUnavailable("the node is starting")
        return self.requests.submit(data, timeout, session)

    async def propose_change(self, change: ConfigChange, timeout: float) -> int:
        """Propose a membership change; its index once applied here. Raises NotLeader,
        ConfigChangeRefused, NoSpace, ProposalLost or asyncio.TimeoutError (outcome unknown)."""
        if self.is_leader():  # a follower answers NotLeader, as for any write
            self.space.check_writes()
        term, index = self.core.propose_change(change)
        fut = self.requests.wait_for_index(term, index)
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
        finally:
            if not fut.done():
                self.requests.forget_index(index)
        return index

    def transfer_leadership(self, target: str) -> None:
        """Start moving leadership to ``target`` (raises NotLeader, TransferRefused)."""
        self.core.transfer_leadership(target)
        self._wake()

    def learn_peers(self, peers: dict[str, str], cluster_id: str) -> None:
        """Before being added: where the members of ``cluster_id`` are, so this node can
        answer its leader (and be accepted: peers drop messages of another cluster id)."""
        self.peer_hints.update({n: a for n, a in peers.items() if n != self.id})
        self._addresses_of = None
        self._adopt_cluster_id(cluster_id)

    async def linearizable_barrier(self, timeout: float) -> None:
        """Return once this node's state machine reflects every write acknowledged before
        the call (ReadIndex). Concurrent calls share one confirmation round."""
        await self.read_barrier(timeout)

    def read_barrier(self, timeout: float) -> asyncio.Future:
        """``linearizable_barrier`` as a future (raises NotLeader at once)."""
        if self.requests is None:
            raise NodeUnavailable("the node is starting")
        return self.requests.read_barrier(timeout)

    async def snapshot_now(self, full_compaction: bool = False) -> SnapshotOutcome:
        """Snapshot at the applied index and compact the log behind it (``NodeSnapshots.now``)."""
        return await self.snapshots.now(full_compaction)
