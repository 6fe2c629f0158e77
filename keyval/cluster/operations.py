"""Membership and status operations, carried out by the leader for kvctl.

Registered into the server's operation table: ``cluster_status``, ``cluster_health``,
``add``, ``promote``, ``remove``, ``transfer`` (leader only: a follower answers NotLeader and
the client follows it to the leader), plus ``membership`` and ``removal_check``, which any
node answers (they serve ``RemovalWatch``).

One configuration change at a time: while one is in flight (appended, not yet committed) a
second is refused with a message naming the first — unless it asks for exactly what the
first does, in which case it waits for it and reports the outcome (so a repeated or raced
command is harmless).
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from keyval.ops.admin import AdminOperations, OperationRefused
from keyval.client import AsyncClient
from keyval.cluster.membership import MembershipManager, MembershipRefused
from keyval.cluster.tasks import AutoPromoter, RemovalWatch, StuckWatch
from keyval.cluster.view import LEARNER_SETTINGS_META, LeaderView, describe_change
from keyval.config import NodeConfig
from keyval.errors import ConfigError, KeyvalError
from keyval.kv import encode_meta
from keyval.errors import ProposalLost
from keyval.runtime.node import Node
from keyval.raft import ChangeKind, ConfigChange, ConfigChangeRefused, NotLeader, Role
from keyval.wire_bounds import parse_address, parse_node_id

log = logging.getLogger("keyval.cluster")

DEFAULT_TIMEOUT = 5.0
MAX_TIMEOUT = 3600.0
#: how long a change waits for a brand-new leader's first commit before giving up
FIRST_COMMIT_WAIT = 3.0
POLL = 0.02


class ClusterOperations:
    def __init__(self, node: Node, config: NodeConfig, admin: AdminOperations, request_shutdown,
                 connect=AsyncClient) -> None:
        self.node = node
        self.config = config
        #: ``connect(addresses, timeout)``: a client for a peer's client port, with the node credential
        self._connect = connect
        self._background: set[asyncio.Task] = set()
        self.promoter = AutoPromoter(self)
        self.stuck_watch = StuckWatch(self)
        self.watch = RemovalWatch(node, request_shutdown, busy=lambda: self.busy, connect=connect)
        self.busy = 0  # operations being served: a removed node finishes them before it exits
        for name, handler in (
            ("cluster_status", self.cluster_status), ("cluster_health", self.cluster_health),
            ("add", self.add), ("promote", self.promote), ("remove", self.remove), ("transfer", self.transfer),
            ("membership", self.membership), ("removal_check", self.removal_check),
            ("introduce", self.introduce),
        ):
            admin.register(name, self._counted(handler))

    def start(self) -> None:
        self.watch.attach()
        self.promoter.start()
        self.stuck_watch.start()
        self.watch.start()

    async def stop(self) -> None:
        await self.promoter.stop()
        await self.stuck_watch.stop()
        await self.watch.stop()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    def _counted(self, handler):
        async def run(args: dict[str, Any]) -> dict[str, Any]:
            self.busy += 1
            try:
                return await handler(args)
            finally:
                self.busy -= 1
        return run

    # -- reading ---------------------------------------------------------------------------
    def view(self) -> LeaderView:
        if not self.node.is_leader():
            raise NotLeader(self.node.leader())
        return LeaderView(self.node, self.config)

    def stuck_members(self, view: LeaderView | None = None) -> dict[str, str]:
        """On the leader, each member that is stuck (``MembershipManager.stuck``) and why;
        elsewhere nothing (only the leader knows how far each member has come)."""
        if view is None:
            if not self.node.is_leader():
                return {}
            view = self.view()
        mgr = view.manager
        found = {node: mgr.stuck(node, self.config.stuck_after) for node in sorted(mgr.members)}
        return {node: why for node, why in found.items() if why}

    def change_in_progress(self) -> str | None:
        index = self.node.pending_change()
        if not index:
            return None
        what = describe_change(self.node.applied_membership, self.node.membership)
        return f"{what} (log index {index}, not committed yet)"

    async def cluster_status(self, args: dict[str, Any]) -> dict[str, Any]:
        return self.view().cluster_json(self.change_in_progress())

    async def cluster_health(self, args: dict[str, Any]) -> dict[str, Any]:
        view = self.view()
        max_lag = _int_arg(args, "max_lag", 1000, minimum=0)
        stuck_after = _seconds_arg(args, "stuck_after", self.config.stuck_after)
        health = view.manager.health(max_lag=max_lag, stuck_after=stuck_after)
        health["term"] = view.status.term
        return health

    async def membership(self, args: dict[str, Any]) -> dict[str, Any]:
        """This node's committed (applied) configuration: what RemovalWatch asks peers."""
        node = self.node
        status = node.status()
        applied = node.applied_membership
        return {"id": node.id, "cluster_id": node.cluster_id, "role": status.role.value, "term": status.term,
                "leader": status.leader or None, "voters": sorted(applied.voters), "learners": sorted(applied.learners)}

    async def removal_check(self, args: dict[str, Any]) -> dict[str, Any]:
        self.watch.check_soon()
        return {"checking": self.node.id}

    async def introduce(self, args: dict[str, Any]) -> dict[str, Any]:
        """Tell a node that is about to be added where its peers are: until the first
        configuration reaches it, it has no address to answer its leader at."""
        peers = args.get("peers")
        if not isinstance(peers, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in peers.items()):
            raise OperationRefused("peers must map member ids to peer addresses")
        node = self.node
        if node.is_member():
            return {"introduced": False, "message": f"{node.id} is a member already and knows its peers"}
        cluster_id = args.get("cluster_id")
        if not isinstance(cluster_id, str) or not cluster_id:
            raise OperationRefused("cluster_id must name the cluster the node is about to join")
        if node.cluster_id and node.cluster_id != cluster_id:
            raise OperationRefused(f"{node.id} belongs to cluster {node.cluster_id}, not {cluster_id}")
        for address in peers.values():
            _address_arg({"address": address})
        node.learn_peers(peers, cluster_id)
        log.info("node %s term %d: told where its peers are (%s); waiting for a leader to add it",
                 node.id, node.term, ", ".join(f"{k}={v}" for k, v in sorted(peers.items())))
        return {"introduced": True}

    # -- changing --------------------------------------------------------------------------
    async def add(self, args: dict[str, Any]) -> dict[str, Any]:
        node_id, address = _node_arg(args), _address_arg(args)
        threshold = _int_arg(args, "catchup_threshold", None, minimum=0)
        auto = args.get("auto_promote")
        if auto is not None and not isinstance(auto, bool):
            raise OperationRefused("auto_promote must be true or false")
        timeout = _timeout_arg(args)
        await self._settle(lambda m: node_id in m.members, timeout)
        note = self.view().manager.check_add(node_id, address)
        if note:
            return {"changed": False, "id": node_id, "message": note}
        self._refuse_if_in_flight()
        settings = {k: v for k, v in (("catchup_threshold", threshold), ("auto_promote", auto)) if v is not None}
        if settings or self.node.meta(LEARNER_SETTINGS_META + node_id):
            # Replicated, so a leader elected later promotes it by the same rules.
            record = encode_meta(LEARNER_SETTINGS_META + node_id, json.dumps(settings) if settings else "")
            try:
                await self.node.propose(record, timeout)
            except asyncio.TimeoutError:
                return {"changed": False, "timeout": True, "id": node_id,
                        "message": f"{node_id} was not added: its settings were not committed within {_secs(timeout)}s "
                                   f"(is a quorum of voters running? see `kvctl cluster health`)"}
        change = ConfigChange(ChangeKind.ADD_LEARNER, node_id, address)
        result = await self._change(change, f"adding {node_id} ({address}) as a learner", timeout)
        if result.get("changed"):
            view = self.view()
            result["message"] = (f"added {node_id} ({address}) as a learner; "
                                 + (f"it is promoted automatically once within {view.manager.threshold_for(node_id)} "
                                    f"entries of the leader" if view.member_json(node_id)["auto_promote"] else
                                    "auto-promotion is off for it: promote it with `kvctl cluster promote "
                                    f"{node_id}` once it has caught up")
                                 + (f"; {node_id} must run with the cluster's secret (--secret-file: a copy of the "
                                    f"file the members run with), or its peer traffic is dropped"
                                    if self.node.config.secret_file else ""))
        return result

    async def promote(self, args: dict[str, Any]) -> dict[str, Any]:
        node_id = _node_arg(args)
        threshold = _int_arg(args, "catchup_threshold", None, minimum=0)
        timeout = _timeout_arg(args)
        await self._settle(lambda m: node_id in m.voters, timeout)
        note = self.view().manager.check_promote(node_id, threshold)
        if note:
            return {"changed": False, "id": node_id, "message": note}
        self._refuse_if_in_flight()
        return await self._change(ConfigChange(ChangeKind.PROMOTE, node_id), f"promoting {node_id} to voter", timeout)

    async def remove(self, args: dict[str, Any]) -> dict[str, Any]:
        node_id = _node_arg(args)
        force = bool(args.get("force", False))
        timeout = _timeout_arg(args)
        await self._settle(lambda m: node_id not in m.members, timeout)
        view = self.view()
        view.manager.check_remove(node_id, force=force)
        self._refuse_if_in_flight()
        if node_id == self.node.id:
            return await self._remove_self(view.manager, timeout)
        address = view.clients.get(node_id)
        result = await self._change(ConfigChange(ChangeKind.REMOVE, node_id), f"removing {node_id}", timeout)
        if result.get("changed"):
            result["message"] = f"removed {node_id}; it shuts itself down once it learns of its removal"
            if address:
                self._spawn(self._tell_removed(node_id, address))
        return result

    async def _remove_self(self, mgr: MembershipManager, timeout: float) -> dict[str, Any]:
        """--force on the leader: hand leadership to the best voter, then have it remove us."""
        deadline = time.monotonic() + timeout
        me = self.node.id
        target = mgr.best_transfer_target(exclude=[me])
        log.info("node %s term %d: removing itself: transferring leadership to %s first", me, self.node.term, target)
        moved = await self._transfer(target, timeout / 2)  # the rest is for the removal
        if not moved:
            return {"changed": False, "timeout": True, "id": me,
                    "message": f"leadership did not move to {target} within {_secs(timeout / 2)}s, so {me} was not removed"}
        address = self.node.meta(f"client_address/{target}")
        if not address:
            raise OperationRefused(f"leadership moved to {target}, but its client address is unknown; "
                                   f"run `kvctl cluster remove {me}` again")
        async with self._connect([address], timeout=max(1.0, deadline - time.monotonic())) as client:
            result = await client.admin("remove", timeout=max(1.0, deadline - time.monotonic()), id=me,
                                        wait=max(0.5, deadline - time.monotonic() - 1.0))
        result["transferred_to"] = target
        result["message"] = f"transferred leadership to {target}, then " + result.get("message", f"removed {me}")
        return result

    async def transfer(self, args: dict[str, Any]) -> dict[str, Any]:
        timeout = _timeout_arg(args, default=10.0)
        view = self.view()
        me, term = self.node.id, view.status.term
        target = args.get("id")
        if target in (None, ""):
            target = view.manager.best_transfer_target(exclude=[me])
            if target is None:
                raise MembershipRefused("cannot transfer leadership: no other voter is healthy and caught up")
        else:
            target = _node_arg(args)
        note = view.manager.check_transfer(target)
        if note:
            return {"changed": False, "leader": target, "term": term, "message": note}
        started = time.monotonic()
        if not await self._transfer(target, timeout):
            node = self.node
            now = node.leader() or "nobody"
            return {"changed": False, "timeout": True, "leader": node.leader() or None, "term": node.term,
                    "message": f"leadership did not move to {target} within {_secs(timeout)}s ({now} leads now)"}
        elapsed = time.monotonic() - started
        term = self.node.term
        log.info("node %s term %d: leadership transferred to %s in %.2fs", me, term, target, elapsed)
        return {"changed": True, "leader": target, "previous_leader": me, "term": term,
                "seconds": round(elapsed, 3),
                "message": f"leadership transferred from {me} to {target} in {elapsed:.2f}s (term {term})"}

    async def _transfer(self, target: str, timeout: float) -> bool:
        """Ask the core to hand over (again, if an attempt lapses) until ``target`` leads."""
        deadline = time.monotonic() + timeout
        node = self.node
        while True:
            status = node.status()
            if status.role is Role.LEADER:
                if status.lead_transferee != target:
                    node.transfer_leadership(target)  # the core first brings it up to date
            elif status.leader == target:
                return True
            elif status.leader:
                raise OperationRefused(f"leadership moved to {status.leader} instead of {target}; "
                                       f"run the transfer again if you still want it")
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(POLL)

    # -- plumbing --------------------------------------------------------------------------
    async def _settle(self, done, timeout: float) -> None:
        """If a change is in flight that already does what is asked, wait for it to commit
        (so the caller reports "already done" truthfully); otherwise return at once."""
        deadline = time.monotonic() + timeout
        while True:
            node = self.node
            if not node.is_leader():
                raise NotLeader(node.leader())
            if not node.pending_change() or not done(node.membership):
                return
            if time.monotonic() >= deadline:
                raise OperationRefused(f"{self.change_in_progress()} did not complete within {_secs(timeout)}s")
            await asyncio.sleep(POLL)

    def _refuse_if_in_flight(self) -> None:
        pending = self.change_in_progress()
        if pending:
            raise MembershipRefused(f"another configuration change is in progress: {pending}; "
                                    f"only one change at a time, retry when it has completed")

    async def _change(self, change: ConfigChange, what: str, timeout: float) -> dict[str, Any]:
        node = self.node
        deadline = time.monotonic() + timeout
        first_commit_deadline = time.monotonic() + min(FIRST_COMMIT_WAIT, timeout)
        while True:
            try:
                index = await node.propose_change(change, max(0.1, deadline - time.monotonic()))
                break
            except ConfigChangeRefused as exc:
                # A new leader must commit an entry of its own term first: that takes a moment.
                if "not committed an entry of its term" in str(exc) and time.monotonic() < first_commit_deadline:
                    await asyncio.sleep(POLL)
                    continue
                self._refuse_if_in_flight()  # names the change that got in first
                raise MembershipRefused(f"{what} refused: {exc}") from None
            except ProposalLost:
                raise OperationRefused(f"{what} was lost in a leader change; check `kvctl cluster members` "
                                       f"and retry") from None
            except asyncio.TimeoutError:
                return {"changed": False, "timeout": True, "id": change.node,
                        "message": f"{what} was proposed but not committed within {_secs(timeout)}s "
                                   f"(is a quorum of voters running? see `kvctl cluster health`)"}
        membership = node.membership
        log.info("node %s term %d: %s committed at index %d", node.id, node.term, what, index)
        return {"changed": True, "id": change.node, "index": index,
                "voters": sorted(membership.voters), "learners": sorted(membership.learners),
                "message": what.replace("adding", "added", 1).replace("promoting", "promoted", 1)
                .replace("removing", "removed", 1)}

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _tell_removed(self, node_id: str, address: str) -> None:
        """Nudge a removed node to check its membership now: the leader stops replicating
        to it the moment its removal is appended, so it would otherwise only notice after
        an election timeout without a leader."""
        try:
            async with self._connect([address], timeout=2.0) as client:
                await client.admin("removal_check")
        except (KeyvalError, OSError, asyncio.TimeoutError) as exc:
            log.debug("node %s: could not tell %s of its removal: %s", self.node.id, node_id, exc)


def _secs(seconds: float) -> str:
    """A wait as people read it: 2.99002 is 3, 3.75 stays 3.8."""
    return f"{round(seconds, 1):g}"


def _node_arg(args: dict[str, Any]) -> str:
    try:
        return parse_node_id(args.get("id"), "member id")
    except ConfigError as exc:
        raise OperationRefused(str(exc)) from None


def _address_arg(args: dict[str, Any]) -> str:
    try:
        return parse_address(args.get("address"), "peer address")
    except ConfigError as exc:
        raise OperationRefused(str(exc)) from None


def _int_arg(args: dict[str, Any], name: str, default, minimum: int):
    value = args.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise OperationRefused(f"{name} must be a whole number >= {minimum}, not {value!r}")
    return value


def _seconds_arg(args: dict[str, Any], name: str, default: float) -> float:
    value = args.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_TIMEOUT:
        raise OperationRefused(f"{name} must be a number of seconds in (0, {MAX_TIMEOUT:g}], not {value!r}")
    return float(value)


def _timeout_arg(args: dict[str, Any], default: float = DEFAULT_TIMEOUT) -> float:
    """``wait``: how long the operation may wait for its outcome (seconds)."""
    value = args.get("wait", default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_TIMEOUT:
        raise OperationRefused(f"wait must be a number of seconds in (0, {MAX_TIMEOUT:g}], not {value!r}")
    return float(value)
