"""The built-in storage backends against the conformance suite third-party plugins run.

Both are opened through the real plugin manager (entry points included), by name.
"""
from __future__ import annotations

from keyval.testing.storage_conformance import StorageConformance


class TestMemory(StorageConformance):
    backend = "memory"
    persistent = False
    snapshot_retention = 2


class TestSegment(StorageConformance):
    backend = "segment"
    snapshot_retention = 2
