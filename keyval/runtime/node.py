"""A node's lifecycle: open its backends, lock its data dir, bootstrap or resume, establish its
identity, and start and stop the runtime's parts — and what it does with the driver's news
(log lines, metrics, plugin hooks). The service, maintenance, cluster operations and metrics
use the node through its facade (``facade.py``).

The moving parts live beside this file: ``driver`` (the Ready contract), ``requests``
(batching, deadlines, read rounds, retries, applied waiters), ``machine`` (the state machine as
applied), ``snapshots``. The simulator (``keyval.testing.simulator``) runs this same class
over simulated storage, network, time and executor: ``rng`` and ``off_loop`` are how it
swaps them in, the storage and transport come from its plugins, and the clock is the event
loop's own.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any, Callable, Sequence

from keyval.config import NodeConfig
from keyval.plugin_api.contracts import open_backend
from keyval.datadir import DataDirLock, cluster_id_for
from keyval.errors import KeyvalError
from keyval.kv import KVStore, Limits
from keyval.peer.versions import PeerVersions
from keyval.plugin_api.loading import Plugins, choose_storage, choose_transport, notify
from keyval.ops.recover import record_node_id
from keyval.plugin_api.storage import Storage
from keyval.plugin_api.transport import Transport
from keyval.raft import Membership, RaftConfig, RaftCore, Role, bootstrap_state
from keyval.raft import messages as m

from .driver import DriverParts, OffLoop, ReadyDriver
from .facade import NodeFacade
from .machine import NodeStateMachine
from .metrics import NodeMetrics
from .requests import Requests
from .snapshots import NodeSnapshots
from .space import SpaceAlarm
from .sync_thread import SyncThread
from .timing import Timing

log = logging.getLogger("keyval.node")


class ThreadOffLoop:
    """Production's ``OffLoop``: fsyncs in the node's own sync thread, in order; other blocking
    storage work in the loop's default executor."""

    def __init__(self, name: str) -> None:
        self._thread = SyncThread(name)

    def sync(self, fn):
        return self._thread.run(fn)

    def blocking(self, fn):
        return asyncio.get_running_loop().run_in_executor(None, fn)

    async def close(self) -> None:
        await self._thread.close()


class Node(NodeFacade):
    def __init__(self, config: NodeConfig, plugins: Plugins, timing: Timing = Timing(), limits: Limits = Limits(),
                 *, rng: random.Random | None = None, off_loop: OffLoop | None = None) -> None:
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
        self.requests: Requests | None = None
        self.driver: ReadyDriver | None = None
        self.cluster_id = ""
        self.started_at = time.time()
        self.machine = NodeStateMachine(self.id, self.kv, self._membership_applied, lambda: self.core.term if self.core else 0)
        self._rng = rng if rng is not None else random.Random()
        self._off_loop = off_loop if off_loop is not None else ThreadOffLoop(f"{self.id}-fsync")
        self._lock = DataDirLock(config.data_dir) if config.data_dir else None
        self._stopped = asyncio.Event()
        self._last_role: tuple[Role, str, int] | None = None
        #: the index this node was re-fetching lost entries up to, until the core says it is done
        self._recovering_to = 0
        self.client_addresses: dict[str, str] = {}
        self.fatal: BaseException | None = None
        #: the NOSPACE alarm, and persist failures being retried (keyval.runtime.space)
        self.space = SpaceAlarm(self.id, config.data_dir, config.space_reserve, lambda: self.term)
        self.snapshots = NodeSnapshots(self)
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

    @property
    def applied_membership(self) -> Membership:
        """The membership as of the applied index (what a snapshot must record)."""
        return self.machine.membership

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
        self.storage = open_backend(self.plugins, "storage", self.config.storage, Storage, lambda: choose_storage(
            self.plugins, self.config.storage).factory(self.config.data_dir, dict(self.config.storage_options)))
        self.snapshots.storage = self.storage
        self._maybe_bootstrap()
        snapshot = self.storage.load_snapshot()
        if snapshot is not None and snapshot.data:
            self.kv.restore(snapshot.data)
        if snapshot is not None:
            self.machine.membership = snapshot.meta.membership
            self.machine.applied = snapshot.meta.index
        raft_config = RaftConfig(
            id=self.id,
            election_tick=self.timing.election_ticks,
            heartbeat_tick=self.timing.heartbeat_ticks,
            snapshot_threshold=self.timing.snapshot_threshold,
            **dict(self.timing.raft),
        )
        self.core = core = RaftCore(raft_config, self.storage, self._rng)
        self.initial_commit = core.log.committed
        self._check_cluster_identity()
        self.transport = open_backend(self.plugins, "transport", self.config.transport, Transport, lambda: choose_transport(
            self.plugins, self.config.transport).factory(dict(self.config.transport_options)))
        self._adopt_cluster_id(core.membership.cluster_id)
        use_versions = getattr(self.transport, "use_peer_versions", None)
        if callable(use_versions):  # optional in the contract (keyval.plugin_api.transport)
            use_versions(self.peer_versions)
        loop = asyncio.get_running_loop()
        self.requests = Requests(self.id, core, loop.time, self._wake, self.metrics.count_proposal, self.metrics.count_read,
                                 check_writes=self.space.check_writes)
        self.driver = ReadyDriver(DriverParts(
            core=core, storage=self.storage, send=self._send, machine=self.machine, requests=self.requests,
            snapshots=self.snapshots, off_loop=self._off_loop, events=self, timing=self.timing,
        ))
        await self.transport.start(self.id, self.config.peer_addr, self._deliver)
        status = core.status()
        if status.membership.members:
            log.info("node %s starting at term %d: commit %d, last index %d, members %s",
                     self.id, status.term, status.commit, status.last_index, ",".join(sorted(status.membership.members)))
        else:
            log.info("node %s starting uninitialised: waiting to be added to a cluster", self.id)
        self._log_lost_entries(core)
        self._notify("keyval_node_started", node_id=self.id, config=self.config)
        self.driver.start(self.id)

    async def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._notify("keyval_node_stopping", node_id=self.id)
        if self.driver is not None:
            await self.driver.stop()
        await self.snapshots.wait()
        close = getattr(self._off_loop, "close", None)
        if close is not None:
            await close()
        if self.transport is not None:
            await self.transport.close()
        if self.storage is not None:
            try:
                self.storage.close()
            except Exception as exc:  # a full disk: nothing acknowledged waits on close
                log.error("node %s term %d: closing the storage failed: %s", self.id, self.term, exc)
        if self._lock:
            self._lock.release()
        if self.requests is not None:
            self.requests.fail_all("the node is shutting down")
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
        # Every plugin gets the event even if one raises; see keyval.plugin_api.loading.notify.
        notify(self.plugins, hook, **kwargs)

    # ------------------------------------------------------------------ the driver's I/O and news
    def _deliver(self, message: m.Message) -> None:
        if self._stopped.is_set() or self.driver is None:
            return
        self.driver.deliver(message)

    def _wake(self) -> None:
        if self.driver is not None:
            self.driver.wake()

    def _send(self, messages: Sequence[m.Message]) -> None:
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

    def role_changed(self, soft: tuple[Role, str, int]) -> None:
        role, leader, term = soft
        previous = self._last_role
        self._last_role = soft
        if previous is not None and previous[1] != leader and leader:
            self.metrics.leader_changes.inc()
        if previous is None or previous[0] != role or previous[1] != leader:
            log.info("node %s term %d: %s, leader %s", self.id, term, role.value, leader or "unknown")
            self._notify("keyval_role_changed", node_id=self.id, term=term, role=role.value, leader=leader or None)

    def persisted(self, entries: int, sync_seconds: float) -> None:
        self.metrics.fsync.observe(sync_seconds)
        self.metrics.batch_entries.observe(entries)

    def ticked(self, now: float) -> None:
        self.metrics.log_refusals(self.id, self.core, now)
        self.space.check(now)
        if self._recovering_to and not self.core.recovering_to:
            log.info("node %s term %d: recovered: it holds the leader's log past what it lost (index %d); "
                     "voting as usual", self.id, self.core.term, self._recovering_to)
            self._recovering_to = 0

    def _log_lost_entries(self, core) -> None:
        """Damage took entries this node had made durable (keyval.raft.core: recovering_to)."""
        if core.lost_at_start is None:
            return
        first, last = core.lost_at_start
        if core.recovering_to:
            log.error("node %s term %d: entries %d..%d were durable here and are lost to disk damage; they may "
                      "have been acknowledged, so this node re-fetches them from the leader and until then does "
                      "not campaign, votes only for a candidate holding them, and is not counted toward commits",
                      self.id, core.term, first, last)
            self._recovering_to = core.recovering_to
        else:
            log.error("node %s term %d: entries %d..%d were durable here and are lost to disk damage; this node "
                      "is the only voter, so there is nowhere to fetch them from: they are gone",
                      self.id, core.term, first, last)

    def persist_failed(self, exc: BaseException, code: int, attempt: int) -> None:
        self.metrics.count_persist_retry(code)
        self.space.persist_failed(exc, code, attempt)

    def persist_recovered(self, attempts: int, seconds: float) -> None:
        self.space.persist_recovered(attempts, seconds)

    def failed(self, exc: BaseException) -> None:
        self.fatal = exc
        log.critical("node %s: stopping after a fatal error: %s", self.id, exc, exc_info=exc)
        asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(self.stop()))

    def _membership_applied(self, index: int, term: int, membership: Membership, from_snapshot: bool) -> None:
        self._adopt_cluster_id(membership.cluster_id)
        if not from_snapshot:
            self._notify("keyval_membership_changed", node_id=self.id, term=term, membership=membership)
        for listener in self.membership_listeners:
            try:
                listener(index, membership)
            except Exception as exc:  # an observer's bug must not stop the apply loop
                log.error("node %s: membership listener failed: %s", self.id, exc, exc_info=exc)
