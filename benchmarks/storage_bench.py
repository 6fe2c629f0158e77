"""Storage benchmark: the segment log against the disk's own fsync floor, and snapshots.

    python benchmarks/storage_bench.py [--dir DIR] [--quick]

Everything runs in one go on the disk holding DIR (default: a temp dir under the current
directory, removed afterwards), so the ratios compare like with like:

1. the floor: ``os.write`` of 4 KiB appended to a file + ``os.fsync``, operations per second
   (and, for reference, the same with ``os.fdatasync``, which the segment log uses);
2. ``segment`` appends of 100-byte entries in batches of 1, 10, 100 and 1000, each batch
   ``append`` + ``sync`` (one fdatasync): batches/s, entries/s, and batches/s as a ratio to
   the floor (1.0 = as fast as a bare write+fsync; above 1, faster). Phases 1 and 2 run in
   turns of short slices, so a disk shared with other work slows them all alike;
3. the time to reopen (recover) a log of 1,000,000 entries;
4. a snapshot of 1,000,000 keys (msgpack batches of key, value, revisions — the shape of the
   KV state machine's own snapshots) written and read through ``SnapshotStore``: MB/s of
   uncompressed data, and the compression ratio.

``--quick`` shortens every phase (100,000 entries and keys) for a smoke run. Not a test.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import msgspec  # noqa: E402

from keyval.raft.types import Entry, Membership, SnapshotMeta  # noqa: E402
from keyval_plugins.storage.segment.options import SegmentOptions  # noqa: E402
from keyval_plugins.storage.segment.storage import SegmentStorage  # noqa: E402
from keyval_plugins.storage.snapshots import SnapshotStore  # noqa: E402

ENTRY_SIZE = 100


class Floor:
    """Appends of 4 KiB to a file, each followed by fsync: the disk's own floor."""

    def __init__(self, directory: Path, sync=os.fsync) -> None:
        self.name = f"floor: os.write 4 KiB + os.{sync.__name__}"
        self.sync = sync
        self.path = directory / f"floor-{sync.__name__}.dat"
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.block = os.urandom(4096)
        self.batch = 1

    def step(self) -> float:
        started = time.perf_counter()
        os.write(self.fd, self.block)
        self.sync(self.fd)
        return time.perf_counter() - started

    def close(self) -> None:
        os.close(self.fd)
        self.path.unlink()


class SegmentAppends:
    """``batch`` entries of 100 bytes per ``append`` + ``sync``."""

    def __init__(self, directory: Path, batch: int) -> None:
        self.directory = directory
        self.store = SegmentStorage(str(directory))
        self.payload = os.urandom(ENTRY_SIZE)
        self.batch = batch
        self.name = f"segment append+sync, batch {batch:>4} x 100 B"
        self.next = 1

    def step(self) -> float:
        # Building the entries is the caller's work, not the storage's: not timed.
        entries = [Entry(1, i, data=self.payload) for i in range(self.next, self.next + self.batch)]
        self.next += self.batch
        started = time.perf_counter()
        self.store.append(entries)
        self.store.sync()
        return time.perf_counter() - started

    def close(self) -> None:
        self.store.close()
        shutil.rmtree(self.directory)


def interleaved_rates(runners: list, seconds: float, slices: int = 10) -> list[float]:
    """Operations per second of each runner, timed in turns of short slices so that a shared,
    noisy disk slows them all alike."""
    ops = [0] * len(runners)
    spent = [0.0] * len(runners)
    for _ in range(slices):
        for k, runner in enumerate(runners):
            until = time.perf_counter() + seconds / slices
            while time.perf_counter() < until:
                spent[k] += runner.step()
                ops[k] += 1
    return [n / t for n, t in zip(ops, spent)]


def reopen_time(directory: Path, count: int, batch: int = 1000) -> tuple[float, float]:
    """(seconds to write, seconds to reopen) a log of ``count`` entries of 100 bytes."""
    payload = os.urandom(ENTRY_SIZE)
    store = SegmentStorage(str(directory))
    started = time.perf_counter()
    for lo in range(1, count + 1, batch):
        store.append([Entry(1 + lo // 100_000, i, data=payload) for i in range(lo, min(lo + batch, count + 1))])
        if lo // batch % 50 == 0:
            store.sync()
    store.close()
    written = time.perf_counter() - started
    started = time.perf_counter()
    store = SegmentStorage(str(directory))
    reopened = time.perf_counter() - started
    assert store.last_index() == count
    store.close()
    shutil.rmtree(directory)
    return written, reopened


def state_machine_chunks(keys: int, batch: int = 10_000) -> list[bytes]:
    """A KV state of ``keys`` keys as msgpack batches of (key, value, created, modified)."""
    rng = random.Random(7)
    cities = ["Lisbon", "Osaka", "Nairobi", "Quito", "Oslo", "Perth", "Austin", "Lyon"]
    chunks, items = [msgspec.msgpack.encode({"revision": keys, "items": keys, "sessions": []})], []
    for i in range(keys):
        value = (f'{{"id":{i},"name":"user{rng.randrange(10**6)}","city":"{rng.choice(cities)}",'
                 f'"score":{rng.randrange(10**4)},"active":{"true" if rng.random() < 0.8 else "false"}}}').encode()
        revision = i + 1 + rng.randrange(50)
        items.append((f"users/{i:08d}".encode(), value, i + 1, revision))
        if len(items) == batch:
            chunks.append(msgspec.msgpack.encode(items))
            items = []
    if items:
        chunks.append(msgspec.msgpack.encode(items))
    return chunks


def snapshot_rates(directory: Path, keys: int) -> tuple[int, float, float, float]:
    """(bytes, write MB/s, read MB/s, compression ratio) for a snapshot of ``keys`` keys."""
    chunks = state_machine_chunks(keys)
    size = sum(map(len, chunks))
    store = SnapshotStore(str(directory))
    meta = SnapshotMeta(keys, 3, Membership(frozenset({"n1", "n2", "n3"})))
    started = time.perf_counter()
    info = store.save(meta, chunks)
    wrote = time.perf_counter() - started
    started = time.perf_counter()
    loaded = store.load_newest()
    read = time.perf_counter() - started
    assert loaded is not None and len(loaded.data) == size
    shutil.rmtree(directory)
    return size, size / wrote / 1e6, size / read / 1e6, size / info.size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", help="directory on the disk to measure (default: a temp dir here)")
    parser.add_argument("--quick", action="store_true", help="short phases, 100,000 entries and keys")
    args = parser.parse_args()
    seconds = 0.5 if args.quick else 3.0
    count = 100_000 if args.quick else 1_000_000
    root = Path(tempfile.mkdtemp(prefix="storage-bench-", dir=args.dir or "."))
    try:
        print(f"storage benchmark in {root} ({'quick' if args.quick else 'full'} run)")
        runners = [Floor(root), Floor(root, getattr(os, "fdatasync", os.fsync))]
        runners += [SegmentAppends(root / f"batch{b}", b) for b in (1, 10, 100, 1000)]
        try:
            rates = interleaved_rates(runners, seconds)
        finally:
            for runner in runners:
                runner.close()
        floor = rates[0]
        print(f"{runners[0].name:<40} {floor:8,.0f} ops/s      ({1e3 / floor:.2f} ms each)")
        for runner, rate in zip(runners[1:], rates[1:]):
            if isinstance(runner, Floor):
                per = f"{rate:8,.0f} ops/s     {'':20}"
            else:
                per = f"{rate:8,.0f} batches/s {rate * runner.batch:10,.0f} entries/s"
            print(f"{runner.name:<40} {per} {rate / floor:5.2f} x floor")
        written, reopened = reopen_time(root / "reopen", count)
        print(f"segment log of {count:,} entries: written in {written:.2f} s, reopened in {reopened:.2f} s")
        size, write_mbs, read_mbs, ratio = snapshot_rates(root / "snapshots", count)
        print(f"snapshot of {count:,} keys ({size / 1e6:.1f} MB): write {write_mbs:.0f} MB/s, "
              f"read {read_mbs:.0f} MB/s, compression {ratio:.1f}x")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
