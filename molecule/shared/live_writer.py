#!/usr/bin/env python3
"""Live-write checker: writes through every node while a playbook runs, then proves that no
acknowledged write was lost.

    live_writer.py start --endpoints A:8001,B:8001,C:8001 --out DIR [--rate 60]
    live_writer.py stop --out DIR                 # SIGTERM, prints the run's summary
    live_writer.py check --endpoints ... --out DIR [--timeout 60]
    live_writer.py run ...                        # the writer in the foreground (start runs this)

``run`` keeps one client per node, each starting at its node and following redirects and
failovers as the real client does (an application spread over the nodes). A pacer starts a
put every 1/rate seconds, round the clients, with at most ``--in-flight`` outstanding. Each
acknowledged put (key, value, revision, time) is appended to DIR/acks.jsonl and flushed at
once, so a SIGKILLed writer still leaves a true record. On SIGTERM it writes DIR/writer.json:
attempted, acknowledged, failed (refused: did not apply), unknown (timed out: may apply),
the longest gap between two consecutive acknowledgements, and the acknowledged rate.

``check`` reads the acknowledged keys back from each endpoint given, with serializable reads
answered by that node from its own state (a linearizable read would be answered by the
leader and prove nothing about the node), waiting up to ``--timeout`` for a node that is
still catching up. It prints one JSON document and exits 1 if any acknowledged write is
missing or has another value on any node, 2 if a node cannot be read at all.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from keyval.client import AsyncClient
from keyval.errors import KeyvalError
from keyval.client.tls import client_context

PREFIX = "live/"


def _credentials(args) -> dict:
    token = Path(args.token_file).read_text().strip() if args.token_file else None
    tls = client_context(args.cacert, args.cert, args.key) if args.cacert or args.cert else None
    return {"token": token, "tls": tls}


def _endpoints(text: str) -> list[str]:
    found = [e.strip() for e in text.split(",") if e.strip()]
    if not found:
        raise SystemExit("live_writer: give --endpoints HOST:PORT[,HOST:PORT...]")
    return found


class Writer:
    def __init__(self, endpoints: list[str], out: Path, rate: float, in_flight: int, credentials: dict) -> None:
        self.run_id = uuid.uuid4().hex[:8]
        self.rate = rate
        self.in_flight = in_flight
        # one client per node, each starting there and then following the cluster
        self.clients = [AsyncClient(endpoints[i:] + endpoints[:i], timeout=5.0, **credentials)
                        for i in range(len(endpoints))]
        self.acks_file = (out / "acks.jsonl").open("a", buffering=1)
        self.summary_path = out / "writer.json"
        self.counts = {"attempted": 0, "acknowledged": 0, "failed": 0, "unknown": 0, "skipped": 0}
        self.ack_times: list[float] = []
        self.errors: dict[str, int] = {}
        self.pending: set[asyncio.Task] = set()

    async def write(self, client: AsyncClient, seq: int) -> None:
        key = f"{PREFIX}{self.run_id}/{seq:09d}"
        value = f"{self.run_id}:{seq}:{time.time():.6f}"
        try:
            revision = await client.put(key, value)
        except KeyvalError as exc:
            outcome = "unknown" if "may still apply" in str(exc) or type(exc).__name__ == "Timeout" else "failed"
            self.counts[outcome] += 1
            reason = f"{type(exc).__name__}: {str(exc)[:120]}"
            self.errors[reason] = self.errors.get(reason, 0) + 1
            return
        now = time.monotonic()
        self.ack_times.append(now)
        self.counts["acknowledged"] += 1
        self.acks_file.write(json.dumps({"k": key, "v": value, "rev": revision, "t": time.time()}) + "\n")

    async def run(self, stop: asyncio.Event) -> None:
        started = time.monotonic()
        interval = 1.0 / self.rate
        seq = 0
        next_at = started
        while not stop.is_set():
            seq += 1
            self.counts["attempted"] += 1
            if len(self.pending) >= self.in_flight:
                self.counts["skipped"] += 1  # the cluster is not answering: do not pile up
            else:
                task = asyncio.create_task(self.write(self.clients[seq % len(self.clients)], seq))
                self.pending.add(task)
                task.add_done_callback(self.pending.discard)
            next_at += interval
            delay = next_at - time.monotonic()
            if delay < -1.0:  # fell behind (a paused process): do not burst to catch up
                next_at = time.monotonic()
            try:
                await asyncio.wait_for(stop.wait(), max(0.0, delay))
            except asyncio.TimeoutError:
                pass
        if self.pending:
            await asyncio.wait(self.pending, timeout=10)
        duration = time.monotonic() - started
        for client in self.clients:
            await client.close()
        self.acks_file.close()
        times = self.ack_times
        gaps = [b - a for a, b in zip(times, times[1:])]
        summary = dict(self.counts, run_id=self.run_id, duration_s=round(duration, 2),
                       ack_rate=round(len(times) / duration, 1) if duration else 0.0,
                       longest_gap_s=round(max(gaps), 3) if gaps else None,
                       errors=dict(sorted(self.errors.items(), key=lambda kv: -kv[1])[:10]))
        self.summary_path.write_text(json.dumps(summary, indent=2) + "\n")


def cmd_run(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    writer = Writer(_endpoints(args.endpoints), out, args.rate, args.in_flight, _credentials(args))

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if args.duration:
            loop.call_later(args.duration, stop.set)
        await writer.run(stop)

    asyncio.run(main())
    print(writer.summary_path.read_text(), end="")
    return 0


def cmd_start(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("acks.jsonl", "writer.json"):
        (out / stale).unlink(missing_ok=True)
    argv = [sys.executable, os.path.abspath(__file__), "run", "--endpoints", args.endpoints, "--out", str(out),
            "--rate", str(args.rate), "--in-flight", str(args.in_flight)]
    for flag in ("token_file", "cacert", "cert", "key"):
        if getattr(args, flag):
            argv += ["--" + flag.replace("_", "-"), getattr(args, flag)]
    with (out / "writer.log").open("w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    (out / "pid").write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"live_writer: the writer exited ({proc.returncode}): "
                             + (out / "writer.log").read_text()[-500:])
        acks = out / "acks.jsonl"
        if acks.exists() and acks.stat().st_size > 0:
            print(f"live writer {proc.pid} acknowledged its first write; writing at {args.rate}/s")
            return 0
        time.sleep(0.2)
    proc.terminate()
    raise SystemExit(f"live_writer: no write acknowledged within {args.wait:g}s through {args.endpoints}")


def cmd_stop(args) -> int:
    out = Path(args.out)
    pid_file = out / "pid"
    if not pid_file.exists():
        raise SystemExit(f"live_writer: no writer started in {out}")
    pid = int(pid_file.read_text())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    pid_file.unlink()
    summary = out / "writer.json"
    if not summary.exists():
        raise SystemExit(f"live_writer: the writer left no summary; log: {(out / 'writer.log').read_text()[-500:]}")
    print(summary.read_text(), end="")
    return 0


async def _read_back(endpoint: str, expected: dict[str, str], credentials: dict, timeout: float) -> dict:
    """Missing and wrong keys on one node, waiting while it catches up."""
    deadline = time.monotonic() + timeout
    run_ids = sorted({k.split("/")[1] for k in expected})
    async with AsyncClient([endpoint], timeout=10.0, **credentials) as client:
        while True:
            held: dict[str, str] = {}
            try:
                for run_id in run_ids:
                    items = await client.scan(f"{PREFIX}{run_id}/", serializable=True)
                    held.update((i.key.decode(), i.value.decode()) for i in items)
            except KeyvalError as exc:
                if time.monotonic() > deadline:
                    return {"error": str(exc)}
                await asyncio.sleep(1.0)
                continue
            missing = [k for k in expected if k not in held]
            wrong = [k for k, v in expected.items() if k in held and held[k] != v]
            if (not missing and not wrong) or time.monotonic() > deadline:
                return {"missing": len(missing), "wrong": len(wrong), "examples": (missing + wrong)[:5]}
            await asyncio.sleep(1.0)


def cmd_check(args) -> int:
    out = Path(args.out)
    acks = out / "acks.jsonl"
    expected: dict[str, str] = {}
    if acks.exists():
        for line in acks.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                expected[record["k"]] = record["v"]
    credentials = _credentials(args)
    endpoints = _endpoints(args.endpoints)

    async def main() -> list[dict]:
        return await asyncio.gather(*(_read_back(e, expected, credentials, args.timeout) for e in endpoints))

    per_node = dict(zip(endpoints, asyncio.run(main()))) if expected else {}
    writer = json.loads((out / "writer.json").read_text()) if (out / "writer.json").exists() else {}
    lost = max((n.get("missing", 0) + n.get("wrong", 0) for n in per_node.values()), default=0)
    unreadable = [e for e, n in per_node.items() if "error" in n]
    result = {"acknowledged": len(expected), "lost": lost, "unreadable": unreadable,
              "longest_gap_s": writer.get("longest_gap_s"), "ack_rate": writer.get("ack_rate"),
              "failed": writer.get("failed"), "unknown": writer.get("unknown"),
              "duration_s": writer.get("duration_s"), "per_node": per_node}
    print(json.dumps(result, indent=2))
    if not expected:
        print("live_writer: no acknowledged write to check", file=sys.stderr)
        return 1
    return 2 if unreadable else 1 if lost else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "start", "stop", "check"):
        p = sub.add_parser(name)
        p.add_argument("--out", required=True, help="directory for acks.jsonl, writer.json, writer.log, pid")
        if name != "stop":
            p.add_argument("--endpoints", required=True, help="client addresses, comma-separated")
            p.add_argument("--token-file")
            p.add_argument("--cacert")
            p.add_argument("--cert")
            p.add_argument("--key")
        if name in ("run", "start"):
            p.add_argument("--rate", type=float, default=60.0, help="puts per second (default 60)")
            p.add_argument("--in-flight", type=int, default=200, help="most puts outstanding at once")
        if name == "run":
            p.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds")
        if name == "start":
            p.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the first ack")
        if name == "check":
            p.add_argument("--timeout", type=float, default=60.0, help="seconds a node may take to catch up")
    args = parser.parse_args(argv)
    return {"run": cmd_run, "start": cmd_start, "stop": cmd_stop, "check": cmd_check}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
