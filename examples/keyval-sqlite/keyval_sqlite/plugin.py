"""What KeyVal loads through the entry point: one hook returning one backend descriptor."""
from __future__ import annotations

from typing import Any

import keyval
from keyval.backends import StorageBackend
from keyval.errors import ConfigError


def open_sqlite(data_dir: str | None, options: dict[str, Any]):
    # Imported on use, so that `keyval plugins` lists the backend without opening anything.
    from keyval_sqlite.storage import SqliteStorage

    if data_dir is None:
        raise ConfigError("the sqlite storage backend needs a data dir (--data-dir)")
    return SqliteStorage(data_dir, snapshots_keep=int(options.get("snapshots_keep", 2)))


@keyval.hookimpl
def keyval_storage_backends() -> list[StorageBackend]:
    return [StorageBackend("sqlite", open_sqlite, "Raft log in one SQLite file (WAL, synchronous=FULL)")]
