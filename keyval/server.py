"""``keyval serve``: one node — runtime, client service, signals, logging."""
from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import signal
import sys

from keyval.ops.admin import AdminOperations
from keyval.client import AsyncClient
from keyval.clientport.auth import ClientSecurity
from keyval.clientport.limits import ClientLimits
from keyval.client.protocol import RegisterClientAddress
from keyval.cluster.operations import ClusterOperations
from keyval.config import NodeConfig
from keyval.clientport.descriptors import (DescriptorPlan, nofile_limit, on_accept_out_of_descriptors, open_descriptors,
                                plan_descriptors, raise_nofile_limit)
from keyval.errors import ConfigError, KeyvalError
from keyval.runtime.event_loop import loop_name
from keyval.kv import encode_meta
from keyval.ops.maintenance import Maintenance
from keyval.runtime.metrics import MetricsServer
from keyval.runtime.node import Node
from keyval.runtime.timing import Timing
from keyval.plugin_api.loading import Plugins
from keyval.clientport.service import CLIENT_ADDRESS_META, ClientService

log = logging.getLogger("keyval.server")

#: how often a node run with --insecure-peers says so again
INSECURE_WARNING_INTERVAL = 60.0
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(config: NodeConfig) -> None:
    handler: logging.Handler
    if config.log_file:
        try:
            handler = logging.FileHandler(config.log_file)
        except OSError as exc:
            raise ConfigError(f"log_file: cannot open {config.log_file!r}: {exc.strerror}") from None
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.log_level)


#: the tcp transport's default max_connections (plugins/transport/tcp_options.py)
PEER_CONNECTIONS = 1024


def plan_connections(config: NodeConfig) -> tuple[NodeConfig, DescriptorPlan]:
    """Connection limits of every port that fit the descriptors this process may open, and
    the config with the peer transport's limit lowered to its share if need be."""
    options = dict(config.transport_options)
    tcp = config.transport == "tcp" or (config.transport == "faulty" and options.get("inner", "tcp") == "tcp")
    plan = plan_descriptors(nofile_limit(), open_descriptors(), config.reserved_descriptors,
                            config.max_client_connections, options.get("max_connections", PEER_CONNECTIONS) if tcp else 0)
    if tcp and plan.peer_connections < options.get("max_connections", PEER_CONNECTIONS):
        options["max_connections"] = plan.peer_connections
        config = dataclasses.replace(config, transport_options=options)
    return config, plan


def client_limits(config: NodeConfig, plan: DescriptorPlan) -> ClientLimits:
    return ClientLimits(max_connections=plan.client_connections, idle_timeout=config.client_idle_timeout,
                        frame_bytes=config.client_frame_bytes, buffer_bytes=config.client_buffer_bytes)


class Server:
    def __init__(self, config: NodeConfig, plugins: Plugins, timing: Timing = Timing()) -> None:
        self.config = config
        node_config, self.descriptors = plan_connections(config)
        self.node = Node(node_config, plugins, timing)
        self.security = ClientSecurity.from_config(config, self.node.metrics.registry)
        # Areas add their operations here (keyval.cluster, keyval.ops.maintenance).
        self.admin = AdminOperations()
        self.maintenance = Maintenance(self.node).register(self.admin)
        # Set when the node should exit on its own (e.g. it learned it was removed).
        self.shutdown_requested = asyncio.Event()
        self.cluster = ClusterOperations(self.node, config, self.admin, self.shutdown_requested.set,
                                         connect=self.security.caller.client)
        self.service = ClientService(self.node, config.client_addr, admin=self.admin, gate=self.security.gate,
                                     tls=self.security.server_tls, limits=client_limits(config, self.descriptors))
        self.node.metrics.attach_client_port(self.service.limiter, self.descriptors)
        self.metrics_server = (MetricsServer(self.node, self.node.metrics, config.metrics_addr,
                                             self.descriptors.metrics_connections,
                                             stuck_members=self.cluster.stuck_members)
                               if config.metrics_addr else None)
        self._registrar: asyncio.Task | None = None
        self._background: list[asyncio.Task] = []

    async def start(self) -> None:
        try:
            await self.node.start()
        except OSError as exc:
            raise KeyvalError(f"cannot start node {self.config.id}: {exc}") from None
        try:
            await self.service.start()
            if self.metrics_server is not None:
                await self.metrics_server.start()
        except OSError as exc:
            await self.service.close()
            await self.node.stop()
            raise KeyvalError(f"cannot listen: {exc}") from None
        self._registrar = asyncio.create_task(self._register_client_address())
        if self.config.insecure_peers:
            self._background.append(asyncio.create_task(self._warn_insecure_peers()))
        self.cluster.start()
        self.security.warn_if_open(self.service.address)
        log.info("node %s serving clients on %s, peers on %s (event loop: %s)", self.node.id, self.service.address,
                 self.config.peer_addr, loop_name(asyncio.get_running_loop()))
        plan = self.descriptors
        log.info("node %s: open-file limit %d (%d in use at start): up to %d client, %d peer and %d metrics "
                 "connections, %d descriptors reserved", self.node.id, plan.limit, plan.in_use,
                 plan.client_connections, plan.peer_connections, plan.metrics_connections, plan.reserved)

    async def stop(self) -> None:
        await self.cluster.stop()
        tasks = [t for t in (self._registrar, *self._background) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.service.close()
        self.maintenance.close()
        if self.metrics_server is not None:
            await self.metrics_server.close()
        await self.node.stop()

    async def _warn_insecure_peers(self, interval: float = INSECURE_WARNING_INTERVAL) -> None:
        """Running without a cluster secret is a choice an operator must not forget."""
        while True:
            log.warning("node %s term %d: peer traffic is NOT authenticated (--insecure-peers): anyone who reaches "
                        "%s can rewrite data or stop the cluster; see docs/security.md", self.node.id,
                        self.node.term, self.config.peer_addr)
            await asyncio.sleep(interval)

    async def _register_client_address(self) -> None:
        """Make this node's client address known cluster-wide (kept in the replicated
        metadata), so followers can point clients at the leader and status can show it. The
        leader takes it only from a holder of the node credential (keyval.clientport.auth)."""
        node, mine = self.node, self.service.address
        key = CLIENT_ADDRESS_META + node.id
        client: AsyncClient | None = None
        try:
            while True:
                await asyncio.sleep(0.5)
                if not node.is_member() or node.meta(key) == mine:
                    continue
                try:
                    if node.is_leader():
                        await node.propose(encode_meta(key, mine), 5.0)
                        continue
                    leader_address = node.meta(CLIENT_ADDRESS_META + node.leader())
                    if not leader_address:
                        continue
                    if client is None or client.endpoints[0] != leader_address:
                        if client is not None:
                            await client.close()
                        client = self.security.caller.client([leader_address], timeout=5.0)
                    await client._call(RegisterClientAddress(node.id, mine), follow_leader=False)
                except (KeyvalError, asyncio.TimeoutError, OSError) as exc:
                    log.debug("node %s: client address not registered yet: %s", node.id, exc)
        finally:
            if client is not None:
                await client.close()


async def run(config: NodeConfig, plugins: Plugins) -> int:
    # The fsync runs in a worker thread; a shorter GIL switch interval lets it take the GIL
    # back promptly when the disk answers, instead of waiting out the loop's 5 ms slice.
    sys.setswitchinterval(0.0005)
    raise_nofile_limit()
    server = Server(config, plugins)
    on_accept_out_of_descriptors(asyncio.get_running_loop(),
                                 lambda detail: server.service.limiter.report("accept_out_of_descriptors", detail))
    await server.start()
    # What startup made (modules, classes, the state read from disk) lives as long as the
    # process: moved out of the collector's sight, a full collection walks only what came
    # after, so its pause on a busy node stays short.
    gc.freeze()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stopped = asyncio.create_task(server.node.wait_stopped())
    waiter = asyncio.create_task(stop.wait())
    leaving = asyncio.create_task(server.shutdown_requested.wait())
    await asyncio.wait({stopped, waiter, leaving}, return_when=asyncio.FIRST_COMPLETED)
    log.info("node %s shutting down", config.id)
    await server.stop()
    waiter.cancel()
    leaving.cancel()
    return 1 if server.node.fatal is not None else 0
