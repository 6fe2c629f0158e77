"""Prometheus metrics and a health endpoint, served over HTTP on a node's metrics address.

Gauges are read from the node when scraped (nothing is computed in the Raft loop for them);
only events — leader changes, proposals, fsyncs — are counted as they happen. Each node has
its own registry: nothing here is global.
"""
from __future__ import annotations

import asyncio
import bisect
import errno
import json
import logging
from typing import TYPE_CHECKING, Callable

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from keyval.errors import ProposalLost
from keyval.raft import RaftError

if TYPE_CHECKING:
    from keyval.clientport.limits import ClientLimiter
    from keyval.clientport.descriptors import DescriptorPlan
    from keyval.runtime.node import Node
    from keyval.raft import RaftCore

log = logging.getLogger("keyval.metrics")

#: At most one log line per this many seconds about messages the core dropped from non-members.
REFUSAL_LOG_INTERVAL = 60.0

FSYNC_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.0)


class NodeMetrics:
    """The event counters a node updates; the rest is collected from its status on scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.leader_changes = Counter("keyval_leader_changes", "Times this node saw the leader change", registry=self.registry)
        self.proposals = Counter("keyval_proposals", "Proposals by outcome", ["outcome"], registry=self.registry)
        self.reads = Counter("keyval_linearizable_reads", "Linearizable reads by outcome", ["outcome"], registry=self.registry)
        self.fsync = LoopHistogram("keyval_fsync_seconds", "Time to make one batch of log writes durable",
                                   FSYNC_BUCKETS, self.registry)
        self.batch_entries = LoopHistogram("keyval_persist_batch_entries", "Entries made durable per fsync",
                                           (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), self.registry)
        # children resolved once: a label lookup per request is a cost on the hot path
        self._proposal_outcomes = {o: self.proposals.labels(o) for o in ("applied", "lost", "refused", "timeout", "failed")}
        self._read_outcomes = {o: self.reads.labels(o) for o in ("confirmed", "failed")}
        self.persist_retries = Counter("keyval_persist_retries", "Persists retried after a failure for want of disk "
                                       "space or descriptors, by error (ENOSPC, EDQUOT, EMFILE, ENFILE)", ["error"],
                                       registry=self.registry)
        # What the core refused, as last logged: (dropped from non-members, transfer votes).
        self._refusals_logged = (0, 0)
        self._refusals_logged_at = -REFUSAL_LOG_INTERVAL

    def count_proposal(self, fut: "asyncio.Future") -> None:
        """Done-callback of a proposal's future: count its outcome."""
        self._proposal_outcomes[_proposal_outcome(fut)].inc()

    def count_persist_retry(self, code: int) -> None:
        self.persist_retries.labels(errno.errorcode.get(code, str(code))).inc()

    def count_read(self, fut: "asyncio.Future") -> None:
        """Done-callback of a linearizable read's barrier: count its outcome."""
        ok = not fut.cancelled() and fut.exception() is None
        self._read_outcomes["confirmed" if ok else "failed"].inc()

    def log_refusals(self, node_id: str, core: "RaftCore", now: float) -> None:
        """Called every tick: one line when the core has refused peers' messages since the
        last line, at most once per REFUSAL_LOG_INTERVAL (a flood must not flood the log)."""
        counts = (core.dropped_non_member, core.refused_transfer_votes)
        if counts == self._refusals_logged or now - self._refusals_logged_at < REFUSAL_LOG_INTERVAL:
            return
        (dropped, refused), (dropped_before, refused_before) = counts, self._refusals_logged
        self._refusals_logged, self._refusals_logged_at = counts, now
        log.warning("node %s term %d: dropped %d message(s) from nodes in no known configuration (last from %r), "
                    "refused %d unannounced transfer vote(s)", node_id, core.term, dropped - dropped_before,
                    core.last_non_member, refused - refused_before)

    def attach(self, node: "Node") -> None:
        self.registry.register(_StatusCollector(node))

    def attach_client_port(self, limiter: "ClientLimiter", plan: "DescriptorPlan") -> None:
        self.registry.register(_ClientPortCollector(limiter, plan))


class LoopHistogram:
    """A histogram observed only from the event loop, so plain ints suffice; exported on
    scrape. (prometheus_client's Histogram takes a lock per bucket and per sum on every
    observation: measured at a tenth of a follower's CPU, observed twice per batch.)"""

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...], registry: CollectorRegistry) -> None:
        self.name, self.documentation = name, documentation
        self.bounds = tuple(float(b) for b in buckets)
        self.counts = [0] * (len(self.bounds) + 1)  # the last: above every bound (+Inf)
        self.sum = 0.0
        registry.register(self)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def describe(self):
        return []

    def collect(self):
        family = HistogramMetricFamily(self.name, self.documentation)
        cumulative, buckets = 0, []
        for bound, count in zip((*self.bounds, float("inf")), self.counts):
            cumulative += count
            buckets.append((floatToGoString(bound), cumulative))
        family.add_metric([], buckets, self.sum)
        yield family


def _proposal_outcome(fut: "asyncio.Future") -> str:
    if fut.cancelled():
        return "failed"
    exc = fut.exception()
    if exc is None:
        return "applied"
    if isinstance(exc, asyncio.TimeoutError):
        return "timeout"
    if isinstance(exc, ProposalLost):
        return "lost"
    if isinstance(exc, RaftError):
        return "refused"
    return "failed"


class _StatusCollector:
    def __init__(self, node: "Node") -> None:
        self.node = node

    def describe(self):
        return []

    def collect(self):
        node = self.node
        if not node.started():
            return
        status = node.status()
        for name, help_text, value in (
            ("keyval_term", "Current Raft term", status.term),
            ("keyval_is_leader", "1 if this node is the leader", int(status.role.value == "leader")),
            ("keyval_commit_index", "Highest log index known committed", status.commit),
            ("keyval_applied_index", "Highest log index applied to the state machine", status.applied),
            ("keyval_last_index", "Last log index held", status.last_index),
            ("keyval_first_index", "First log index held (after compaction)", status.first_index),
            ("keyval_keys", "Keys in the state machine", node.key_count),
            ("keyval_revision", "State machine revision", node.revision),
            ("keyval_voters", "Voting members in the configuration", len(status.membership.voters)),
            ("keyval_learners", "Learners in the configuration", len(status.membership.learners)),
        ):
            yield GaugeMetricFamily(name, help_text, value=value)
        yield CounterMetricFamily("keyval_raft_dropped_non_member",
                                  "Peer messages dropped: the sender is in no configuration this node knows",
                                  value=status.dropped_non_member)
        yield CounterMetricFamily("keyval_raft_refused_transfer_votes",
                                  "Votes skipping the leader lease from a node the leader did not name as transfer target",
                                  value=status.refused_transfer_votes)
        alarms = node.alarms()
        alarm = GaugeMetricFamily("keyval_alarm", "1 while an alarm is raised on this node (nospace: its client "
                                  "writes are refused, see space_reserve)", labels=["alarm"])
        alarm.add_metric(["nospace"], int("NOSPACE" in alarms))
        yield alarm
        space = node.space_status()
        if space["free_bytes"] is not None:
            yield GaugeMetricFamily("keyval_disk_free_bytes", "Free bytes of the data dir's filesystem, as last "
                                    "measured (about once a second)", value=space["free_bytes"])
        yield GaugeMetricFamily("keyval_space_reserve_bytes", "space_reserve: below this much free space the "
                                "NOSPACE alarm is raised", value=space["reserve_bytes"])
        role = GaugeMetricFamily("keyval_role", "1 for this node's current role", labels=["role"])
        for candidate in ("follower", "pre-candidate", "candidate", "leader"):
            role.add_metric([candidate], int(status.role.value == candidate))
        yield role
        if status.peers:
            tick = node.timing.tick_interval
            match = GaugeMetricFamily("keyval_peer_match_index", "Leader's view: log index a peer matches", labels=["peer"])
            lag = GaugeMetricFamily("keyval_peer_lag_entries", "Leader's view: entries a peer is behind", labels=["peer"])
            sent = CounterMetricFamily("keyval_peer_bytes_replicated", "Bytes of entries and snapshots sent to a peer", labels=["peer"])
            stalled = GaugeMetricFamily("keyval_peer_stalled_seconds", "Leader's view: seconds a peer has been behind "
                                        "with no replication progress (0: moving, or nothing to send)", labels=["peer"])
            rejected = CounterMetricFamily("keyval_peer_append_rejections", "AppendEntries a peer rejected under "
                                           "this leader", labels=["peer"])
            for peer in status.peers:
                if peer.id == node.id:
                    continue
                match.add_metric([peer.id], peer.match)
                lag.add_metric([peer.id], max(0, status.last_index - peer.match))
                sent.add_metric([peer.id], peer.bytes_sent)
                stalled.add_metric([peer.id], round(peer.stalled_ticks * tick, 3))
                rejected.add_metric([peer.id], peer.rejections)
            yield from (match, lag, sent, stalled, rejected)
        messages = CounterMetricFamily("keyval_transport_messages", "Peer messages by event (sent, received, dropped_*)", labels=["event"])
        for event, count in sorted(node.transport_stats().items()):
            if isinstance(count, (int, float)):
                messages.add_metric([event], count)
        yield messages


class _ClientPortCollector:
    """The client port's limits, what it holds against them, and every time one was hit."""

    def __init__(self, limiter: "ClientLimiter", plan: "DescriptorPlan") -> None:
        self.limiter, self.plan = limiter, plan

    def describe(self):
        return []

    def collect(self):
        from keyval.clientport.descriptors import open_descriptors

        limiter, limits = self.limiter, self.limiter.limits
        for name, help_text, value in (
            ("keyval_client_connections", "Client connections open", limiter.connections),
            ("keyval_client_connections_limit", "Client connections served at once (max_client_connections, "
             "lowered to fit the open-file limit)", limits.max_connections),
            ("keyval_client_buffered_bytes", "Bytes of unfinished client requests held", limiter.buffered),
            ("keyval_client_buffered_bytes_limit", "client_buffer_bytes", limits.buffer_bytes),
            ("keyval_client_frame_bytes_limit", "client_frame_bytes: the largest request", limits.frame_bytes),
            ("keyval_client_idle_timeout_seconds", "client_idle_timeout", limits.idle_timeout),
            ("keyval_open_descriptors", "File descriptors this process has open", open_descriptors()),
            ("keyval_open_descriptors_limit", "The open-file limit (RLIMIT_NOFILE) at startup", self.plan.limit),
            ("keyval_reserved_descriptors", "Descriptors no connection limit may use", self.plan.reserved),
            ("keyval_peer_connections_limit", "Inbound peer connections served at once", self.plan.peer_connections),
        ):
            yield GaugeMetricFamily(name, help_text, value=value)
        events = CounterMetricFamily("keyval_client_limit_events", "Client-port connections accepted, and every "
                                     "limit hit (refused, closed_*, requests_invalid, accept_out_of_descriptors)",
                                     labels=["event"])
        for event, count in limiter.snapshot().items():
            events.add_metric([event], count)
        yield events


def health(node: "Node", stuck_members: Callable[[], dict[str, str]] = dict) -> tuple[bool, dict]:
    """This node's own health (503 when it is not fit to serve: not a member, no leader, a
    fatal error, re-fetching entries it lost on disk (like etcd's CORRUPT alarm), an alarm
    raised (NOSPACE, as etcd), or persisting failing and being retried).

    On the leader the body also names any member it cannot replicate to although it reaches
    it (``stuck_members``, under ``warnings``): nobody else can see that, since the member
    itself answers, follows the leader and looks healthy. That does not make the leader's own
    answer 503 — a load balancer would take the one node that can serve writes out of
    rotation; `kvctl cluster health` exits 1 for it. An unreachable member is not reported
    here: its own /health already fails."""
    if not node.started():
        return False, {"healthy": False, "reason": "starting"}
    status = node.status()
    member = node.id in status.membership.members
    leader = status.leader or None
    alarms = node.alarms()
    persist_error = node.space_status()["persist_error"]
    ok = (member and leader is not None and node.fatal is None and not status.recovering_to and not alarms
          and persist_error is None)
    reason = "" if ok else (
        "fatal error" if node.fatal is not None
        else f"re-fetching entries lost on disk (up to index {status.recovering_to})" if status.recovering_to
        else "; ".join(f"{name} alarm: {why}" for name, why in sorted(alarms.items())) if alarms
        else f"persisting keeps failing, retrying: {persist_error}" if persist_error is not None
        else "not a member yet" if not member else "no leader")
    stuck = stuck_members() if ok else {}
    return ok, {"healthy": ok, "id": node.id, "role": status.role.value, "term": status.term, "leader": leader,
                "commit_index": status.commit, "applied_index": status.applied, "reason": reason,
                "recovering_to": status.recovering_to, "alarms": sorted(alarms),
                "stuck": sorted(stuck), "warnings": [stuck[n] for n in sorted(stuck)]}


class MetricsServer:
    """A minimal HTTP/1.0 server for ``GET /metrics`` and ``GET /health``."""

    def __init__(self, node: "Node", metrics: NodeMetrics, address: str, max_connections: int = 32,
                 stuck_members: Callable[[], dict[str, str]] = dict) -> None:
        self.node = node
        self.metrics = metrics
        #: on the leader, the members it cannot replicate to and why (keyval.cluster's policy)
        self.stuck_members = stuck_members
        self.address = address
        #: scrapes are few: more connections than this at once are closed unanswered
        self.max_connections = max_connections
        self._open = 0
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        host, _, port = self.address.rpartition(":")
        self._server = await asyncio.start_server(self._handle, host.strip("[]"), int(port))
        self.address = f"{host}:{self._server.sockets[0].getsockname()[1]}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open >= self.max_connections:
            writer.transport.abort()
            return
        self._open += 1
        try:
            async with asyncio.timeout(5):  # the whole request: a trickle cannot hold a slot
                request_line = await reader.readline()
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # headers are not needed
            parts = request_line.decode("latin-1").split()
            path = parts[1].split("?")[0] if len(parts) >= 2 else ""
            if path == "/metrics":
                code, ctype, body = 200, "text/plain; version=0.0.4", generate_latest(self.metrics.registry)
            elif path == "/health":
                ok, doc = health(self.node, self.stuck_members)
                code, ctype, body = (200 if ok else 503), "application/json", json.dumps(doc).encode()
            else:
                code, ctype, body = 404, "text/plain", b"not found: try /metrics or /health\n"
            reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[code]
            writer.write(f"HTTP/1.0 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            self._open -= 1
            writer.close()
