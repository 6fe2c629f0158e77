"""Benchmark (not a test): a 3-node KeyVal cluster on loopback, fsync on, under the peers' workload.

    python -m keyval.bench                          # start a cluster in a temp dir, measure, take it down
    python -m keyval.bench --json-out kv.json --compare /tmp/keyval-peers/results/etcd.jsonl
    python -m keyval.bench --endpoints 127.0.0.1:8001,127.0.0.1:8002,127.0.0.1:8003 --server-pids 11,12,13

What it measures, point by point (the phases of ``../shared/peers/run_all.sh``):

* ``put c=1,16,64``: durable puts/s (a put is answered once committed by a quorum, every
  node having fdatasynced it, and applied on the leader) and p50/p90/p99/p99.9/max latency;
* ``get c=1,16,64`` after a preload that writes every key once: linearizable gets/s
  (ReadIndex: the leader confirms its leadership with a heartbeat round per batch of reads).

The workload is the one of ``../shared/peers/workload.py``, re-stated here so the project does
not depend on that folder: 16-byte keys ``b"key-%012d" % i``, ``i`` uniform over a 100,000-key
space (client ``c`` draws from ``random.Random(seed * 1000003 + c)``), one 100-byte printable
value per run (from ``--seed``), N closed-loop clients with one request in flight each and no
think time, 1 s warm-up then 10 s measured per point; an op counts if it *completes* inside the
measured window, latency is send -> reply, ops/s = completed ops / window.

The load is driven the way the peers' ``loadgen.py`` drives etcd: ``--procs`` worker processes
(default 1, as the reference etcd points) share the N clients, each an asyncio loop; with
``--conn per-client`` (default) every simulated client is its own ``AsyncClient`` and so its own
TCP connection to the leader, like the etcd target's one keep-alive connection per client;
``--conn shared`` puts all of a process's clients on one pipelined connection instead. CPU of
our processes (load generator + the three nodes) and of everything else on the machine is
reported per point, as loadgen does; ``--retries`` re-runs a point disturbed by another tenant
(foreign CPU above ``--max-foreign``) and keeps the least disturbed attempt.

``LoadgenTarget`` plugs KeyVal into the peers' own harness as a cross-check::

    .venv/bin/python ../shared/peers/loadgen.py --target keyval.bench:LoadgenTarget \\
        --endpoints 127.0.0.1:8001 --server-pids ... --op put --clients 1,16,64
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing as mp
import os
import random
import shutil
import socket
import string
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from keyval.runtime import event_loop
from keyval.client import AsyncClient

# ----------------------------------------------------------------------------- workload
# Identical to ../shared/peers/workload.py (same keys, value, key streams, statistics).
KEY_SIZE = 16
VALUE_SIZE = 100
KEYSPACE = 100_000
DURATION = 10.0
WARMUP = 1.0
CLIENTS = "1,16,64"


def key(i: int) -> bytes:
    return b"key-%012d" % i


def make_value(seed: int = 1) -> bytes:
    rng = random.Random(seed * 7919)
    return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(VALUE_SIZE)).encode()


def key_stream(client_id: int, seed: int = 1, keyspace: int = KEYSPACE):
    rr = random.Random(seed * 1_000_003 + client_id).randrange
    while True:
        yield key(rr(keyspace))


def percentile(sorted_vals: list[float], p: float) -> float:
    if not sorted_vals:
        return float("nan")
    return sorted_vals[min(len(sorted_vals) - 1, max(0, int(math.ceil(p / 100.0 * len(sorted_vals))) - 1))]


def summarize(latencies_s: list[float], duration_s: float, errors: int = 0, label: str = "") -> dict:
    lat = sorted(latencies_s)
    n = len(lat)

    def ms(x: float) -> float:
        return round(x * 1000.0, 3)

    return {
        "label": label, "ops": n, "errors": errors, "duration_s": duration_s,
        "ops_per_s": round(n / duration_s, 1) if duration_s else float("nan"),
        "p50_ms": ms(percentile(lat, 50)), "p90_ms": ms(percentile(lat, 90)), "p99_ms": ms(percentile(lat, 99)),
        "p999_ms": ms(percentile(lat, 99.9)), "max_ms": ms(lat[-1]) if lat else float("nan"),
        "mean_ms": ms(sum(lat) / n) if n else float("nan"),
    }


# ----------------------------------------------------------------------------- CPU accounting
# As ../shared/peers/workload.py: machine busy CPU (/proc/stat) against the CPU of our own
# processes (load generator + nodes) over the measured window; the rest is another tenant's.
def _sys_busy_ticks() -> int:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v[:8]) - (v[3] + (v[4] if len(v) > 4 else 0))


def _pid_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        except (OSError, ValueError, IndexError):
            pass
    return total


class CpuMeter:
    """Also splits ours into the load generator's CPU and each node's."""

    def __init__(self, client_pids: list[int], server_pids: list[int]) -> None:
        self.client_pids, self.server_pids = list(client_pids), list(server_pids)
        self.hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.available = os.path.exists("/proc/stat")

    def _sample(self) -> tuple[int, int, list[int]]:
        return _sys_busy_ticks(), _pid_ticks(self.client_pids), [_pid_ticks([p]) for p in self.server_pids]

    def start(self) -> None:
        self.t0 = time.monotonic()
        if self.available:
            self.s0 = self._sample()

    def stop(self) -> dict:
        if not self.available:
            return {}
        dt = time.monotonic() - self.t0
        s1 = self._sample()
        cores = lambda a, b: round((b - a) / self.hz / dt, 2)  # noqa: E731
        busy = cores(self.s0[0], s1[0])
        client = cores(self.s0[1], s1[1])
        servers = [cores(a, b) for a, b in zip(self.s0[2], s1[2])]
        ours = round(client + sum(servers), 2)
        return {"machine_busy_cores": busy, "ours_cores": ours, "foreign_cores": round(max(0.0, busy - ours), 2),
                "client_cores": client, "server_cores": servers}


# ----------------------------------------------------------------------------- clients
def client_options(credentials: dict | None) -> dict:
    """``token``/``tls`` for an AsyncClient from credential file paths (picklable, so they
    reach the worker processes; each process builds its own TLS context)."""
    if not credentials:
        return {}
    from keyval.client.tls import client_context

    return {"token": credentials["token"],
            "tls": client_context(credentials["cacert"], credentials["cert"], credentials["key"])}


class _Clients:
    """The simulated clients of one process: an AsyncClient each (``per-client``) or one
    AsyncClient they all share (``shared``)."""

    def __init__(self, endpoints: list[str], client_ids: list[int], conn: str, timeout: float = 10.0,
                 options: dict | None = None) -> None:
        self.client_ids = list(client_ids)
        options = options or {}
        if conn == "shared":
            one = AsyncClient(list(endpoints), timeout=timeout, **options)
            self.by_id = {cid: one for cid in self.client_ids}
        else:
            self.by_id = {cid: AsyncClient(list(endpoints), timeout=timeout, **options) for cid in self.client_ids}

    async def open(self) -> None:
        # open every connection before the clock starts (as loadgen's etcd target does)
        await asyncio.gather(*(c.get(key(0)) for c in self.by_id.values()))

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in {id(c): c for c in self.by_id.values()}.values()),
                             return_exceptions=True)


async def _worker_main(cfg: dict, op: str, client_ids: list[int], t_start_wall: float, value: bytes):
    clients = _Clients(cfg["endpoints"], client_ids, cfg["conn"], options=client_options(cfg.get("credentials")))
    await clients.open()
    pc = time.perf_counter
    t0 = pc() + (t_start_wall - time.time())
    t_meas = t0 + cfg["warmup"]
    t_end = t_meas + cfg["duration"]
    lat: list[float] = []
    errs = [0, 0]  # errors, gets that found nothing

    async def one(cid: int) -> None:
        ks = key_stream(cid, cfg["seed"], cfg["keyspace"])
        client = clients.by_id[cid]
        while pc() < t0:
            await asyncio.sleep(max(0.0, t0 - pc()))
        while True:
            s = pc()
            if s >= t_end:
                return
            k = next(ks)
            ok = True
            try:
                if op == "get":
                    if await client.get(k) is None:
                        errs[1] += 1
                else:
                    await client.put(k, value)
            except Exception as exc:  # noqa: BLE001 - every failure is an error, not a latency
                ok = False
                if errs[0] < 3:
                    print(f"[client {cid}] error: {exc!r}", file=sys.stderr)
            e = pc()
            if t_meas <= e < t_end:
                if ok:
                    lat.append(e - s)
                else:
                    errs[0] += 1

    await asyncio.gather(*(one(c) for c in client_ids))
    await clients.close()
    return lat, errs[0], errs[1]


def _worker(cfg: dict, op: str, client_ids: list[int], t_start_wall: float, value: bytes, q) -> None:
    try:
        q.put(("ok",) + event_loop.run(_worker_main(cfg, op, client_ids, t_start_wall, value), cfg["event_loop"]))
    except BaseException:  # noqa: BLE001
        q.put(("fail", traceback.format_exc(), 0, 0))


def _mp_context():
    methods = mp.get_all_start_methods()
    return mp.get_context("fork" if "fork" in methods else "spawn")


def run_point(cfg: dict, op: str, n_clients: int, procs: int, value: bytes, server_pids: list[int]) -> dict:
    procs = max(1, min(procs, n_clients))
    groups = [list(range(i, n_clients, procs)) for i in range(procs)]
    ctx = _mp_context()
    q = ctx.Queue()
    t_start = time.time() + cfg["setup_s"]
    ps = [ctx.Process(target=_worker, args=(cfg, op, g, t_start, value, q), daemon=True) for g in groups]
    for p in ps:
        p.start()
    meter = CpuMeter([p.pid for p in ps], list(server_pids))
    time.sleep(max(0.0, t_start + cfg["warmup"] - time.time()))
    meter.start()
    time.sleep(max(0.0, t_start + cfg["warmup"] + cfg["duration"] - time.time()))
    cpu = meter.stop()
    lat: list[float] = []
    errors = misses = 0
    failure = None
    for _ in ps:
        status, got, e, miss = q.get(timeout=cfg["setup_s"] + cfg["duration"] + 120)
        if status != "ok":
            failure = got
            continue
        lat += got
        errors += e
        misses += miss
    for p in ps:
        p.join(30)
    if failure is not None:
        raise SystemExit("a load worker failed:\n" + failure)
    row = summarize(lat, cfg["duration"], errors, f"{cfg['label']}{op} c={n_clients} p={procs}")
    row.update(cpu)
    row.update(op=op, clients=n_clients, procs=procs, conn=cfg["conn"])
    if op == "get":
        row["not_found"] = misses
    return row


async def preload(endpoints: list[str], keyspace: int, value: bytes, n_clients: int = 64,
                  options: dict | None = None) -> float:
    """Write every key of the key space once (so gets hit), with ``n_clients`` pipelined writers."""
    async with AsyncClient(list(endpoints), timeout=30.0, **(options or {})) as client:
        nxt = iter(range(keyspace))

        async def writer() -> None:
            for i in nxt:
                await client.put(key(i), value)

        t = time.perf_counter()
        await asyncio.gather(*(writer() for _ in range(n_clients)))
        return time.perf_counter() - t


# ----------------------------------------------------------------------------- the cluster
def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_base_port(nodes: int = 3) -> int:
    """A base port P with P+1..P+N (peer) and P+1001..P+1000+N (client) free; kept clear of
    the etcd peers' ports (2379/2380, 22379/22380, 32379/32380), of the tests' ports
    (20000-31900) and of Linux's ephemeral ports (32768-60999 by default): there, any outgoing
    connection may take a port found free, before a node added later (``spare``) binds it."""
    rng = random.Random()
    for _ in range(500):
        base = rng.randrange(10_000, 19_000 - nodes)
        if all(_port_free(base + n) and _port_free(base + 1000 + n) for n in range(1, nodes + 1)):
            return base
    raise SystemExit("no free block of ports found")


def kvctl(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    """``kvctl ARGS`` as a user runs it. A subprocess, not an import: the keyval package sits
    below kvctl and never imports it (tests/test_layering.py)."""
    return subprocess.run([sys.executable, "-m", "kvctl.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


class BenchCluster:
    """A throw-away local cluster: ``kvctl local up --dir D --base-port P`` on a free block of
    ports, with segment storage (fdatasync before every acknowledged batch) and tcp by default.
    ``spare``: how many more nodes' ports (node N+1...) to find free as well, for nodes that
    ``kvctl local start`` adds later."""

    def __init__(self, directory: str | None, nodes: int, storage: str, transport: str, spare: int = 0,
                 insecure_peers: bool = False, secure: bool = False) -> None:
        self.own_dir = directory is None
        self.dir = Path(directory or tempfile.mkdtemp(prefix="keyval-bench-")).absolute()
        self.nodes, self.storage, self.transport, self.spare = nodes, storage, transport, spare
        self.insecure_peers = insecure_peers
        self.secure = secure
        self.started = False
        self.endpoints: list[str] = []
        self.pids: list[int] = []
        self.pid_by_node: dict[str, int] = {}

    def up(self, timeout: float = 30.0) -> None:
        if (self.dir / "cluster.json").exists():
            raise SystemExit(f"{self.dir} already holds a cluster; give an empty --dir")
        flags = ["--dir", str(self.dir), "--nodes", str(self.nodes), "--storage", self.storage,
                 "--transport", self.transport, "--timeout", str(timeout), "--json"]
        flags += ["--secure"] * self.secure + ["--insecure-peers"] * self.insecure_peers
        for attempt in range(3):  # a port taken between the check and the bind: try another block
            self.started = True
            done = kvctl("local", "up", "--base-port", str(free_base_port(self.nodes + self.spare)), *flags,
                         timeout=timeout + 60)
            if done.returncode == 0:
                break
            kvctl("local", "down", "--dir", str(self.dir), "--purge")  # its data names these ports
            if attempt == 2:
                why = (done.stderr or done.stdout).strip()
                raise SystemExit(f"could not start the cluster in {self.dir}: {why}")
        rows = json.loads(done.stdout)
        self.endpoints = [row["client_address"] for row in rows]
        self.pid_by_node = {row["id"]: row["pid"] for row in rows if row["pid"] is not None}
        self.pids = list(self.pid_by_node.values())

    def log_file(self, node_id: str) -> Path:
        return self.dir / node_id / "keyval.log"

    def credentials(self) -> dict | None:
        """The CA, kvctl's certificate and the admin token of a ``secure`` cluster, as paths
        (where ``kvctl local up --secure`` writes them)."""
        if not self.secure:
            return None
        tls = self.dir / "tls"
        return {"cacert": str(tls / "ca.pem"), "cert": str(tls / "kvctl.pem"), "key": str(tls / "kvctl.key"),
                "token": (self.dir / "tokens" / "admin").read_text().strip()}

    def down(self) -> None:
        if self.started:  # also stops the nodes `kvctl local start` added since `up`
            kvctl("local", "down", "--dir", str(self.dir))
        if self.own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


async def find_leader(endpoints: list[str], timeout: float = 20.0, options: dict | None = None) -> tuple[str, dict]:
    """(the leader's client address, its status), waiting for one to be known."""
    deadline = time.monotonic() + timeout
    async with AsyncClient(list(endpoints), timeout=1.0, **(options or {})) as client:
        while True:
            for ep in endpoints:
                try:
                    st = await client.status(ep)
                except Exception:  # noqa: BLE001 - a node not answering yet
                    continue
                if st.get("role") == "leader":
                    return ep, st
                leader_addr = (st.get("client_addresses") or {}).get(st.get("leader") or "")
                if leader_addr:
                    try:
                        lst = await client.status(leader_addr)
                        if lst.get("role") == "leader":
                            return leader_addr, lst
                    except Exception:  # noqa: BLE001
                        pass
            if time.monotonic() > deadline:
                raise SystemExit(f"no leader found among {', '.join(endpoints)}")
            await asyncio.sleep(0.2)


# ----------------------------------------------------------------------------- the peers' harness
class LoadgenTarget:
    """KeyVal as a ``loadgen.py`` target (see ../shared/peers/targets/template_target.py):
    one AsyncClient (= one connection) per client id; client ``i`` starts at
    ``endpoints[i % len]`` and follows the leader from there. ``--opt serializable=1`` for
    serializable gets, ``--opt conn=shared`` for one pipelined connection per process."""

    def __init__(self, endpoints, client_ids, opts) -> None:
        self.client_ids = list(client_ids)
        self.serializable = bool(int(opts.get("serializable", "0") or 0))
        eps = [e.strip().removeprefix("http://").rstrip("/") for e in endpoints]
        shared = AsyncClient(eps) if opts.get("conn") == "shared" else None
        self.clients = {}
        for cid in self.client_ids:
            first = eps[cid % len(eps)]
            self.clients[cid] = shared or AsyncClient([first] + [e for e in eps if e != first], timeout=10.0)

    async def open(self) -> None:
        await asyncio.gather(*(self.get(cid, key(0)) for cid in self.client_ids))

    async def put(self, cid, k: bytes, v: bytes) -> None:
        await self.clients[cid].put(k, v)

    async def get(self, cid, k: bytes):
        return await self.clients[cid].get(k, serializable=self.serializable)

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in {id(c): c for c in self.clients.values()}.values()),
                             return_exceptions=True)


# ----------------------------------------------------------------------------- output
HEADER = (f"{'point':<24} {'ops/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9} "
          f"{'max ms':>8} {'errors':>6}  cpu cores: ours/foreign (client, nodes: leader first)")


def fmt_row(r: dict) -> str:
    s = (f"{r['label']:<24} {r['ops_per_s']:>9.1f} {r['p50_ms']:>8.2f} {r['p90_ms']:>8.2f} {r['p99_ms']:>8.2f} "
         f"{r['p999_ms']:>9.2f} {r['max_ms']:>8.2f} {r['errors']:>6}")
    if "ours_cores" in r:
        s += f"  {r['ours_cores']:.2f}/{r['foreign_cores']:.2f}"
        if r.get("server_cores"):
            s += f" (client {r['client_cores']:.2f}, nodes {'+'.join(f'{c:.2f}' for c in r['server_cores'])})"
    if r.get("not_found"):
        s += f"  not_found={r['not_found']}"
    return s


def load_reference(path: str) -> dict[str, dict]:
    """Rows of a loadgen ``--json`` file (e.g. the peers' etcd.jsonl), by label; for a label
    measured several times (several runs appended), the median ops/s run's row."""
    by_label: dict[str, list[dict]] = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                by_label.setdefault(r["label"], []).append(r)
    return {label: sorted(rows, key=lambda r: r["ops_per_s"])[(len(rows) - 1) // 2] for label, rows in by_label.items()}


def compare(results: list[dict], reference: dict[str, dict], name: str) -> list[str]:
    lines = [f"{'point':<24} {name + ' ops/s':>11} {'keyval ops/s':>12} {'x':>6}   "
             f"{name + ' p50':>9} {'keyval p50':>10} {'x':>6}   {name + ' p99':>9} {'keyval p99':>10} {'x':>6}"]
    for r in results:
        e = reference.get(r["label"])
        if e is None:
            continue
        lines.append(f"{r['label']:<24} {e['ops_per_s']:>11.1f} {r['ops_per_s']:>12.1f} {r['ops_per_s'] / e['ops_per_s']:>6.2f}   "
                     f"{e['p50_ms']:>9.2f} {r['p50_ms']:>10.2f} {r['p50_ms'] / e['p50_ms']:>6.2f}   "
                     f"{e['p99_ms']:>9.2f} {r['p99_ms']:>10.2f} {r['p99_ms'] / e['p99_ms']:>6.2f}")
    return lines


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m keyval.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoints", help="client addresses of a running cluster (default: start a 3-node "
                    "`kvctl local up` cluster in a temp dir and take it down afterwards)")
    ap.add_argument("--server-pids", default="", help="with --endpoints: the nodes' PIDs, for the CPU columns")
    ap.add_argument("--dir", help="where the started cluster lives (default: a new temp dir, deleted)")
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--storage", default="segment", help="storage backend of the started cluster (segment: fsync on)")
    ap.add_argument("--transport", default="tcp")
    ap.add_argument("--secure", action="store_true",
                    help="start the cluster as `kvctl local up --secure` does (client TLS, mutual, and tokens)")
    ap.add_argument("--insecure-peers", action="store_true",
                    help="start the cluster without a cluster secret (peer HMAC off), to measure what it costs")
    ap.add_argument("--ops", default="put,get", help="phases, in order: put, get (get preloads first)")
    ap.add_argument("--clients", default=CLIENTS, help="concurrent closed-loop clients per point")
    ap.add_argument("--procs", type=int, default=1, help="load-generator processes sharing the clients")
    ap.add_argument("--conn", choices=["per-client", "shared"], default="per-client",
                    help="one connection per simulated client (as the peers' loadgen), or one per process")
    ap.add_argument("--event-loop", choices=event_loop.EVENT_LOOPS, default=os.environ.get("KEYVAL_EVENT_LOOP", "auto"),
                    help="the load generator's event loop (default: $KEYVAL_EVENT_LOOP or auto, as the nodes "
                         "started here, which inherit $KEYVAL_EVENT_LOOP)")
    ap.add_argument("--duration", type=float, default=DURATION)
    ap.add_argument("--warmup", type=float, default=WARMUP)
    ap.add_argument("--keyspace", type=int, default=KEYSPACE)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--setup-s", type=float, default=2.0, help="time allowed for workers to connect")
    ap.add_argument("--no-preload", action="store_true", help="skip writing every key before the gets")
    ap.add_argument("--retries", type=int, default=0,
                    help="re-run a point up to this many times while foreign_cores > --max-foreign "
                         "(the peers' run_all.sh uses 2)")
    ap.add_argument("--max-foreign", type=float, default=0.3)
    ap.add_argument("--label", default="", help="prefix of every point's label")
    ap.add_argument("--json-out", help="write the results (and run metadata) to this JSON file")
    ap.add_argument("--jsonl-out", help="append one JSON line per point, in loadgen's --json format")
    ap.add_argument("--compare", help="a loadgen --json file (e.g. etcd.jsonl): print keyval/that ratios")
    ap.add_argument("--compare-name", default="etcd")
    a = ap.parse_args(argv)
    for o in a.ops.split(","):
        if o not in ("put", "get"):
            ap.error(f"unknown op {o!r} in --ops (put, get)")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    value = make_value(a.seed)
    clients = [int(x) for x in a.clients.split(",") if x]
    cluster = None
    credentials = None
    try:
        if a.endpoints:
            endpoints = [e.strip() for e in a.endpoints.split(",") if e.strip()]
            server_pids = [int(x) for x in a.server_pids.split(",") if x]
            where = "given endpoints"
        else:
            cluster = BenchCluster(a.dir, a.nodes, a.storage, a.transport, insecure_peers=a.insecure_peers,
                                   secure=a.secure)
            cluster.up()
            credentials = cluster.credentials()
            endpoints, server_pids = cluster.endpoints, cluster.pids
            where = f"`kvctl local up` in {cluster.dir} (storage {a.storage}, transport {a.transport})"
        options = client_options(credentials)
        leader, st = asyncio.run(find_leader(endpoints, options=options))
        ordered = [leader] + [e for e in endpoints if e != leader]
        if cluster is not None and st.get("id") in cluster.pid_by_node:  # CPU columns: leader first
            server_pids = [cluster.pid_by_node[st["id"]]] + [p for n, p in cluster.pid_by_node.items() if n != st["id"]]
        cfg = {"endpoints": ordered, "conn": a.conn, "warmup": a.warmup, "duration": a.duration, "seed": a.seed,
               "keyspace": a.keyspace, "setup_s": a.setup_s, "label": a.label, "event_loop": a.event_loop,
               "credentials": credentials}
        meta = {"endpoints": endpoints, "leader": leader, "leader_id": st.get("id"), "server_pids": server_pids,
                "cluster": where, "nodes": len(st.get("voters", [])) or len(endpoints), "key_bytes": KEY_SIZE,
                "value_bytes": VALUE_SIZE, "keyspace": a.keyspace, "warmup_s": a.warmup, "duration_s": a.duration,
                "procs": a.procs, "conn": a.conn, "event_loop": a.event_loop, "seed": a.seed, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "loadavg_before": _loadavg()}
        print(f"# keyval bench: {meta['nodes']} nodes, {where}; leader {st.get('id')} at {leader}", flush=True)
        print(f"# key={KEY_SIZE}B value={VALUE_SIZE}B keyspace={a.keyspace} warmup={a.warmup}s "
              f"duration={a.duration}s procs={a.procs} conn={a.conn} event_loop={a.event_loop} loadavg={meta['loadavg_before']}", flush=True)
        print(HEADER, flush=True)
        results: list[dict] = []
        for op in a.ops.split(","):
            if op == "get" and not a.no_preload:
                dt = asyncio.run(preload(ordered, a.keyspace, value, options=options))
                print(f"# preloaded {a.keyspace} keys in {dt:.1f}s ({a.keyspace / dt:.0f}/s)", flush=True)
            for n in clients:
                best = None
                for attempt in range(1 + a.retries):
                    r = run_point(cfg, op, n, a.procs, value, server_pids)
                    r["attempt"] = attempt + 1
                    if best is None or r.get("foreign_cores", 0) < best.get("foreign_cores", 0):
                        best = r
                    if r.get("foreign_cores", 0) <= a.max_foreign or attempt == a.retries:
                        break
                    print("# disturbed: " + fmt_row(r), flush=True)
                results.append(best)
                print(fmt_row(best), flush=True)
                if a.jsonl_out:
                    with open(a.jsonl_out, "a") as f:
                        f.write(json.dumps({**best, "target": "keyval", "endpoints": leader}) + "\n")
        final = asyncio.run(find_leader(endpoints, options=options))[1]
        meta.update(final_leader_id=final.get("id"), final_term=final.get("term"),
                    final_commit_index=final.get("commit_index"), loadavg_after=_loadavg())
        if final.get("id") != st.get("id"):
            print(f"# NOTE: the leader changed during the run ({st.get('id')} -> {final.get('id')})", flush=True)
        if a.compare:
            print(f"\n# keyval / {a.compare_name} ({a.compare})")
            for line in compare(results, load_reference(a.compare), a.compare_name):
                print(line)
        if a.json_out:
            with open(a.json_out, "w") as f:
                json.dump({"meta": meta, "results": results}, f, indent=1)
                f.write("\n")
        return 0
    finally:
        if cluster is not None:
            cluster.down()


def _loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
