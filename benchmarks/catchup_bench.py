"""Catch-up benchmark: how fast a learner joining a cluster that holds N keys catches up.

    .venv/bin/python benchmarks/catchup_bench.py                  # 1,000,000 keys
    .venv/bin/python benchmarks/catchup_bench.py --keys 100000 --json-out catchup.json
    .venv/bin/python benchmarks/catchup_bench.py --keys 100000 --no-compact   # the log path

With real processes on loopback, in a new temp dir:

1. a 3-node cluster made as ``python -m keyval.bench`` makes it
   (``keyval.bench.BenchCluster``: ``kvctl local up --dir TMP --base-port FREE``;
   segment storage, tcp transport), with the ports of a 4th node kept free;
2. N keys loaded fast, by restore: a ``KVStore`` filled in this process (16-byte keys
   ``b"key-%012d"``, distinct 100-byte printable values), its data written as a backup
   archive by ``keyval.ops.backup.ArchiveWriter`` (what ``kvctl backup`` writes), then
   ``kvctl restore ARCHIVE --yes``;
3. ``kvctl compact`` (unless ``--no-compact``), so that the leader's log no longer holds the
   restore and the learner must be sent a snapshot; which path was taken is printed;
4. ``kvctl local start node4`` (a new, empty node), then the clock starts and
   ``kvctl cluster add node4 ADDR`` (a learner, promoted automatically once caught up);
   the leader's view of node4 (the member document ``kvctl cluster member node4 --json``
   prints) and node4's own status are polled every 50 ms until node4 is a voter and has
   applied every key; a progress line is printed every second;
5. one summary line: keys, MB replicated to node4 (the leader's Bytes Replicated, 1 MB =
   10^6 bytes), the catch-up time, MB/s, and the time to promotion. Then every node is
   stopped and the temp dir removed (``--keep`` keeps it), also after an error or Ctrl-C.

Caught up here means: the leader saw node4's match index reach the leader's last index before
the add, so node4 holds (durably) everything the cluster held when it was added. That is not the leader's
"Caught Up" flag, which promotion waits for: that one counts entries (within 100 by
default), whatever their size, so on the log path, where the restore sits in the log as
1 MiB entries, node4 is promoted with up to 100 MiB still to come (a NOTE says so when it
happens). node4 acknowledges a snapshot once it has stored it and only then loads it into
its state machine, so the time it has *applied* every key comes later; it is printed too.

kvctl commands run in this process through the CLI's own code (``kvctl.cli.build_cli``), so
no interpreter start-up is timed. Not a test: it asserts nothing.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import io
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from keyval import __version__  # noqa: E402
from keyval.ops.backup import ArchiveWriter, Manifest, iso_time  # noqa: E402
from keyval.bench import KEY_SIZE, VALUE_SIZE, BenchCluster, find_leader, key  # noqa: E402
from keyval.client import AsyncClient  # noqa: E402
from keyval.errors import ClientError  # noqa: E402
from keyval.kv import KVStore, encode_put  # noqa: E402

NEW_NODE = "node4"
POLL = 0.05
PROGRESS_EVERY = 1.0
ARCHIVE_CHUNK = 4 << 20
MB = 1e6
#: restore (per request) and compact (per node) of a million keys on a busy 2-core box
KVCTL_TIMEOUT = "300"


class BenchError(Exception):
    """A step failed; the message says which."""


# ----------------------------------------------------------------------------- kvctl, in-process
def kvctl(*args: str) -> dict | list:
    """One kvctl command with ``--json``, run in this process; its JSON document. What it
    prints on stderr (restore's summary) is shown only if it fails."""
    from kvctl.cli import build_cli

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            build_cli().main(args=[*args, "--json"], prog_name="kvctl")
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    text = out.getvalue().strip()
    if code != 0 and err.getvalue().strip().endswith("Aborted!"):  # how kvctl reports a Ctrl-C
        raise KeyboardInterrupt
    if code != 0:
        said = " ".join(part for part in (text, err.getvalue().strip()) if part)
        raise BenchError(f"`kvctl {' '.join(args)}` failed (exit {code}): {said or 'no message'}")
    return json.loads(text) if text else {}


# ----------------------------------------------------------------------------- step 2: the data
def value(rng: random.Random) -> bytes:
    """100 printable bytes, a different one per key (base64 of 75 random bytes)."""
    return base64.b64encode(rng.randbytes(VALUE_SIZE * 3 // 4))


def write_archive(path: Path, keys: int, cluster_id: str, seed: int) -> Manifest:
    """A backup archive of ``keys`` keys, made as the leader and kvctl make one: a KVStore
    filled through its own commands, frozen and serialized as backup data, then written by
    the archive writer ``kvctl backup`` uses."""
    kv = KVStore()
    rng = random.Random(seed)
    for i in range(keys):
        result = kv.apply(encode_put(key(i), value(rng)))
        if not result.ok:
            raise BenchError(f"filling the store: {result.error}")
    with kv.freeze() as frozen:
        data = b"".join(frozen.chunks(backup=True))
        revision = frozen.revision
    manifest = Manifest(cluster_id=cluster_id, node="catchup-bench", index=0, term=0, revision=revision,
                        keys=len(kv), size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                        created=iso_time(time.time()), keyval_version=__version__)
    with ArchiveWriter(path, manifest) as writer:
        for offset in range(0, len(data), ARCHIVE_CHUNK):
            writer.write(data[offset : offset + ARCHIVE_CHUNK])
        writer.commit()
    return manifest


async def wait_applied(endpoints: list[str], keys: int, timeout: float = 600.0) -> dict:
    """Until every node has applied the leader's commit index and holds ``keys`` keys, so the
    cluster is quiet before the clock starts. The leader's status."""
    deadline = time.monotonic() + timeout
    async with AsyncClient(list(endpoints), timeout=2.0) as client:
        while True:
            found = await asyncio.gather(*(client.status(e) for e in endpoints), return_exceptions=True)
            answers = [s for s in found if isinstance(s, dict)]
            leader = next((s for s in answers if s["role"] == "leader"), None)
            if leader is not None and len(answers) == len(endpoints) and all(
                    s["applied_index"] >= leader["commit_index"] and s["keys"] == keys for s in answers):
                return leader
            if time.monotonic() > deadline:
                raise BenchError(f"the nodes did not all apply the restore within {timeout:g}s")
            await asyncio.sleep(0.2)


# ----------------------------------------------------------------------------- step 4: the watch
class Watch:
    """What the polls saw, in seconds since the add. ``index``: the leader's last log index
    before the add (the cluster's state when node4 was added)."""

    def __init__(self, t0: float, index: int) -> None:
        self.t0, self.index = t0, index
        self.samples: list[dict] = []
        self.member: dict | None = None
        self.learner: dict | None = None
        #: (seconds, bytes replicated then): the leader saw node4's match index reach ``index``
        self.durable: tuple[float, int] | None = None
        #: the leader's own "caught up" flag first set (within the threshold, in entries)
        self.flagged: float | None = None
        self.promoted: float | None = None
        self.applied: float | None = None
        self.saw_snapshot_state = False
        self.errors = 0

    def now(self) -> float:
        return time.perf_counter() - self.t0


async def watch_leader(w: Watch, endpoints: list[str], deadline: float) -> None:
    """The leader's view of node4 (``kvctl cluster member node4 --json``) until it is a voter
    holding every entry up to ``index``."""
    async with AsyncClient(list(endpoints), timeout=2.0) as client:
        while (w.promoted is None or w.durable is None) and time.perf_counter() < deadline:
            try:
                doc = await client.admin("cluster_status", timeout=2.0)
            except ClientError:
                w.errors += 1
                await asyncio.sleep(POLL)
                continue
            t = w.now()
            m = next((m for m in doc["members"] if m["id"] == NEW_NODE), None)
            if m is not None:
                w.member = m
                w.samples.append({"t": round(t, 3), "type": m["type"], "match_index": m["match_index"],
                                  "lag": m["lag"], "bytes_replicated": m["bytes_replicated"],
                                  "state": m["replication_state"], "caught_up": m["caught_up"]})
                w.saw_snapshot_state |= m["replication_state"] == "snapshot"
                if m["match_index"] >= w.index and w.durable is None:
                    w.durable = (t, m["bytes_replicated"])
                if m["caught_up"] and w.flagged is None:
                    w.flagged = t
                if m["type"] == "Voter" and w.promoted is None:
                    w.promoted = t
            await asyncio.sleep(POLL)


async def watch_learner(w: Watch, address: str, keys: int, deadline: float) -> None:
    """node4's own status until it has applied ``index`` and holds ``keys`` keys. A node busy
    installing a snapshot may not answer for a while: those polls are skipped."""
    async with AsyncClient([address], timeout=1.0) as client:
        while w.applied is None and time.perf_counter() < deadline:
            with contextlib.suppress(ClientError, OSError, asyncio.TimeoutError):
                st = await client.status(address)
                w.learner = st
                if st["applied_index"] >= w.index and st["keys"] == keys:
                    w.applied = w.now()
            await asyncio.sleep(POLL)


async def progress(w: Watch) -> None:
    while True:
        await asyncio.sleep(PROGRESS_EVERY)
        m, st = w.member, w.learner
        if m is None:
            print(f"  {w.now():6.1f}s  {NEW_NODE} not in the leader's member list yet", flush=True)
            continue
        applied = f"; node4 applied {st['applied_index']}, {st['keys']:,} keys" if st else ""
        print(f"  {w.now():6.1f}s  {m['type']:<7} match {m['match_index']} (lag {m['lag']})  "
              f"{m['bytes_replicated'] / MB:8.1f} MB replicated  state {m['replication_state']}{applied}",
              flush=True)


async def watch(endpoints: list[str], address: str, keys: int, index: int, t0: float, max_wait: float) -> Watch:
    w = Watch(t0, index)
    deadline = t0 + max_wait
    ticker = asyncio.create_task(progress(w))
    try:
        await asyncio.gather(watch_leader(w, endpoints, deadline), watch_learner(w, address, keys, deadline))
    finally:
        ticker.cancel()
    return w


def log_time(path: Path, text: str) -> float | None:
    """The wall-clock time of the first line of a node's log containing ``text``."""
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            if text in line:
                with contextlib.suppress(ValueError):
                    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return None


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", type=int, default=1_000_000, help="keys the cluster holds (default 1,000,000)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (data, logs, archive) afterwards")
    ap.add_argument("--json-out", metavar="FILE", help="write the figures and the poll samples to FILE")
    ap.add_argument("--no-compact", action="store_true",
                    help="skip `kvctl compact`: the learner replays the restore from the log")
    ap.add_argument("--dir", help="parent of the temp dir (default: the system's temp dir)")
    ap.add_argument("--max-wait", type=float, default=1800.0, help="give up on the catch-up after this long (s)")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    if a.keys < 1:
        ap.error("--keys must be at least 1")
    return a


def _interrupted(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run(a: argparse.Namespace, root: Path) -> dict:
    stamp = time.perf_counter
    cluster = BenchCluster(str(root / "cluster"), 3, "segment", "tcp", spare=1)
    try:
        cluster.up()
        endpoints = cluster.endpoints
        eps = ",".join(endpoints)
        _, st = asyncio.run(find_leader(endpoints))
        print(f"# 3 nodes up in {cluster.dir} (leader {st['id']}); loadavg {os.getloadavg()[0]:.2f}", flush=True)

        t = stamp()
        archive = root / "data.tar.gz"
        manifest = write_archive(archive, a.keys, st["cluster_id"], a.seed)
        build_s = stamp() - t
        print(f"# archive of {manifest.keys:,} keys ({manifest.size / MB:.1f} MB of data, "
              f"{archive.stat().st_size / MB:.1f} MB compressed) written in {build_s:.1f}s", flush=True)

        t = stamp()
        restored = kvctl("restore", str(archive), "--yes", "--endpoints", eps, "--timeout", KVCTL_TIMEOUT)
        leader = asyncio.run(wait_applied(endpoints, a.keys))
        restore_s = stamp() - t
        print(f"# kvctl restore: {restored['keys']:,} keys on every node in {restore_s:.1f}s", flush=True)

        compact_s = None
        if not a.no_compact:
            t = stamp()
            compacted = kvctl("compact", "--endpoints", eps, "--timeout", KVCTL_TIMEOUT)
            compact_s = stamp() - t
            first = ", ".join(f"{c['node']} {c['first_index_after']}" for c in compacted)
            print(f"# kvctl compact in {compact_s:.1f}s: logs now start at {first}", flush=True)
        leader = asyncio.run(wait_applied(endpoints, a.keys))

        started = kvctl("local", "start", NEW_NODE, "--dir", str(cluster.dir))
        node4 = next(r for r in started if r["id"] == NEW_NODE)
        print(f"# {NEW_NODE} started empty: peer {node4['peer_address']}, client {node4['client_address']}; "
              f"leader {leader['id']} log {leader['first_index']}..{leader['last_index']}", flush=True)

        wall0, t0 = time.time(), stamp()
        added = kvctl("cluster", "add", NEW_NODE, node4["peer_address"], "--endpoints", eps)
        add_s = stamp() - t0
        print(f"# {added.get('message', 'added')} (the add took {add_s * 1000:.0f} ms); waiting", flush=True)
        index = leader["last_index"]  # what the cluster held when node4 was added
        w = asyncio.run(watch(endpoints, node4["client_address"], a.keys, index, t0, a.max_wait))
        if w.durable is None or w.promoted is None or w.applied is None:
            raise BenchError(f"{NEW_NODE} did not catch up within {a.max_wait:g}s (last seen: {w.member})")

        restored_at = log_time(cluster.log_file(NEW_NODE), "restored snapshot at index")
        path = "snapshot" if restored_at is not None or w.saw_snapshot_state else "log"
        caught_s, caught_bytes = w.durable
        result = {
            "keys": a.keys, "key_bytes": KEY_SIZE, "value_bytes": VALUE_SIZE, "path": path,
            "compacted": not a.no_compact, "bytes_replicated": caught_bytes,
            "bytes_replicated_at_promotion": w.member["bytes_replicated"],
            "catchup_s": round(caught_s, 3), "mb_per_s": round(caught_bytes / MB / caught_s, 2),
            "promoted_s": round(w.promoted, 3), "caught_up_flag_s": None if w.flagged is None else round(w.flagged, 3),
            "applied_s": round(w.applied, 3), "add_s": round(add_s, 3),
            "snapshot_restored_s": round(restored_at - wall0, 3) if restored_at is not None else None,
            "poll_errors": w.errors, "setup": {
                "archive_build_s": round(build_s, 2), "archive_bytes": archive.stat().st_size,
                "data_bytes": manifest.size, "restore_s": round(restore_s, 2),
                "compact_s": round(compact_s, 2) if compact_s is not None else None,
                "leader": leader["id"], "leader_log": [leader["first_index"], leader["last_index"]]},
            "loadavg_after": os.getloadavg()[0], "samples": w.samples,
        }
        print(f"# path: {path}" + (f" (node4 restored the snapshot at +{result['snapshot_restored_s']:.2f}s)"
                                   if restored_at is not None else "") +
              f"; node4 applied all {a.keys:,} keys at +{w.applied:.2f}s", flush=True)
        if w.promoted < caught_s:
            print(f"# NOTE: {NEW_NODE} was promoted before it held every entry: the leader's threshold "
                  f"counts entries, not bytes (within {w.member['effective_catchup_threshold']} entries)", flush=True)
        print(f"catch-up: {a.keys:,} keys, {caught_bytes / MB:.1f} MB replicated in {caught_s:.2f} s = "
              f"{result['mb_per_s']:.1f} MB/s ({path}); promoted to voter at {w.promoted:.2f} s", flush=True)
        return result
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the teardown finish
        cluster.down()


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupted)
    root = Path(tempfile.mkdtemp(prefix="keyval-catchup-", dir=a.dir)).absolute()
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    print(f"# catch-up bench: {a.keys:,} keys of {KEY_SIZE} B + {VALUE_SIZE} B, in {root}; "
          f"loadavg {os.getloadavg()[0]:.2f}", flush=True)
    try:
        result = run(a, root)
    except BenchError as exc:
        print(f"catchup_bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("catchup_bench: interrupted; every node stopped", file=sys.stderr)
        return 130
    finally:
        if a.keep:
            print(f"# kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump({"started": started, **result}, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
