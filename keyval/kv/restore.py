"""A restore being uploaded through the log, decoded as its chunks apply.

The work of a restore is spread over its chunks: each RESTORE_CHUNK appends its bytes,
updates the running sha256 and decodes the snapshot frames it completes into a sorted map
beside the live data. RESTORE_COMMIT then only compares the checksum and counts and swaps
the map in — constant time, so applying it does not stall a node (and its heartbeats) the
way decoding a large store at once would.

The bytes received are the source of truth: they go into snapshots, and a node restored
from a snapshot rebuilds the rest by feeding them again. Everything here depends only on
those bytes, so every node reaches the same verdict.
"""
from __future__ import annotations

import hashlib

import msgspec
from sortedcontainers import SortedDict

from keyval.kv.snapshot import SNAPSHOT_FORMAT


class StagedRestore:
    def __init__(self, restore_id: str, size: int, checksum: str) -> None:
        self.id = restore_id
        self.size = size
        self.checksum = checksum
        self.raw = bytearray()
        self._hash = hashlib.sha256()
        self._parsed = 0
        self._expected_items: int | None = None
        #: key -> (value, 0, 0): revision 0 stands for "the revision of the commit"
        self.items = SortedDict()
        #: the first reason these bytes are not a KV snapshot ("" while they may still be)
        self.error = ""

    @classmethod
    def from_snapshot(cls, fields: list) -> "StagedRestore":
        restore_id, size, checksum, raw = fields
        staged = cls(str(restore_id), int(size), str(checksum))
        staged.feed(bytes(raw))
        return staged

    def to_snapshot(self) -> list:
        return [self.id, self.size, self.checksum, bytes(self.raw)]

    def feed(self, chunk: bytes) -> None:
        self.raw.extend(chunk)
        self._hash.update(chunk)
        if self.raw and not self.error:
            try:
                self._parse()
            except (msgspec.DecodeError, ValueError, TypeError, KeyError, IndexError, RecursionError) as exc:
                # Every node applies these bytes: anything raised here would stop them all.
                self.error = f"not a KV snapshot ({exc})"

    def problem(self) -> str:
        """Why this restore cannot be committed, or "" if it can."""
        if len(self.raw) != self.size:
            return f"incomplete: {len(self.raw)} of {self.size} bytes staged"
        if self._hash.hexdigest() != self.checksum:
            return "the staged bytes do not match their sha256 checksum"
        if self.error:
            return self.error
        if self._parsed != len(self.raw) or self._expected_items is None:
            return "not a KV snapshot (it ends inside a frame)"
        if len(self.items) != self._expected_items:
            return f"not a KV snapshot (it holds {len(self.items)} keys, its header says {self._expected_items})"
        return ""

    def _parse(self) -> None:
        raw = self.raw
        if self._parsed == 0:
            if raw[0] != SNAPSHOT_FORMAT:
                raise ValueError(f"unknown snapshot format {raw[0]}")
            self._parsed = 1
        while self._parsed + 4 <= len(raw):
            start = self._parsed + 4
            end = start + int.from_bytes(raw[self._parsed : start], "big")
            if end > len(raw):
                return  # the rest of this frame comes with a later chunk
            frame = msgspec.msgpack.decode(raw[start:end])  # a copy: a view would pin raw's size
            self._parsed = end
            if self._expected_items is None:
                items = frame["items"]
                if not isinstance(items, int) or items < 0:
                    raise ValueError("bad item count in the header")
                self._expected_items = items
                continue
            for key, value, _created, _modified in frame:
                if not (isinstance(key, bytes) and isinstance(value, bytes)):
                    raise ValueError("item key and value must be bytes")
                self.items[key] = (value, 0, 0)
