"""The node runtime: drives the Raft core with asyncio, storage and transport plugins.

One task ticks the core from a monotonic clock; messages from the transport are stepped in
as they arrive; one task executes the core's batches of work (``Ready``) in the contract's
order: persist (with one fsync for everything the batch holds — group commit: proposals that
arrive while an fsync runs land in the next batch), then send, then apply, then advance.
"""
from __future__ import annotations

import asyncio
import bisect
import heapq
import itertools
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Callable

from keyval.config import NodeConfig
from keyval.plugin_api.contracts import open_backend as _open_backend
from keyval.datadir import DataDirLock, cluster_id_for
from keyval.errors import KeyvalError, NodeUnavailable, ProposalLost
from keyval.kv import KVStore, Limits, WriteResult
from keyval.metrics import NodeMetrics
from keyval.node_snapshots import NodeSnapshots, SnapshotOutcome
from keyval.peer.versions import PeerVersions
from keyval.plugin_api.loading import Plugins, choose_storage, choose_transport, notify
from keyval.ops.recover import record_node_id
from keyval.plugin_api.storage import Storage
from keyval.sync_thread import SyncThread
from keyval.plugin_api.transport import Transport
from keyval.raft import (
    NONE,
    ConfigChange,
    EntryType,
    Membership,
    NotLeader,
    RaftConfig,
    RaftError,
    RaftCore,
    Role,
    bootstrap_state,
)
from keyval.raft import messages as m

log = logging.getLogger("keyval.node")


@dataclass(frozen=True)
class Timing:
    tick_interval: float = 0.1
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    #: etcd's default too: a whole-state snapshot is costly, the log is cheap to keep
    snapshot_threshold: int = 100_000
    #: entries kept in the log behind a snapshot, so a briefly slow follower needs no snapshot
    snapshot_catchup_entries: int = 1_000
    #: A follower fsyncs on the event loop: nothing it could do meanwhile helps (its leader
    #: waits for the ack), and two thread handoffs cost more than a fast disk's fdatasync
    #: (measured: follower fsync 0.6 -> 0.4 ms, put p50 at one client 1.5 -> 1.15 ms). A
    #: leader fsyncs in a thread, so it keeps taking requests and acks meanwhile.
    follower_sync_inline: bool = True


class _Deadlines:
    """Timeouts of queued writes and reads, expired by the tick loop: one heap push per
    request instead of a timer and a wrapper future each (``asyncio.wait_for``), which is a
    measurable share of a busy leader's CPU. A timeout fires up to one tick late."""

    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, asyncio.Future]] = []
        self._seq = itertools.count()

    def add(self, fut: asyncio.Future, timeout: float) -> None:
        heapq.heappush(self._heap, (time.monotonic() + timeout, next(self._seq), fut))

    def expire(self, now: float) -> None:
        heap = self._heap
        # Answered requests leave from the top too, not at their deadline: at thousands of
        # writes a second, kept until then they would be tens of thousands of live futures,
        # each one more object for every full garbage collection to walk (a 45 ms pause).
        # Requests share one timeout, so the oldest are on top and answered first; one still
        # waiting holds back the cleanup behind it until it is answered or times out.
        while heap and (heap[0][0] <= now or heap[0][2].done()):
            fut = heapq.heappop(heap)[2]
            if not fut.done():
                fut.set_exception(asyncio.TimeoutError())


class _ReadRound:
    """Linearizable reads that share one ReadIndex confirmation."""

    __slots__ = ("context", "waiters", "index")

    def __init__(self, context: bytes) -> None:
        self.context = context
        self.waiters: list[asyncio.Future] = []
        self.index: int | None = None


class Node:
    def __init__(self, config: NodeConfig, plugins: Plugins, timing: Timing = Timing(), limits: Limits = Limits()) -> None:
        self.config = config
        self.id = config.id
        self.plugins = plugins
        self.timing = timing
        self.kv = KVStore(limits)
        self.metrics = NodeMetrics()
        self.metrics.attach(self)
        self.storage: Any = None
        self.transport: Any = None
        #: which protocol version each peer is written, and which release it runs
        self.peer_versions = PeerVersions()
        self.core: RaftCore | None = None
        self.cluster_id = ""
        self.started_at = time.time()
        #: membership as of the applied index (what a snapshot must record)
        self.applied_membership = Membership()
        self._lock = DataDirLock(config.data_dir) if config.data_dir else None
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._waiters: dict[int, tuple[int, asyncio.Future]] = {}
        #: writes waiting to be proposed together at the next turn of the Ready loop
        self._proposals: list[tuple[bytes, asyncio.Future]] = []
        self._read_rounds: dict[bytes, _ReadRound] = {}
        self._next_round: _ReadRound | None = None
        self._read_seq = 0
        self._applied_waiters: list[tuple[int, asyncio.Future]] = []
        self._deadlines = _Deadlines()
        self._last_role: tuple[Role, str, int] | None = None
        self.client_addresses: dict[str, str] = {}
        self.fatal: BaseException | None = None
        self.snapshots = NodeSnapshots(self)
        self._sync_thread = SyncThread(f"{self.id}-fsync")
        #: commit index found on disk at start: configurations up to it are replayed, not news
        self.initial_commit = 0
        #: called with (index, membership) for each committed configuration applied here
        self.membership_listeners: list[Callable[[int, Membership], None]] = []
        #: peer addresses learned outside the log: a node being added cannot answer its
        #: leader until its first configuration arrives, unless it was told where peers are
        self.peer_hints: dict[str, str] = {}
        self._addresses: dict[str, str] = {}
        #: the (newest, applied) configurations ``_addresses`` was built from
        self._addresses_of: tuple[Membership, Membership] | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self._lock:
            self._lock.acquire()
            record_node_id(self.config.data_dir, self.id)
        try:
            await self._open()
        except BaseException:
            if self.storage is not None:
                self.storage.close()
            if self._lock:
                self._lock.release()
            raise

    async def _open(self) -> None:
        self.storage = _open_backend(self.plugins, "storage", self.config.storage, Storage, lambda: choose_storage(
            self.plugins, self.config.storage).factory(self.config.data_dir, dict(self.config.storage_options)))
        self._maybe_bootstrap()
        snapshot = self.storage.load_snapshot()
        if snapshot is not None and snapshot.data:
            self.kv.restore(snapshot.data)
        if snapshot is not None:
            self.applied_membership = snapshot.meta.membership
        raft_config = RaftConfig(
            id=self.id,
            election_tick=self.timing.election_ticks,
            heartbeat_tick=self.timing.heartbeat_ticks,
            snapshot_threshold=self.timing.snapshot_threshold,
        )
        self.core = RaftCore(raft_config, self.storage, random.Random())
        self.initial_commit = self.core.log.committed
        self._check_cluster_identity()
        self.transport = _open_backend(self.plugins, "transport", self.config.transport, Transport, lambda: choose_transport(
            self.plugins, self.config.transport).factory(dict(self.config.transport_options)))
        self._adopt_cluster_id(self.core.membership.cluster_id)
        use_versions = getattr(self.transport, "use_peer_versions", None)
        if callable(use_versions):  # optional in the contract (keyval.transport)
            use_versions(self.peer_versions)
        await self.transport.start(self.id, self.config.peer_addr, self._deliver)
        status = self.core.status()
        if status.membership.members:
            log.info("node %s starting at term %d: commit %d, last index %d, members %s",
                     self.id, status.term, status.commit, status.last_index, ",".join(sorted(status.membership.members)))
        else:
            log.info("node %s starting uninitialised: waiting to be added to a cluster", self.id)
        self._notify("keyval_node_started", node_id=self.id, config=self.config)
        self._tasks = [
            asyncio.create_task(self._tick_loop(), name=f"{self.id}-tick"),
            asyncio.create_task(self._ready_loop(), name=f"{self.id}-ready"),
        ]

    async def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._notify("keyval_node_stopping", node_id=self.id)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.snapshots.wait()
        await self._sync_thread.close()
        if self.transport is not None:
            await self.transport.close()
        if self.storage is not None:
            self.storage.close()
        if self._lock:
            self._lock.release()
        for fut in [f for _, f in self._waiters.values()] + [f for _, f in self._proposals]:
            if not fut.done():
                fut.set_exception(NodeUnavailable("the node is shutting down"))
        log.info("node %s stopped", self.id)

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    def _maybe_bootstrap(self) -> None:
        hard_state, snap = self.storage.initial_state()
        fresh = hard_state.term == 0 and snap.index == 0 and self.storage.last_index() == 0
        bootstrap = self.config.bootstrap
        if not fresh:
            if bootstrap:
                log.info("node %s has existing data: --bootstrap ignored, resuming", self.id)
            return
        if not bootstrap:
            return
        if self.id not in bootstrap:
            raise KeyvalError(f"--bootstrap does not list this node ({self.id}); list every initial voter including it")
        if bootstrap[self.id] != self.config.peer_addr:
            log.warning("node %s: bootstrap address %s differs from --peer-addr %s", self.id, bootstrap[self.id], self.config.peer_addr)
        membership = Membership(
            voters=frozenset(bootstrap),
            addresses=tuple(sorted(bootstrap.items())),
            cluster_id=cluster_id_for(bootstrap),
        )
        hard_state, entries = bootstrap_state(membership)
        self.storage.append(entries)
        self.storage.set_hard_state(hard_state)
        self.storage.sync()
        log.info("node %s bootstrapped cluster %s with voters %s", self.id, membership.cluster_id, ",".join(sorted(bootstrap)))

    def _check_cluster_identity(self) -> None:
        """A data dir holds one cluster's data: refuse to run it as another cluster's node."""
        held = self.core.membership.cluster_id
        if held and self.config.bootstrap and held != cluster_id_for(self.config.bootstrap):
            raise KeyvalError(
                f"data dir {self.config.data_dir!r} belongs to cluster {held}, not the cluster --bootstrap describes "
                f"({cluster_id_for(self.config.bootstrap)}); start with an empty data dir to join that cluster"
            )

    def _adopt_cluster_id(self, cluster_id: str) -> None:
        if cluster_id and cluster_id != self.cluster_id:
            if self.cluster_id:
                log.error("node %s: configuration names cluster %s but this node belongs to %s",
                          self.id, cluster_id, self.cluster_id)
                return
            self.cluster_id = cluster_id
            self.transport.set_cluster_id(cluster_id)

    def _notify(self, hook: str, **kwargs: Any) -> None:
        # Every plugin gets the event even if one raises; see keyval.plugins.notify.
        notify(self.plugins, hook, **kwargs)

    # ------------------------------------------------------------------ inputs
    def _deliver(self, message: m.Message) -> None:
        if self._stopped.is_set() or self.core is None:
            return
        self.core.step(message)
        self._wake.set()

    async def _tick_loop(self) -> None:
        interval = self.timing.tick_interval
        next_tick = time.monotonic() + interval
        while True:
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
            now = time.monotonic()
            # Catch up missed ticks (a long pause) but never more than an election's worth.
            missed = min(int((now - next_tick) / interval) + 1, self.timing.election_ticks)
            for _ in range(missed):
                self.core.tick()
            next_tick += missed * interval
            if next_tick < now:
                next_tick = now + interval
            self._deadlines.expire(now)
            self.metrics.log_refusals(self.id, self.core, now)
            self._wake.set()

    # ------------------------------------------------------------------ the Ready loop
    async def _ready_loop(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                self._flush_proposals()
                while self.core.has_ready():
                    await self._handle_ready(loop)
                    self._flush_proposals()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            # Persisting failed (disk full, I/O error) or an invariant broke: continuing could
            # acknowledge writes that are not durable. Stop, loudly.
            self.fatal = exc
            log.critical("node %s: stopping after a fatal error: %s", self.id, exc, exc_info=exc)
            asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(self.stop()))

    async def _handle_ready(self, loop: asyncio.AbstractEventLoop) -> None:
        core = self.core
        rd = core.ready()
        # A leader's messages may go first: followers then write in parallel with our fsync.
        sent_early = rd.send_before_persist and bool(rd.messages)
        if sent_early:
            self._send(rd.messages)
        # 1. persist
        if rd.snapshot is not None:
            async with self.snapshots.lock:  # not while one of ours is being written
                await loop.run_in_executor(None, self.storage.apply_snapshot, rd.snapshot)
        if rd.entries:
            self.storage.append(rd.entries)
        if rd.hard_state is not None:
            # Durable on return when term or vote changed (the storage contract); a new
            # commit index alone may be written lazily, so it costs no fsync here.
            self.storage.set_hard_state(rd.hard_state)
        to_apply = rd.committed_entries
        if rd.entries:
            if rd.snapshot is None and rd.soft_state is None and to_apply:
                # Entries committed below this Ready's first new entry were made durable by
                # an earlier Ready: apply them now rather than after this fsync, so a write
                # does not wait a whole extra batch cycle for its answer.
                durable = bisect.bisect_left([e.index for e in to_apply], rd.entries[0].index)
                for entry in to_apply[:durable]:
                    self._apply(entry)
                to_apply = to_apply[durable:]
            started = time.perf_counter()
            if core.role is Role.LEADER or not self.timing.follower_sync_inline:
                await self._sync_thread.run(self.storage.sync)
            else:
                self.storage.sync()
            self.metrics.fsync.observe(time.perf_counter() - started)
            self.metrics.batch_entries.observe(len(rd.entries))
        # 2. send
        if rd.messages and not sent_early:
            self._send(rd.messages)
        # 3. apply
        if rd.soft_state is not None:
            self._on_soft_state(rd.soft_state)
        if rd.snapshot is not None:
            self._restore_snapshot(rd.snapshot)
        for entry in to_apply:
            self._apply(entry)
        for read in rd.read_states:
            self._read_confirmed(read.context, read.index)
        for context in rd.dropped_reads:
            self._read_dropped(context)
        core.advance(rd)
        self._release_applied_waiters()
        if rd.snapshot_request and not self.snapshots.busy():
            # In the background (keyval.node_snapshots); if one runs, the core asks again later.
            self.snapshots.start(full_compaction=False)

    def _send(self, messages) -> None:
        addresses = self._peer_addresses()
        for msg in messages:
            # None: where the peer's own traffic came from. A node being added knows no
            # address for its leader until its first configuration, which it must answer for.
            self.transport.send(msg.to, addresses.get(msg.to), msg)

    def _peer_addresses(self) -> dict[str, str]:
        """Where each peer is: the newest configuration's word first, then the applied one's,
        then hints. Rebuilt only when one of them changed (this runs for every message)."""
        newest, applied = self.core.membership, self.applied_membership
        if self._addresses_of is None or self._addresses_of[0] is not newest or self._addresses_of[1] is not applied:
            merged = {**self.peer_hints, **dict(applied.addresses), **dict(newest.addresses)}
            self._addresses = {peer: address for peer, address in merged.items() if address}
            self._addresses_of = (newest, applied)
        return self._addresses

    def _on_soft_state(self, soft: tuple[Role, str, int]) -> None:
        role, leader, term = soft
        previous = self._last_role
        self._last_role = soft
        if previous is not None and previous[1] != leader and leader:
            self.metrics.leader_changes.inc()
        if previous is None or previous[0] != role or previous[1] != leader:
            log.info("node %s term %d: %s, leader %s", self.id, term, role.value, leader or "unknown")
            self._notify("keyval_role_changed", node_id=self.id, term=term, role=role.value, leader=leader or None)

    def _restore_snapshot(self, snapshot) -> None:
        self.kv.restore(snapshot.data)
        self.applied_membership = snapshot.meta.membership
        self._adopt_cluster_id(snapshot.meta.membership.cluster_id)
        self._membership_applied(snapshot.meta.index, snapshot.meta.membership)
        log.info("node %s term %d: restored snapshot at index %d (%d keys)", self.id, self.core.term, snapshot.meta.index, len(self.kv))

    def _apply(self, entry) -> None:
        result: WriteResult | None = None
        if entry.type is EntryType.CONFIG:
            self.applied_membership = Membership.decode(entry.data)
            self._adopt_cluster_id(self.applied_membership.cluster_id)
            self._notify("keyval_membership_changed", node_id=self.id, term=entry.term, membership=self.applied_membership)
            self._membership_applied(entry.index, self.applied_membership)
        else:
            restored = self.kv.last_restore
            result = self.kv.apply(entry.data)
            if self.kv.last_restore != restored:
                log.info("node %s term %d: restore %s committed at index %d: the data is now the backup's (%d keys)",
                         self.id, self.core.term, self.kv.last_restore, entry.index, len(self.kv))
        waiter = self._waiters.pop(entry.index, None)
        if waiter is not None:
            term, fut = waiter
            if not fut.done():
                if term == entry.term:
                    fut.set_result(result)
                else:
                    fut.set_exception(ProposalLost("the write was superseded after a leader change; retry"))

    def _membership_applied(self, index: int, membership: Membership) -> None:
        for listener in self.membership_listeners:
            try:
                listener(index, membership)
            except Exception as exc:  # an observer's bug must not stop the apply loop
                log.error("node %s: membership listener failed: %s", self.id, exc, exc_info=exc)

    async def snapshot_now(self, full_compaction: bool = False) -> SnapshotOutcome:
        return await self.snapshots.now(full_compaction)

    # ------------------------------------------------------------------ API for the service
    def is_leader(self) -> bool:
        return self.core is not None and self.core.role is Role.LEADER

    def leader(self) -> str:
        return self.core.leader if self.core is not None else NONE

    async def propose(self, data: bytes, timeout: float) -> WriteResult | None:
        """Replicate a command; its result once applied here. Raises NotLeader,
        ProposalDropped, ProposalLost or asyncio.TimeoutError (outcome unknown)."""
        return await self.submit(data, timeout)

    def submit(self, data: bytes, timeout: float) -> asyncio.Future:
        """Queue a command for replication (raises NotLeader at once); a future of its result
        once applied here, failing with ProposalDropped, ProposalLost or asyncio.TimeoutError
        (outcome unknown: the write may still apply). Cancelling it only stops the waiting."""
        if self.core.role is not Role.LEADER:
            raise NotLeader(self.core.leader)
        fut = asyncio.get_running_loop().create_future()
        # Queued, not proposed at once: every write that arrives while the Ready loop is busy
        # (an fsync, say) goes into the log as one batch — one AppendEntries per follower,
        # one fsync — instead of one message per write per follower.
        self._proposals.append((data, fut))
        self._wake.set()
        self._deadlines.add(fut, timeout)
        fut.add_done_callback(self.metrics.count_proposal)
        return fut

    def _flush_proposals(self) -> None:
        if not self._proposals:
            return
        batch, self._proposals = self._proposals, []
        try:
            term, first = self.core.propose_batch([data for data, _ in batch])
        except RaftError as exc:
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for offset, (_, fut) in enumerate(batch):
            self._waiters[first + offset] = (term, fut)

    async def propose_change(self, change: ConfigChange, timeout: float) -> int:
        """Propose a membership change; its index once applied here. Raises NotLeader,
        ConfigChangeRefused, ProposalLost or asyncio.TimeoutError (outcome unknown)."""
        term, index = self.core.propose_change(change)
        fut = asyncio.get_running_loop().create_future()
        self._waiters[index] = (term, fut)
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
        finally:
            if not fut.done():
                self._waiters.pop(index, None)
        return index

    def transfer_leadership(self, target: str) -> None:
        """Start moving leadership to ``target`` (raises NotLeader, TransferRefused)."""
        self.core.transfer_leadership(target)
        self._wake.set()

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
        if self.core.role is not Role.LEADER:
            raise NotLeader(self.core.leader)
        fut = asyncio.get_running_loop().create_future()
        if self._next_round is None:
            self._read_seq += 1
            self._next_round = _ReadRound(f"{self.id}:{self._read_seq}".encode())
            asyncio.get_running_loop().call_soon(self._start_read_round)
        self._next_round.waiters.append(fut)
        self._deadlines.add(fut, timeout)
        fut.add_done_callback(self.metrics.count_read)
        return fut

    def _start_read_round(self) -> None:
        round_, self._next_round = self._next_round, None
        if round_ is None:
            return
        try:
            self.core.read_index(round_.context)
        except NotLeader as exc:
            for fut in round_.waiters:
                if not fut.done():
                    fut.set_exception(exc)
            return
        self._read_rounds[round_.context] = round_
        self._wake.set()

    def _read_confirmed(self, context: bytes, index: int) -> None:
        round_ = self._read_rounds.pop(context, None)
        if round_ is None:
            return
        for fut in round_.waiters:
            self._applied_waiters.append((index, fut))

    def _read_dropped(self, context: bytes) -> None:
        round_ = self._read_rounds.pop(context, None)
        if round_ is None:
            return
        for fut in round_.waiters:
            if not fut.done():
                fut.set_exception(NotLeader(self.core.leader))

    def _release_applied_waiters(self) -> None:
        if not self._applied_waiters:
            return
        applied = self.core.log.applied
        waiting = []
        for index, fut in self._applied_waiters:
            if index <= applied:
                if not fut.done():
                    fut.set_result(None)
            else:
                waiting.append((index, fut))
        self._applied_waiters = waiting
