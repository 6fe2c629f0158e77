"""The descriptors a plugin returns from ``keyval_storage_backends`` / ``keyval_transport_backends``.

A descriptor only names a backend and says how to open one; nothing is opened until the node
runtime calls ``factory`` for the backend the operator chose.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # listing plugins imports this module: it must not pull in the Raft core
    from keyval.plugin_api.storage import Storage
    from keyval.plugin_api.transport import Transport


@dataclass(frozen=True)
class StorageBackend:
    """``factory(data_dir, options)`` returns an open ``keyval.plugin_api.storage.Storage``."""

    name: str
    factory: Callable[[str | None, dict[str, Any]], Storage]
    description: str = ""


@dataclass(frozen=True)
class TransportBackend:
    """``factory(options)`` returns a ``keyval.plugin_api.transport.Transport`` (not yet started)."""

    name: str
    factory: Callable[[dict[str, Any]], Transport]
    description: str = ""
