"""The built-in storage backends against the conformance suite third-party plugins run.

Both are opened through the real plugin manager (entry points included), by name.
"""
from __future__ import annotations

from pathlib import Path

from keyval.testing.storage_conformance import StorageConformance
from keyval.testing.storage_damage_checks import flip_a_byte_of_entry


class TestMemory(StorageConformance):
    backend = "memory"
    persistent = False
    snapshot_retention = 2


class TestSegment(StorageConformance):
    backend = "segment"
    snapshot_retention = 2

    def corrupt_newest_snapshot(self, data_dir: str) -> None:
        newest = max(Path(data_dir, "snapshots").glob("snapshot-*.snap"))
        raw = bytearray(newest.read_bytes())
        raw[-10] ^= 0xFF  # inside the compressed body
        newest.write_bytes(bytes(raw))

    def corrupt_log(self, data_dir: str) -> None:
        flip_a_byte_of_entry(sorted(Path(data_dir, "log").glob("*.seg")))


class TestSegmentSmallSegments(TestSegment):
    """Tiny segments and no read cache: truncation and compaction cross many files."""

    options = {"segment_size": "16KiB", "cache_bytes": 0}
