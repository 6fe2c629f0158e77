"""``keyval serve``: one node — runtime, client service, signals, logging."""
from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys

from keyval.admin import AdminOperations
from keyval.client import AsyncClient
from keyval.client_auth import ClientSecurity
from keyval.client_protocol import RegisterClientAddress
from keyval.cluster.operations import ClusterOperations
from keyval.config import NodeConfig
from keyval.errors import ConfigError, KeyvalError
from keyval.event_loop import loop_name
from keyval.kv import encode_meta
from keyval.maintenance import Maintenance
from keyval.metrics import MetricsServer
from keyval.node import Node, Timing
from keyval.plugins import Plugins
from keyval.service import CLIENT_ADDRESS_META, ClientService

log = logging.getLogger("keyval.server")

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


class Server:
    def __init__(self, config: NodeConfig, plugins: Plugins, timing: Timing = Timing()) -> None:
        self.config = config
        self.node = Node(config, plugins, timing)
        self.security = ClientSecurity.from_config(config, self.node.metrics.registry)
        # Areas add their operations here (keyval.cluster, keyval.maintenance).
        self.admin = AdminOperations()
        self.maintenance = Maintenance(self.node).register(self.admin)
        # Set when the node should exit on its own (e.g. it learned it was removed).
        self.shutdown_requested = asyncio.Event()
        self.cluster = ClusterOperations(self.node, config, self.admin, self.shutdown_requested.set,
                                         connect=self.security.caller.client)
        self.service = ClientService(self.node, config.client_addr, admin=self.admin, gate=self.security.gate,
                                     tls=self.security.server_tls)
        self.metrics_server = MetricsServer(self.node, self.node.metrics, config.metrics_addr) if config.metrics_addr else None
        self._registrar: asyncio.Task | None = None

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
        self.cluster.start()
        self.security.warn_if_open(self.service.address)
        log.info("node %s serving clients on %s, peers on %s (event loop: %s)", self.node.id, self.service.address,
                 self.config.peer_addr, loop_name(asyncio.get_running_loop()))

    async def stop(self) -> None:
        await self.cluster.stop()
        if self._registrar is not None:
            self._registrar.cancel()
            await asyncio.gather(self._registrar, return_exceptions=True)
        await self.service.close()
        self.maintenance.close()
        if self.metrics_server is not None:
            await self.metrics_server.close()
        await self.node.stop()

    async def _register_client_address(self) -> None:
        """Make this node's client address known cluster-wide (kept in the replicated
        metadata), so followers can point clients at the leader and status can show it. The
        leader takes it only from a holder of the node credential (keyval.client_auth)."""
        node, mine = self.node, self.service.address
        key = CLIENT_ADDRESS_META + node.id
        client: AsyncClient | None = None
        try:
            while True:
                await asyncio.sleep(0.5)
                core = node.core
                if core is None or node.id not in core.membership.members or node.kv.meta.get(key) == mine:
                    continue
                try:
                    if node.is_leader():
                        await node.propose(encode_meta(key, mine), 5.0)
                        continue
                    leader_address = node.kv.meta.get(CLIENT_ADDRESS_META + node.leader())
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
    server = Server(config, plugins)
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
