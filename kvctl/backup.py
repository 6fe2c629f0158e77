"""``kvctl backup PATH`` and ``kvctl restore PATH [--yes]``.

backup: the leader captures its state after a linearizable barrier and serves it in chunks;
kvctl checks the checksum the leader announced and writes the archive (``keyval.ops.backup``)
beside PATH, renaming it into place only when complete.

restore: the archive is checked completely first (nothing is sent before that), then, once
confirmed, uploaded through the Raft log in chunks and committed in one replicated step
(``keyval.kv``): every member ends with exactly the backup's keys and values. Writes
acknowledged after the commit stay; anything written before it is replaced.
"""
from __future__ import annotations

import contextlib
import sys
import uuid
from pathlib import Path
from typing import Any

import click

from keyval import __version__
from keyval.ops.backup import ArchiveError, ArchiveWriter, Manifest, iso_time, read_archive
from keyval.client import AsyncClient
from keyval.errors import ClientError
from kvctl.maintenance import human_size, run_on_cluster
from kvctl.options import arg, command, opt
from kvctl.output import Failure, emit, handles_errors, settings
from kvctl.route import to_leader

#: Below this the transfer is over before a bar could tell anything.
PROGRESS_FROM = 8 << 20


def _progress(size: int, label: str):
    if size < PROGRESS_FROM or not sys.stderr.isatty():  # no terminal: no bar (not even its label)
        return contextlib.nullcontext(None)
    return click.progressbar(length=size, label=label, file=sys.stderr, show_pos=False, show_percent=True)


# -- backup --------------------------------------------------------------------------------
@handles_errors
def backup(path: str, force: bool) -> None:
    target = Path(path)
    if target.is_dir():
        raise Failure(f"{path} is a directory; give the file name of the archive to write", 2, "usage")
    if not target.parent.is_dir():
        raise Failure(f"directory {target.parent} does not exist")
    if target.exists() and not force:
        raise Failure(f"{path} already exists; choose another name, or pass --force to replace it")

    async def work(endpoints: list[str], timeout: float) -> tuple[Manifest, int]:
        async with to_leader(endpoints, timeout) as client:
            info = await client.admin("backup_begin", timeout=timeout)
            manifest = Manifest(cluster_id=info["cluster_id"], node=info["node"], index=info["index"],
                                term=info["term"], revision=info["revision"], keys=info["keys"], size=info["size"],
                                sha256=info["checksum"], created=iso_time(info["created"]),
                                keyval_version=__version__)
            # Chunks go to the node that answered (the client keeps using it): it holds the data.
            with ArchiveWriter(target, manifest) as writer, _progress(manifest.size, "backup") as bar:
                offset = 0
                while offset < manifest.size:
                    chunk = await client.admin("backup_chunk", timeout=timeout, id=info["id"], offset=offset)
                    data = chunk["data"]
                    if not data:
                        raise Failure(f"the leader stopped sending at byte {offset} of {manifest.size}")
                    writer.write(data)
                    offset += len(data)
                    if bar is not None:
                        bar.update(len(data))
                writer.commit()
            with contextlib.suppress(ClientError):
                await client.admin("backup_end", id=info["id"])
        return manifest, target.stat().st_size

    try:
        manifest, archive_size = run_on_cluster(work)
    except ArchiveError as exc:
        raise Failure(f"backup not written: {exc}") from None
    except OSError as exc:  # the archive's directory is read-only, the disk is full...
        raise Failure(f"backup not written: cannot write {path}: {exc.strerror or exc}") from None
    if settings().json:
        emit({"path": str(target), "archive_size": archive_size, **manifest.__dict__})
        return
    click.echo(f"backup written to {path}: {manifest.keys} keys of cluster {manifest.cluster_id} at index "
               f"{manifest.index} (term {manifest.term}), served by {manifest.node}; "
               f"{human_size(manifest.size)} of data, {human_size(archive_size)} compressed; "
               f"sha256 {manifest.sha256}")


# -- restore -------------------------------------------------------------------------------
@handles_errors
def restore(path: str, yes: bool) -> None:
    try:
        checked = read_archive(path)
    except ArchiveError as exc:
        raise Failure(f"not restoring, nothing changed: {exc}", code="invalid_backup") from None
    m = checked.manifest
    summary = (f"{path}: backup of cluster {m.cluster_id} at index {m.index} (term {m.term}), taken {m.created} "
               f"from {m.node}: {m.keys} keys, {human_size(m.size)}; checksum verified")
    click.echo(summary, err=settings().json)
    if not yes:
        if not sys.stdin.isatty():
            raise Failure("not restoring without confirmation, and there is no terminal to ask on; "
                          "pass --yes to replace all the cluster's data with the backup", code="confirmation_required")
        if not click.confirm("This replaces ALL data in the cluster with the backup's. Continue?", err=True):
            raise Failure("restore cancelled; nothing changed", code="cancelled")

    async def work(endpoints: list[str], timeout: float) -> dict[str, Any]:
        async with to_leader(endpoints, timeout) as client:
            here = await client.status()
            if here.get("cluster_id") and m.cluster_id != here["cluster_id"]:
                click.echo(f"note: the backup comes from cluster {m.cluster_id}; this cluster is "
                           f"{here['cluster_id']}", err=True)
            return await _upload(client, checked.data, m, timeout)

    result = run_on_cluster(work)
    if settings().json:
        emit({"restored": True, "path": path, "keys": m.keys, "revision": result["revision"],
              "backup_index": m.index, "backup_cluster_id": m.cluster_id})
        return
    click.echo(f"restored {m.keys} keys: every member now holds exactly the backup's data "
               f"(revision {result['revision']})")


async def _upload(client: AsyncClient, data: bytes, m: Manifest, timeout: float) -> dict[str, Any]:
    restore_id = uuid.uuid4().hex
    begun = await client.admin("restore_begin", timeout=timeout, id=restore_id, size=len(data), checksum=m.sha256)
    step = begun["chunk_size"]
    try:
        with _progress(len(data), "restore") as bar:
            for offset in range(0, len(data), step):
                chunk = data[offset : offset + step]
                await client.admin("restore_chunk", timeout=timeout, id=restore_id, offset=offset, data=chunk)
                if bar is not None:
                    bar.update(len(chunk))
        return await client.admin("restore_commit", timeout=timeout, id=restore_id)
    except BaseException:
        # Leave no staged upload behind (a later restore would discard it anyway).
        with contextlib.suppress(Exception):
            await client.admin("restore_abort", timeout=5.0, id=restore_id)
        raise


def add_backup_commands(cli: click.Group) -> None:
    cli.add_command(command(
        "backup", "Write a consistent backup of the cluster's data to PATH (a .tar.gz). --timeout (default 5) "
        "applies to each request of the transfer, not to the whole backup.", backup, arg("path"),
        opt("--force", is_flag=True, help="Replace PATH if it exists.")))
    cli.add_command(command(
        "restore", "Replace all the cluster's data with the backup at PATH (checked first). --timeout "
        "(default 5) applies to each request of the upload, not to the whole restore.", restore,
        arg("path"), opt("--yes", is_flag=True, help="Don't ask for confirmation.")))
