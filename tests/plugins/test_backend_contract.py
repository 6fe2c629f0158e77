"""`keyval serve` checks the chosen backends against their whole contract before serving.

A storage missing ``snapshot_meta`` used to pass the old 8-method check, serve, and die with
a traceback at the first Ready; now the node refuses at once, in one line (exit 2).
"""
import asyncio
import dataclasses
import inspect
import os
import tempfile
import types

import pytest

import keyval
from keyval.plugin_api.backends import StorageBackend
from keyval.config import NodeConfig
from keyval.plugin_api.contracts import IncompleteBackend, mismatched_members, missing_members, protocol_members
from keyval.runtime.node import Node
from keyval.plugin_api.loading import build_plugin_manager
from keyval.plugin_api.storage import Storage
from keyval.plugin_api.transport import Transport



def env_with_path(site) -> dict[str, str]:
    """The environment with the fake distributions' directory on the path, first."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}

# A third-party store written against an older contract: it wraps the built-in memory
# backend and forwards every call but one, so only ``snapshot_meta`` is missing.
NO_META_PLUGIN = """
    import keyval
    from keyval.plugin_api.backends import StorageBackend

    FORWARDED = ("initial_state", "first_index", "last_index", "term", "entries", "config_indexes",
                 "snapshot_chunk", "append", "set_hard_state", "sync", "apply_snapshot", "create_snapshot",
                 "load_snapshot", "list_snapshots", "compact", "close", "durable_watermark")


    class NoMetaStorage:
        def __init__(self, inner):
            for name in FORWARDED:
                setattr(self, name, getattr(inner, name))


    def open_store(data_dir, options):
        from keyval_plugins.storage.memory_storage import MemoryBackend

        return NoMetaStorage(MemoryBackend())


    @keyval.hookimpl
    def keyval_storage_backends():
        return [StorageBackend("nometa", open_store, "forgot snapshot_meta")]
"""

# A transport that never grew ``stats``: it wraps the built-in tcp transport.
NO_STATS_PLUGIN = """
    import keyval
    from keyval.plugin_api.backends import TransportBackend


    class NoStatsTransport:
        def __init__(self, inner):
            self._inner = inner
            self.start, self.send, self.close = inner.start, inner.send, inner.close
            self.set_cluster_id = inner.set_cluster_id

        @property
        def address(self):
            return self._inner.address

        @property
        def cluster_id(self):
            return self._inner.cluster_id


    def open_transport(options):
        from keyval_plugins.transport.tcp import open_tcp

        return NoStatsTransport(open_tcp(options))


    @keyval.hookimpl
    def keyval_transport_backends():
        return [TransportBackend("nostats", open_transport, "forgot stats")]
"""

# The same omission over real files: a segment store behind a wrapper without ``snapshot_meta``.
NO_META_SEGMENT_PLUGIN = """
    import keyval
    from keyval.plugin_api.backends import StorageBackend


    class NoMetaSegment:
        def __init__(self, inner):
            for name in dir(inner):
                if not name.startswith("_") and name != "snapshot_meta":
                    setattr(self, name, getattr(inner, name))


    def open_store(data_dir, options):
        from keyval_plugins.storage.segment.storage import SegmentStorage

        return NoMetaSegment(SegmentStorage(data_dir))


    @keyval.hookimpl
    def keyval_storage_backends():
        return [StorageBackend("nometaseg", open_store, "forgot snapshot_meta")]
"""

# Every member there, two of them wrong: an async sync (the node would never await it: no fsync,
# no error) and an append that wants a second argument the node never passes.
MISCALLED_PLUGIN = """
    import keyval
    from keyval.plugin_api.backends import StorageBackend


    class MiscalledStorage:
        def __init__(self, inner):
            for name in dir(inner):
                if not name.startswith("_") and name not in ("sync", "append"):
                    setattr(self, name, getattr(inner, name))
            self._inner = inner

        async def sync(self):
            self._inner.sync()

        def append(self, entries, fsync_now):
            self._inner.append(entries)


    def open_store(data_dir, options):
        from keyval_plugins.storage.memory_storage import MemoryBackend

        return MiscalledStorage(MemoryBackend())


    @keyval.hookimpl
    def keyval_storage_backends():
        return [StorageBackend("miscalled", open_store, "async sync, append with two arguments")]
"""

# A transport whose start is a plain function: the node would await its None.
SYNC_START_PLUGIN = """
    import keyval
    from keyval.plugin_api.backends import TransportBackend


    class SyncStartTransport:
        def __init__(self, inner):
            self._inner = inner
            self.send, self.close, self.stats = inner.send, inner.close, inner.stats
            self.set_cluster_id = inner.set_cluster_id
            self.address = self.cluster_id = None

        def start(self, node_id, address, deliver):
            pass


    def open_transport(options):
        from keyval_plugins.transport.tcp import open_tcp

        return SyncStartTransport(open_tcp(options))


    @keyval.hookimpl
    def keyval_transport_backends():
        return [TransportBackend("syncstart", open_transport, "start is not async")]
"""

SERVE = ("keyval", "serve", "--id", "n1", "--peer-addr", "127.0.0.1:0", "--client-addr", "127.0.0.1:0",
         "--bootstrap", "n1=127.0.0.1:0", "--insecure-peers")


def test_serve_refuses_a_storage_without_snapshot_meta(run_script, make_dist, tmp_path):
    site = make_dist("nometa-keyval", "1.0", {"keyval.storage": {"nometa": "nometa_mod"}},
                     {"nometa_mod": NO_META_PLUGIN})
    result = run_script(*SERVE, "--storage", "nometa", "--data-dir", str(tmp_path / "n1"), env=env_with_path(site))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "keyval serve: storage backend 'nometa' from plugin 'nometa' (package nometa-keyval 1.0) returned a "
        "NoMetaStorage that is not a storage: missing snapshot_meta (see keyval/plugin_api/storage.py); refusing to start")


def test_recover_refuses_a_storage_without_snapshot_meta_as_serve_does(run_script, make_dist, tmp_path):
    from keyval.raft import Membership, bootstrap_state
    from keyval_plugins.storage.segment.storage import SegmentStorage

    data_dir = str(tmp_path / "n1")
    store = SegmentStorage(data_dir)
    hard_state, entries = bootstrap_state(Membership(frozenset({"n1", "n2", "n3"})))
    store.append(entries)
    store.set_hard_state(hard_state)
    store.close()
    site = make_dist("nometaseg-keyval", "1.0", {"keyval.storage": {"nometaseg": "nometaseg_mod"}},
                     {"nometaseg_mod": NO_META_SEGMENT_PLUGIN})
    result = run_script("keyval", "recover", "--data-dir", data_dir, "--force-new-cluster", "--id", "n1",
                        "--storage", "nometaseg", env=env_with_path(site))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "keyval recover: storage backend 'nometaseg' from plugin 'nometaseg' (package nometaseg-keyval 1.0) returned "
        "a NoMetaSegment that is not a storage: missing snapshot_meta (see keyval/plugin_api/storage.py); refusing to start"]
    store = SegmentStorage(data_dir)  # nothing was written: still the bootstrap entry alone
    assert (store.last_index(), store.initial_state()[0]) == (1, hard_state)
    store.close()


def test_serve_refuses_a_transport_without_stats(run_script, make_dist, tmp_path):
    site = make_dist("nostats-keyval", "0.3", {"keyval.transport": {"nostats": "nostats_mod"}},
                     {"nostats_mod": NO_STATS_PLUGIN})
    result = run_script(*SERVE, "--storage", "memory", "--transport", "nostats", "--data-dir", str(tmp_path / "n1"),
                        env=env_with_path(site))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "keyval serve: transport backend 'nostats' from plugin 'nostats' (package nostats-keyval 0.3) returned a "
        "NoStatsTransport that is not a transport: missing stats (see keyval/plugin_api/transport.py); refusing to start")


def test_serve_refuses_a_storage_it_would_call_wrongly(run_script, make_dist, tmp_path):
    site = make_dist("miscalled-keyval", "1.0", {"keyval.storage": {"miscalled": "miscalled_mod"}},
                     {"miscalled_mod": MISCALLED_PLUGIN})
    result = run_script(*SERVE, "--storage", "miscalled", "--data-dir", str(tmp_path / "n1"), env=env_with_path(site))
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "keyval serve: storage backend 'miscalled' from plugin 'miscalled' (package miscalled-keyval 1.0) returned a "
        "MiscalledStorage that is not a storage: append(entries, fsync_now) cannot be called with 1 argument(s) "
        "(entries); sync is async def, but the node calls it without await (it would never run) "
        "(see keyval/plugin_api/storage.py); refusing to start"]


def test_serve_refuses_a_transport_whose_start_is_not_async(run_script, make_dist, tmp_path):
    site = make_dist("syncstart-keyval", "1.0", {"keyval.transport": {"syncstart": "syncstart_mod"}},
                     {"syncstart_mod": SYNC_START_PLUGIN})
    result = run_script(*SERVE, "--storage", "memory", "--transport", "syncstart", "--data-dir", str(tmp_path / "n1"),
                        env=env_with_path(site))
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1:] == [  # after the storage's log line
        "keyval serve: transport backend 'syncstart' from plugin 'syncstart' (package syncstart-keyval 1.0) returned "
        "a SyncStartTransport that is not a transport: start is not async def (the node awaits it) "
        "(see keyval/plugin_api/transport.py); refusing to start"]


def test_the_protocols_name_every_member():
    assert len(protocol_members(Storage)) == 18  # the 9 reads the core makes, 9 writes of the runtime
    assert protocol_members(Transport) == {"start": True, "address": False, "cluster_id": False,
                                           "set_cluster_id": True, "send": True, "stats": True, "close": True}


@pytest.mark.parametrize("name", ["memory", "segment", "sqlite"])
def test_every_installed_storage_keeps_the_whole_contract(name):
    plugins = build_plugin_manager()
    if name not in plugins.backends["storage"]:
        pytest.skip(f"{name} not installed (./scripts/setup installs the sqlite example)")
    with tempfile.TemporaryDirectory() as data_dir:
        storage = plugins.backends["storage"][name].backend.factory(data_dir, {})
        try:
            assert missing_members(storage, Storage) == [] == mismatched_members(storage, Storage)
        finally:
            storage.close()


@pytest.mark.parametrize("name", ["tcp", "udp", "faulty"])
def test_every_builtin_transport_keeps_the_whole_contract(name):
    transport = build_plugin_manager().backends["transport"][name].backend.factory({})
    assert missing_members(transport, Transport) == [] == mismatched_members(transport, Transport)


@pytest.mark.parametrize("name", ["tcp", "udp", "faulty"])
def test_every_builtin_transport_starts_as_the_protocol_says(name):
    # start(node_id, address, deliver): the one signature the Protocol, the hookspec and
    # the node agree on.
    transport = build_plugin_manager().backends["transport"][name].backend.factory({})
    wanted = list(inspect.signature(Transport.start).parameters)[1:]
    assert list(inspect.signature(transport.start).parameters) == wanted == ["node_id", "address", "deliver"]


class _RefusedStore:
    """Registered directly: a segment storage (real files, real lock) behind a wrapper
    that forgot ``snapshot_meta``; it records whether the node closed it."""

    closed = False

    @staticmethod
    @keyval.hookimpl
    def keyval_storage_backends():
        def open_store(data_dir, options):
            inner = build_plugin_manager().backends["storage"]["segment"].backend.factory(data_dir, {})
            store = types.SimpleNamespace(**{name: getattr(inner, name) for name in protocol_members(Storage)
                                             if name not in ("snapshot_meta", "close")})

            def close():
                _RefusedStore.closed = True
                inner.close()
            store.close = close
            return store
        return [StorageBackend("refused", open_store, "forgot snapshot_meta")]


def test_a_refused_storage_is_closed_and_the_data_dir_let_go(tmp_path):
    config = NodeConfig(id="n1", peer_addr="127.0.0.1:0", client_addr="127.0.0.1:0", data_dir=str(tmp_path / "n1"),
                        storage="refused", bootstrap={"n1": "127.0.0.1:0"}, insecure_peers=True)
    plugins = build_plugin_manager(extra_plugins=[_RefusedStore])

    async def start():
        with pytest.raises(IncompleteBackend, match="missing snapshot_meta"):
            await Node(config, plugins).start()
        # The lock is released: a node with a complete storage opens the same data dir.
        good = Node(dataclasses.replace(config, storage="segment"), plugins)
        await good.start()
        await good.stop()

    asyncio.run(start())
    assert _RefusedStore.closed
