"""The pluggy hook specifications of KeyVal: everything a plugin can implement.

A plugin is a module (or object) with functions marked ``@keyval.hookimpl`` whose names are
the hooks below. Third-party packages make theirs known through the entry-point groups
``keyval.storage`` and ``keyval.transport``; the built-in backends in ``plugins/`` register
the same way.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from keyval.backends import StorageBackend, TransportBackend

PROJECT = "keyval"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def keyval_storage_backends() -> list[StorageBackend]:
    """Return the storage backends this plugin provides, as ``StorageBackend`` descriptors.

    Called once on every plugin; the operator picks one backend by name (``--storage``).
    ``factory(data_dir, options)`` returns an open storage: an object with every member of
    the Protocol ``keyval.storage.Storage``, where each one's promise is written (and only
    there). ``keyval serve`` checks every member before it serves and refuses a backend that
    lacks one; ``keyval.testing.storage_conformance`` checks the promises.
    """


@hookspec
def keyval_transport_backends() -> list[TransportBackend]:
    """Return the transport backends this plugin provides, as ``TransportBackend`` descriptors.

    Called once on every plugin; the operator picks one backend by name (``--transport``).
    ``factory(options)`` returns a transport: an object with every member of the Protocol
    ``keyval.transport.Transport``, where each one's promise is written (and only there).
    ``keyval serve`` checks every member before it serves and refuses a backend that lacks
    one; ``keyval.testing.transport_conformance`` checks the promises.
    """


@hookspec
def keyval_node_started(node_id: str, config: Any) -> None:
    """Tell the plugin a node has started, with its effective configuration."""


@hookspec
def keyval_node_stopping(node_id: str) -> None:
    """Tell the plugin a node is about to shut down."""


@hookspec
def keyval_role_changed(node_id: str, term: int, role: str, leader: str | None) -> None:
    """Tell the plugin a node's Raft role changed (e.g. to ``"leader"``), and who leads now."""


@hookspec
def keyval_membership_changed(node_id: str, term: int, membership: Any) -> None:
    """Tell the plugin the cluster's membership (voters and learners) changed, as seen by a node."""
