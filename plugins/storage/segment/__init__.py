"""The ``segment`` storage backend: the durable default, a segmented log on disk.

Options (``storage_options``): ``segment_size`` (default 64 MiB), ``snapshots_keep`` (2),
``snapshot_level`` (zstd level, 3), ``cache_bytes`` (recent entries kept in memory, 16 MiB).
The layout and the recovery rules are in ``storage.py``, ``log.py`` and ``format.py``.
"""
from __future__ import annotations

from typing import Any

from keyval import hookimpl
from keyval.plugin_api.backends import StorageBackend
from keyval.errors import ConfigError


def open_segment(data_dir: str | None, options: dict[str, Any]):
    if not data_dir:
        raise ConfigError("segment storage needs a data directory (--data-dir)")
    # Imported here so that listing plugins never imports the storage code.
    from .options import parse_options
    from .storage import SegmentStorage

    return SegmentStorage(data_dir, parse_options(options))


@hookimpl
def keyval_storage_backends() -> list[StorageBackend]:
    return [StorageBackend("segment", open_segment, "durable segmented log with snapshots on disk (default)")]
