"""Background duties of the membership layer.

``AutoPromoter`` (on the leader): promotes a learner once it has caught up.

``StuckWatch`` (on the leader): one log line when a member becomes stuck (reachable, behind,
and its replication not moving) and one when it moves again.

``RemovalWatch`` (on every node): shuts the node down cleanly once it learns that it was
removed. The core keeps replicating to a node being removed until its removal commits, so
it usually applies the configuration without itself, but that alone proves nothing (it may
be a stale one replayed before being re-added), and it may miss it; so it asks its peers.
It asks when the leader nudges it after the removal (``removal_check``), when it lost its
leader, and when it applied a configuration without itself. Only a leader of its own
cluster, at its term or later, whose committed configuration lacks this node counts as
proof. A node that has not been a member since it started (a removed node restarted, waiting
to be added again, or a new node not yet added) is not shut down. A node has been a member
once, in this process, it was in touch with a leader as a member, or it applied a
configuration listing itself, or installed a snapshot whose membership lists it: a learner
removed right after its snapshot was installed has been added, and so shuts down.
"""
from __future__ import annotations

import asyncio
import logging
import time

from keyval.client import AsyncClient
from keyval.cluster.view import client_addresses
from keyval.errors import KeyvalError
from keyval.errors import ProposalLost
from keyval.raft import ChangeKind, ConfigChange, ConfigChangeRefused, Membership, NotLeader, Role

log = logging.getLogger("keyval.cluster")

PROMOTE_INTERVAL = 0.25
STUCK_CHECK_INTERVAL = 1.0
WATCH_INTERVAL = 0.25
#: while leaderless, peers are asked at most this often
LEADERLESS_CHECK_INTERVAL = 2.0
ASK_TIMEOUT = 1.0
#: a removed node finishes the requests it is serving for at most this long before exiting
DRAIN_TIMEOUT = 5.0


class _Every:
    """A duty run every ``interval`` seconds in its own task; a round that fails is logged and
    the next one runs anyway (one bad round must not end the duty)."""

    interval = 1.0
    what = "a background duty"

    def __init__(self, ops) -> None:
        self.ops = ops
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"{self.ops.node.id}-{type(self).__name__}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("node %s: %s failed: %s", self.ops.node.id, self.what, exc, exc_info=exc)

    async def round(self) -> None:
        raise NotImplementedError


class AutoPromoter(_Every):
    interval = PROMOTE_INTERVAL
    what = "auto-promotion round"

    async def round(self) -> None:
        node = self.ops.node
        if not node.is_leader():
            return
        view = self.ops.view()
        if view.status.lead_transferee or self.ops.change_in_progress():
            return
        mgr = view.manager
        for learner in mgr.promotion_candidates():
            lag, limit = mgr.lag(learner), mgr.threshold_for(learner)
            try:
                index = await node.propose_change(ConfigChange(ChangeKind.PROMOTE, learner), 5.0)
            except (ConfigChangeRefused, NotLeader):
                return  # a manual change got in first, or leadership moved: look again next round
            except (ProposalLost, asyncio.TimeoutError) as exc:
                log.warning("node %s term %d: auto-promotion of %s did not commit: %s",
                            node.id, node.term, learner, exc or "timeout")
                return
            log.info("node %s term %d: auto-promoted learner %s to voter at index %d (caught up: %d entries "
                     "behind, threshold %d)", node.id, node.term, learner, index, lag, limit)
            return  # one change at a time


class StuckWatch(_Every):
    interval = STUCK_CHECK_INTERVAL
    what = "checking for stuck members"

    def __init__(self, ops) -> None:
        super().__init__(ops)
        #: the members reported stuck, and the term of the leadership that reported them
        self._stuck: set[str] = set()
        self._term = -1

    async def round(self) -> None:
        self.check()

    def check(self) -> None:
        node = self.ops.node
        leading = node.is_leader()
        if not leading or node.term != self._term:
            # A new leadership counts from scratch; what an old one reported is not news.
            self._stuck, self._term = set(), node.term
        if not leading:
            return
        view = self.ops.view()
        stuck = self.ops.stuck_members(view)
        for member in sorted(stuck.keys() - self._stuck):
            log.warning("node %s term %d: %s", node.id, node.term, stuck[member])
        mgr = view.manager
        for member in sorted(self._stuck - stuck.keys()):
            if member not in mgr.members:
                now = "it left the configuration"
            elif not mgr.healthy(member):
                now = "it is unreachable"
            else:
                now = f"replicating again (match index {mgr.members[member].match_index}, {mgr.lag(member)} entries behind)"
            log.info("node %s term %d: member %s is no longer stuck: %s", node.id, node.term, member, now)
        self._stuck = set(stuck)


class RemovalWatch:
    def __init__(self, node, request_shutdown, busy, connect=AsyncClient) -> None:
        """``connect(addresses, timeout)``: a client for a peer's client port, holding this
        node's credential (keyval.clientport.auth.NodeCaller)."""
        self.node = node
        self._connect = connect
        self._request_shutdown = request_shutdown
        self._busy = busy
        self._task: asyncio.Task | None = None
        self._nudged = asyncio.Event()
        self._had_contact = False
        self._last_check = 0.0
        self._reported_waiting = False
        self._leaving = False

    def attach(self) -> None:
        self.node.membership_listeners.append(self._on_applied)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"{self.node.id}-removal-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def check_soon(self) -> None:
        self._nudged.set()

    def _on_applied(self, index: int, membership: Membership) -> None:
        # Replayed at start: no news. A configuration (or installed snapshot) listing this
        # node means it was added in this process's lifetime. One without it is only a
        # hint — a node being re-added replays its old removal before the entry that adds it back.
        if index <= self.node.initial_commit:
            return
        if self.node.id in membership.members:
            self._had_contact = True
        elif self._had_contact:
            self.check_soon()

    async def _run(self) -> None:
        while not self._leaving:
            try:
                await asyncio.wait_for(self._nudged.wait(), WATCH_INTERVAL)
            except asyncio.TimeoutError:
                pass
            nudged = self._nudged.is_set()
            self._nudged.clear()
            try:
                await self._look(nudged)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("node %s: membership check failed: %s", self.node.id, exc, exc_info=exc)

    async def _look(self, nudged: bool) -> None:
        node = self.node
        if not node.started():
            return
        member = node.is_member()
        if member and (node.leader() or node.is_leader()):
            self._had_contact = True
        leaderless = member and not node.leader() and not node.is_leader()
        due = leaderless and time.monotonic() - self._last_check >= LEADERLESS_CHECK_INTERVAL
        if not (nudged or due):
            return
        self._last_check = time.monotonic()
        proof = await self._proof_of_removal()
        if proof is None:
            return
        if not self._had_contact:
            if not self._reported_waiting:
                self._reported_waiting = True
                log.info("node %s term %d: not a member of cluster %s any more (%s); waiting to be added again",
                         node.id, node.term, node.cluster_id, proof)
            return
        self._leaving = True
        log.info("node %s term %d: removed from the cluster (%s); shutting down", node.id, node.term, proof)
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while self._busy() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # let replies in flight (e.g. the remove itself) go out
        await asyncio.sleep(0.1)
        self._request_shutdown()

    async def _proof_of_removal(self) -> str | None:
        node = self.node
        peers = {n: a for n, a in client_addresses(node).items() if n != node.id}
        if not peers:
            return None
        answers = await asyncio.gather(*(_ask(self._connect, address) for address in peers.values()))
        for answer in answers:
            if (
                isinstance(answer, dict)
                and answer.get("role") == Role.LEADER.value
                and answer.get("cluster_id") == node.cluster_id
                and isinstance(answer.get("term"), int) and answer["term"] >= node.term
                and node.id not in answer.get("voters", []) + answer.get("learners", [])
            ):
                return f"leader {answer.get('id')} at term {answer['term']} no longer lists it"
        return None


async def _ask(connect, address: str) -> dict | None:
    try:
        async with connect([address], timeout=ASK_TIMEOUT) as client:
            return await client.admin("membership")
    except (KeyvalError, OSError, asyncio.TimeoutError):
        return None
