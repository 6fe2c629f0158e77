"""The ``memory`` storage backend: keeps the Raft log in memory and loses it on exit."""
from __future__ import annotations

from typing import Any

from keyval import hookimpl
from keyval.plugin_api.backends import StorageBackend


def open_memory(data_dir: str | None, options: dict[str, Any]):
    # Imported here so that listing plugins never imports the Raft core.
    from keyval_plugins.storage.memory_storage import MemoryBackend

    return MemoryBackend(keep=int(options.get("snapshots_keep", 2)))


@hookimpl
def keyval_storage_backends() -> list[StorageBackend]:
    return [StorageBackend("memory", open_memory, "in-memory log; everything is lost on exit (tests, demos)")]
