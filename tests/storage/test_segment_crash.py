"""Crash tests with real processes: SIGKILL a writer at random moments, reopen, check.

A child process appends batches to a segment log and syncs in a loop, printing after every
sync the last index now durable; now and then it truncates a suffix with a new term, like a
follower meeting a new leader. The parent kills it at a random moment, reopens the log
and checks:

* every index reported durable is there, with the term it had (unless a truncation the
  child announced after its last sync cut it — that truncation may have reached the disk);
* the log is a clean prefix: indexes contiguous, terms never decreasing, and every entry's
  data exactly what the child wrote (derived from index and term), so no half-written entry.

The log carries over from round to round, so every round also recovers what the previous
kill left. ``SEGMENT_CRASH_ROUNDS`` sets the number of rounds (30 by default); run this file
directly for a longer standalone run: ``python tests/storage/test_segment_crash.py 500``.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from keyval.raft.types import Entry
from keyval_plugins.storage.segment.options import SegmentOptions
from keyval_plugins.storage.segment.storage import SegmentStorage

ROOT = Path(__file__).resolve().parents[2]
SEGMENT_SIZE = 256 * 1024

CHILD = r"""
import random, sys
from keyval.raft.types import Entry
from keyval_plugins.storage.segment.options import SegmentOptions
from keyval_plugins.storage.segment.storage import SegmentStorage

def data_for(index, term):
    label = b"%d/%d;" % (index, term)
    size = index * 7919 % 301
    return (label * (size // len(label) + 1))[:size]

path, seed, segment_size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
store = SegmentStorage(path, SegmentOptions(segment_size=segment_size))
last = store.last_index()
term = max(store.term(last), 1)
print("ready", last, flush=True)
while True:
    if last > 10 and rng.random() < 0.05:
        term += 1
        last -= rng.randint(0, min(last - 1, 300))
        print("cut", last + 1, flush=True)
    n = rng.choice((1, 1, 1, 5, 20, 100, 1000))
    store.append([Entry(term, i, data=data_for(i, term)) for i in range(last + 1, last + n + 1)])
    store.sync()
    last += n
    print("synced", last, term, flush=True)
"""


def data_for(index: int, term: int) -> bytes:
    label = b"%d/%d;" % (index, term)
    size = index * 7919 % 301
    return (label * (size // len(label) + 1))[:size]


def run_child_and_kill(path: Path, seed: int, rng: random.Random) -> list[list[str]]:
    """Start a writer, SIGKILL it a random moment after it opened the log; its report lines."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(seed), str(SEGMENT_SIZE)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    lines: list[list[str]] = []
    ready = threading.Event()

    def read() -> None:
        for raw in child.stdout:
            if raw.endswith(b"\n"):  # a line cut by the kill was never fully reported
                lines.append(raw.decode().split())
                ready.set()
        ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(30), "the writer did not start"
        time.sleep(rng.uniform(0.01, 0.3))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        reader.join(10)
    if child.returncode != -signal.SIGKILL:
        raise AssertionError(f"the writer failed: {child.stderr.read().decode()}")
    child.stderr.close()
    return lines


def expected_after(lines: list[list[str]], terms: list[int]) -> int:
    """Apply the child's reports to ``terms`` (term by index, from what was opened); the
    highest index that must have survived."""
    last = int(lines[0][1])
    cut = None
    for line in lines[1:]:
        if line[0] == "cut":
            cut = int(line[1])
        else:
            synced, term = int(line[1]), int(line[2])
            lo = cut if cut is not None else last + 1
            del terms[lo:]
            terms.extend([term] * (synced - lo + 1))
            last, cut = synced, None
    # A cut announced after the last sync may have reached the disk (truncation is durable
    # at once); the entries below it may not be lost either way.
    return last if cut is None else min(last, cut - 1)


def check_log(store: SegmentStorage, terms: list[int], durable: int, lo: int) -> None:
    last = store.last_index()
    assert last >= durable, f"entries {last + 1}..{durable} were reported durable and are gone"
    entries = store.entries(lo, last + 1)
    assert [e.index for e in entries] == list(range(lo, last + 1))
    previous = store.term(lo - 1)
    for e in entries:
        assert e.data == data_for(e.index, e.term), f"entry {e.index} is damaged"
        assert e.term >= previous, f"term goes down at {e.index}"
        previous = e.term
        if e.index <= durable:
            assert e.term == terms[e.index], f"entry {e.index} has term {e.term}, {terms[e.index]} was synced"


def crash_rounds(path: Path, rounds: int, seed: int = 20240) -> int:
    rng = random.Random(seed)
    terms = [0]
    checked_to = 0
    for n in range(rounds):
        lines = run_child_and_kill(path, seed + n, rng)
        durable = expected_after(lines, terms)
        store = SegmentStorage(str(path), SegmentOptions(segment_size=SEGMENT_SIZE))
        try:
            # Earlier entries were checked in earlier rounds; a cut reaches back at most 300.
            check_log(store, terms, durable, max(1, min(checked_to, durable) - 400))
            checked_to = store.last_index()
            # What survived beyond the durable point is the log now: the next child goes on from it.
            del terms[durable + 1 :]
            terms.extend(store.term(i) for i in range(durable + 1, checked_to + 1))
        finally:
            store.close()
    store = SegmentStorage(str(path), SegmentOptions(segment_size=SEGMENT_SIZE))
    check_log(store, terms, store.last_index(), 1)  # the whole log, once
    last = store.last_index()
    store.close()
    return last


def test_sigkill_mid_append_never_loses_a_durable_entry(tmp_path):
    rounds = int(os.environ.get("SEGMENT_CRASH_ROUNDS", "30"))
    last = crash_rounds(tmp_path / "data", rounds)
    assert last > 0
    assert len(os.listdir(tmp_path / "data" / "log")) > 1, "the rounds should span segments"


if __name__ == "__main__":
    import tempfile

    count = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    with tempfile.TemporaryDirectory() as tmp:
        started = time.monotonic()
        last = crash_rounds(Path(tmp) / "data", count, seed=int(time.time()))
        print(f"{count} kill rounds passed in {time.monotonic() - started:.0f}s; log ends at {last}")
