"""The ``segment`` storage backend: the durable default, a segmented log on disk."""
from __future__ import annotations

from typing import Any

from keyval import hookimpl
from keyval.backends import StorageBackend


def open_segment(data_dir: str | None, options: dict[str, Any]):
    raise NotImplementedError("the segment storage backend arrives with issue #3")


@hookimpl
def keyval_storage_backends() -> list[StorageBackend]:
    return [StorageBackend("segment", open_segment, "durable segmented log with snapshots on disk (default)")]
