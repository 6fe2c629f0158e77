"""The storage failures the core knows, kept apart from ``storage`` (which re-exports them)
so that ``keyval.errors``, which re-exports StorageError to plugins, kvctl and the client
library, loads none of the core's value types with it."""
from __future__ import annotations


class StorageError(Exception):
    """Storage cannot do what was asked: the base of every storage failure, the read errors
    below and a backend's damaged data alike (``keyval.errors`` re-exports it, and adds the
    damaged-data ones: ``CorruptLog``, ``CorruptSnapshot``)."""


class Compacted(StorageError):
    """The requested index is below the first index: it was compacted into a snapshot."""


class Unavailable(StorageError):
    """The requested index is beyond the last index."""


class SnapshotUnavailable(StorageError):
    """The snapshot asked for is no longer the current one (a newer one replaced it)."""
