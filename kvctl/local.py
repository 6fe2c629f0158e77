"""``kvctl local up | start | stop | status | down``: a dev cluster of background processes.

``up`` on a dir whose cluster is stopped restarts it with its data (options it was created
with are kept; giving different ones is refused). ``down`` keeps the data unless ``--purge``.
Every command is safe to repeat: starting what runs or stopping what is stopped says so and
exits 0.
"""
from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import click
from click.core import ParameterSource

from kvctl.endpoints import ENV, LOCAL_DIR
from kvctl.localcluster import DEFAULT_STORAGE, DEFAULT_TRANSPORT, ClusterSpec, LocalCluster, check_ports_free
from kvctl.options import arg, command, group, opt
from kvctl.output import Failure, emit, handles_errors, settings, table
from kvctl.probe import Status, leader_of, member, statuses, wait_until_up

START_TIMEOUT = 20.0


def _start_timeout() -> float:
    return settings().timeout or START_TIMEOUT


def _rows(local: LocalCluster, spec: ClusterSpec, found: dict[str, Status | None] | None = None) -> list[dict]:
    running = local.running(spec)
    if found is None:
        found = asyncio.run(statuses(local, {n: spec.nodes[n].client_address for n in running}))
    rows = []
    for node in spec.nodes.values():
        status = found.get(node.id)
        rows.append({
            "id": node.id, "pid": running.get(node.id), "peer_address": node.peer_address,
            "client_address": node.client_address, "running": node.id in running,
            "role": status["role"] if status else None, "leader": status["leader"] if status else None,
            "member": member(status), "log": local.shown_log(node.id),
        })
    return rows


def _role(row: dict) -> str:
    if not row["running"]:
        return "-"
    if row["role"] is None:
        return "no answer"
    return row["role"] if row["member"] else "not a member"


def _show(rows: list[dict]) -> None:
    if settings().json:
        emit(rows)
        return
    lines = [["ID", "PID", "PEER", "CLIENT", "STATE", "ROLE"]]
    for r in rows:
        lines.append([r["id"], str(r["pid"] or "-"), r["peer_address"], r["client_address"],
                      "running" if r["running"] else "stopped", _role(r)])
    click.echo(table(lines))


def _given(ctx: click.Context, name: str) -> bool:
    return ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE


def _existing(ctx: click.Context, local: LocalCluster, spec: ClusterSpec, nodes: int, base_port: int,
              storage: str | None, transport: str | None, secure: bool) -> ClusterSpec:
    running = local.running(spec)
    if running:
        raise Failure(f"a local cluster is already running in {local.shown} ({', '.join(running)}); "
                      f"see `kvctl local status`, or stop it with `kvctl local down`")
    initial = sum(n.initial for n in spec.nodes.values())
    recorded = {"nodes": initial, "base_port": spec.base_port, "storage": spec.storage, "transport": spec.transport,
                "secure": spec.secure}
    asked = {"nodes": nodes, "base_port": base_port, "storage": storage, "transport": transport, "secure": secure}
    differ = [f"--{k.replace('_', '-')} {recorded[k]}" if k != "secure" else ("--secure" if spec.secure else "no --secure")
              for k in recorded if _given(ctx, k) and asked[k] != recorded[k]]
    if differ:
        raise Failure(f"{local.shown} holds a stopped cluster made with {', '.join(differ)}; run `kvctl local up` "
                      f"without those options to restart it with its data, or `kvctl local down --purge` to delete it")
    return spec


@handles_errors
def up(nodes: int, dir: str, base_port: int, storage: str | None, transport: str | None, secure: bool,
       insecure_peers: bool) -> None:
    ctx = click.get_current_context()
    local = LocalCluster(dir)
    spec = local.load()
    restart = spec is not None
    if restart:
        spec = _existing(ctx, local, spec, nodes, base_port, storage, transport, secure)
    else:
        spec = ClusterSpec.new(nodes, base_port, storage or DEFAULT_STORAGE, transport or DEFAULT_TRANSPORT, secure)
        spec.insecure_peers = insecure_peers
    for node in spec.nodes.values():
        check_ports_free(node, spec.transport)
    local.save(spec)
    started = {}
    try:
        for node in spec.nodes.values():
            started[node.id] = local.start(spec, node)
        found = asyncio.run(wait_until_up(local, spec, started, list(spec.nodes), True, _start_timeout()))
    except BaseException:
        # All or nothing: a half-started cluster would only confuse the next command.
        local.stop(list(started), grace=5.0)
        raise
    rows = _rows(local, spec, found)
    if settings().json:
        emit(rows)
        return
    verb = ("restarted" + (" (with its data)" if spec.storage != "memory" else "")) if restart else "started"
    click.echo(f"KeyVal local cluster {verb} in {local.shown}: {len(spec.nodes)} nodes, leader {leader_of(found)} "
               f"(storage {spec.storage}, transport {spec.transport})")
    _show(rows)
    if spec.secure:
        click.echo(f"Client ports use TLS (CA {local.shown}/tls/ca.pem) and tokens: {local.shown}/tokens/admin, "
                   f"readwrite and read (pass one with --token-file).")
    addresses = ",".join(n.client_address for n in spec.nodes.values())
    if local.root == Path(LOCAL_DIR).absolute():
        click.echo(f"kvctl run in this directory finds it through {local.shown}/endpoints. "
                   f"Stop it with `kvctl local down`.")
    else:
        click.echo(f"Point kvctl at it with `export {ENV}={addresses}`. "
                   f"Stop it with `kvctl local down --dir {local.shown}`.")


@handles_errors
def start(id: str, dir: str) -> None:
    local = LocalCluster(dir)
    spec = local.require()
    new = id not in spec.nodes
    node = spec.add(id, initial=False) if new else spec.nodes[id]
    pid = local.pid(id)
    if pid is not None:
        if not settings().json:
            click.echo(f"{id} is already running (pid {pid})")
        else:
            _show([r for r in _rows(local, spec) if r["id"] == id])
        return
    proc = local.start(spec, node)
    if new:
        local.save(spec)  # before waiting, so `local down` knows it even if the wait fails
    try:
        found = asyncio.run(wait_until_up(local, spec, {id: proc}, [id], False, _start_timeout()))
    except BaseException:
        local.stop([id], grace=5.0)
        if new:
            del spec.nodes[id]
            local.save(spec)
        raise
    if settings().json:
        _show([r for r in _rows(local, spec, found) if r["id"] == id])
        return
    status = found[id]
    click.echo(f"started {id} (pid {proc.pid}): peer {node.peer_address}, client {node.client_address}")
    if not member(status):
        click.echo(f"{id} is not a member yet; add it with `kvctl cluster add {id} {node.peer_address}`")


@handles_errors
def stop(id: str, dir: str) -> None:
    local = LocalCluster(dir)
    spec = local.require()
    if id not in spec.nodes:
        raise Failure(f"no node {id} in {local.shown} (nodes: {', '.join(spec.nodes)})")
    stopped = local.stop([id])
    if settings().json:
        _show([r for r in _rows(local, spec) if r["id"] == id])
    elif not stopped:
        click.echo(f"{id} is not running")
    else:
        pid, how = stopped[id]
        click.echo(f"stopped {id} (pid {pid})" if how == "stopped" else
                   f"killed {id} (pid {pid}): it did not exit within 10s of SIGTERM")


@handles_errors
def status(dir: str) -> None:
    local = LocalCluster(dir)
    spec = local.load()
    if spec is None:
        if settings().json:
            emit([])
        else:
            click.echo(f"no local cluster in {local.shown} (start one with `kvctl local up`)")
        return
    _show(_rows(local, spec))


@handles_errors
def down(dir: str, purge: bool) -> None:
    local = LocalCluster(dir)
    spec = local.load()
    stopped = local.stop(list(spec.nodes)) if spec is not None else {}
    for node_id, (pid, how) in stopped.items():
        click.echo(f"{how} {node_id} (pid {pid})", err=settings().json)
    if purge and local.root.exists():
        if spec is None and any(local.root.iterdir()):
            raise Failure(f"{local.shown} has no cluster.json, so kvctl did not make it; not deleting it")
        shutil.rmtree(local.root)
    if settings().json:
        emit({"stopped": sorted(stopped), "purged": purge})
    elif spec is None:
        click.echo(f"no local cluster in {local.shown}" + ("" if not purge else "; nothing to delete"))
    elif purge:
        click.echo(f"deleted {local.shown} (data and logs)")
    else:
        click.echo(f"{'all nodes stopped' if stopped else 'no node was running'}; data and logs kept in "
                   f"{local.shown} (`kvctl local up` restarts it, `kvctl local down --purge` deletes it)")


def _dir() -> click.Option:
    return opt("--dir", default=LOCAL_DIR, show_default=True, metavar="DIR",
               help="Where the dev cluster keeps its data, logs and endpoints.")


def add_local_commands(cli: click.Group) -> None:
    local = group("local", "A development cluster of background processes on this machine.")
    cli.add_command(local)
    local.add_command(command(
        "up", "Start an N-node cluster (or restart the stopped one in DIR, with its data).", up,
        opt("--nodes", type=click.IntRange(min=1, max=99), default=3, show_default=True, metavar="N"),
        _dir(),
        opt("--base-port", type=click.IntRange(1, 64535 - 99), default=7000, show_default=True, metavar="P",
            help="nodeN listens on P+N (peer) and P+1000+N (client)."),
        opt("--storage", metavar="NAME", help=f"Storage backend (default {DEFAULT_STORAGE})."),
        opt("--transport", metavar="NAME", help=f"Transport backend (default {DEFAULT_TRANSPORT})."),
        opt("--secure", is_flag=True, help="TLS and tokens on the client ports: makes a CA, node certificates and "
            "admin/readwrite/read tokens in DIR, which kvctl run there uses."),
        opt("--insecure-peers", is_flag=True, help="Run the nodes without a cluster secret (unauthenticated "
            "peer traffic; benchmarks compare both). Kept on a restart.")))
    local.add_command(command(
        "start", "Start node ID: a stopped one resumes with its data; a new nodeN starts "
        "uninitialised on P+N/P+1000+N, waiting for `kvctl cluster add`.", start, arg("id"), _dir()))
    local.add_command(command("stop", "Stop node ID (SIGTERM; SIGKILL after 10s).", stop, arg("id"), _dir()))
    local.add_command(command("status", "Show the local nodes, whether they run and their role.", status, _dir()))
    local.add_command(command(
        "down", "Stop every local node; data and logs stay unless --purge.", down, _dir(),
        opt("--purge", is_flag=True, help="Also delete DIR: data, logs, endpoints.")))

