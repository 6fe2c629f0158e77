"""What KeyVal loads through the entry point: one hook returning one backend descriptor."""
from __future__ import annotations

from typing import Any

import keyval
from keyval.plugin_api.backends import StorageBackend
from keyval.errors import ConfigError


def open_sqlite(data_dir: str | None, options: dict[str, Any]):
    # Imported on use, so that `keyval plugins` lists the backend without opening anything.
    from keyval_sqlite.storage import SqliteStorage

    if data_dir is None:
        raise ConfigError("the sqlite storage backend needs a data dir (--data-dir)")
    keep = options.get("snapshots_keep", 2)
    if type(keep) is not int or keep < 1:
        raise ConfigError(f"sqlite storage: snapshots_keep must be a whole number of at least 1, not {keep!r}")
    return SqliteStorage(data_dir, snapshots_keep=keep)


@keyval.hookimpl
def keyval_storage_backends() -> list[StorageBackend]:
    return [StorageBackend("sqlite", open_sqlite, "Raft log in one SQLite file (WAL, synchronous=FULL)")]
