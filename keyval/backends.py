"""The descriptors a plugin returns from ``keyval_storage_backends`` / ``keyval_transport_backends``.

A descriptor only names a backend and says how to open one; nothing is opened until the node
runtime calls ``factory`` for the backend the operator chose.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class StorageBackend:
    """``factory(data_dir, options)`` returns an open storage object (see ``keyval.hookspecs``)."""

    name: str
    factory: Callable[[str | None, dict[str, Any]], Any]
    description: str = ""


@dataclass(frozen=True)
class TransportBackend:
    """``factory(options)`` returns a transport object (see ``keyval.hookspecs``)."""

    name: str
    factory: Callable[[dict[str, Any]], Any]
    description: str = ""
