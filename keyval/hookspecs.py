"""The pluggy hook specifications of KeyVal: everything a plugin can implement.

A plugin is a module (or object) with functions marked ``@keyval.hookimpl`` whose names are
the hooks below. Third-party packages make theirs known through the entry-point groups
``keyval.storage`` and ``keyval.transport``; the built-in backends in ``plugins/`` register
the same way.

The last four hooks are *events*. The node calls them through ``keyval.plugin_api.loading.notify``:
every plugin gets each event, and one that raises is logged (once per plugin and hook) and
skipped, never allowed to stop the others or the node. They run synchronously on the node's
event loop, the thread that also drives Raft and serves clients: while a plugin's function
runs, the node does nothing else. Return quickly; hand slow work (a network call, a file
write) to a thread or queue of your own. Each hook below says where it runs and what a slow
plugin costs there.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from keyval.plugin_api.backends import StorageBackend, TransportBackend

PROJECT = "keyval"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def keyval_storage_backends() -> list[StorageBackend]:
    """Return the storage backends this plugin provides, as ``StorageBackend`` descriptors.

    Called once on every plugin; the operator picks one backend by name (``--storage``).
    ``factory(data_dir, options)`` returns an open storage: an object with every member of
    the Protocol ``keyval.plugin_api.storage.Storage``, where each one's promise is written (and only
    there). ``keyval serve`` checks every member before it serves and refuses a backend that
    lacks one; ``keyval.testing.storage_conformance`` checks the promises.
    """


@hookspec
def keyval_transport_backends() -> list[TransportBackend]:
    """Return the transport backends this plugin provides, as ``TransportBackend`` descriptors.

    Called once on every plugin; the operator picks one backend by name (``--transport``).
    ``factory(options)`` returns a transport: an object with every member of the Protocol
    ``keyval.plugin_api.transport.Transport``, where each one's promise is written (and only there).
    ``keyval serve`` checks every member before it serves and refuses a backend that lacks
    one; ``keyval.testing.transport_conformance`` checks the promises.
    """


@hookspec
def keyval_node_started(node_id: str, config: Any) -> None:
    """Tell the plugin a node has started, with its effective configuration.

    Off the apply path, once: the storage is open and the transport listens, the tick and
    Ready loops start right after it returns. A slow plugin delays the node's first tick and
    its first Ready (peers' messages wait meanwhile); client requests are not served yet.
    """


@hookspec
def keyval_node_stopping(node_id: str) -> None:
    """Tell the plugin a node is about to shut down.

    Off the apply path, once, before the node's loops are stopped and its backends closed.
    A slow plugin delays the shutdown by as long as it takes.
    """


@hookspec
def keyval_role_changed(node_id: str, term: int, role: str, leader: str | None) -> None:
    """Tell the plugin a node's Raft role changed (e.g. to ``"leader"``), and who leads now.

    In the Ready loop, after the Ready's entries are durable and its messages sent, before
    its committed entries are applied (so on the path to applying them). A slow plugin holds
    the whole node for its duration: those entries, the writes waiting on them, heartbeats
    and elections all wait. Longer than an election timeout, and a new leader may lose its
    leadership at once.
    """


@hookspec
def keyval_membership_changed(node_id: str, term: int, membership: Any) -> None:
    """Tell the plugin the cluster's membership (voters and learners) changed, as seen by a node.

    On the apply path: called while the configuration entry is applied, before the entries
    after it in the same Ready. A slow plugin delays those entries, the answers to the writes
    in them, and (the loop being blocked) heartbeats and everything else the node does.
    """
