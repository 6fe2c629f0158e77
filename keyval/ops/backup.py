"""Backup archives: what ``kvctl backup`` writes and ``kvctl restore`` reads.

A backup is a gzip-compressed tar holding two regular files, in this order::

    manifest.json   what the backup is (below), so it can be checked before the data is read
    snapshot.bin    the state machine's data as KV snapshot bytes (``keyval.kv.snapshot``,
                    without sessions or a staged restore)

``manifest.json`` is one JSON object::

    format          "keyval-backup"
    format_version  1 (a reader refuses a newer one)
    keyval_version  the version of the kvctl that wrote it
    cluster_id      the cluster it was taken from
    node            the node (the leader) that served it
    index, term     the Raft log position of the state it holds (the leader's applied index)
    revision        the store's revision at that point
    keys            how many keys it holds
    size            length of snapshot.bin in bytes
    sha256          sha256 of snapshot.bin, hex
    created         when the state was captured, ISO 8601 UTC ("2025-01-31T12:00:00Z")

The archive is written to a temporary file beside the target and renamed into place once
complete and fsynced, so a crash or a failed download never leaves a half-written backup
under the target name. Reading checks everything — the gzip stream to its end (its CRC and
length), the tar structure, the manifest, the size and checksum of the data, and that the
data decodes as a KV snapshot with the announced number of keys — before anyone acts on it.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import tempfile
import time
import zlib
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from keyval.errors import KeyvalError
from keyval.kv.snapshot import decode_snapshot

FORMAT_NAME = "keyval-backup"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
DATA_NAME = "snapshot.bin"
_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE
_READ = 1 << 20
#: A manifest is a few hundred bytes; anything much larger is not one.
_MAX_MANIFEST = 1 << 20


class ArchiveError(KeyvalError):
    """A backup archive cannot be written or is not a usable backup; the message says why."""


@dataclass(frozen=True)
class Manifest:
    cluster_id: str
    node: str
    index: int
    term: int
    revision: int
    keys: int
    size: int
    sha256: str
    created: str
    keyval_version: str
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, raw: bytes) -> "Manifest":
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, ValueError) as exc:
            raise ArchiveError(f"{MANIFEST_NAME} is not valid JSON ({exc})") from None
        except RecursionError:
            raise ArchiveError(f"{MANIFEST_NAME} nests arrays or objects too deeply to be a manifest") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
            raise ArchiveError(f"{MANIFEST_NAME} does not describe a KeyVal backup")
        version = doc.get("format_version")
        if not isinstance(version, int) or version < 1:
            raise ArchiveError(f"{MANIFEST_NAME} has no valid format_version")
        if version > FORMAT_VERSION:
            raise ArchiveError(f"the backup is format version {version}, newer than this kvctl reads "
                               f"(up to {FORMAT_VERSION}); use a newer kvctl")
        kinds = {"cluster_id": str, "node": str, "index": int, "term": int, "revision": int, "keys": int,
                 "size": int, "sha256": str, "created": str, "keyval_version": str}
        bad = [k for k, kind in kinds.items() if not isinstance(doc.get(k), kind) or isinstance(doc.get(k), bool)]
        if bad:
            raise ArchiveError(f"{MANIFEST_NAME} lacks valid field(s): {', '.join(bad)}")
        if len(doc["sha256"]) != 64 or any(c not in "0123456789abcdef" for c in doc["sha256"]):
            raise ArchiveError(f"{MANIFEST_NAME}: sha256 is not a hex sha256 digest")
        if doc["size"] <= 0 or doc["keys"] < 0:
            raise ArchiveError(f"{MANIFEST_NAME}: size must be positive and keys not negative")
        return cls(**{k: doc[k] for k in kinds}, format_version=version)


@dataclass(frozen=True)
class Backup:
    """A backup read and fully checked: its manifest and the snapshot bytes."""

    path: str
    manifest: Manifest
    data: bytes


def iso_time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class ArchiveWriter:
    """Streams a backup into ``path``: ``write`` the data chunks in order, then ``commit``.

    Leaving the ``with`` block without ``commit`` (an error, an interrupted download) removes
    the temporary file; nothing appears at ``path``.
    """

    def __init__(self, path: str | os.PathLike, manifest: Manifest) -> None:
        self.path = Path(path)
        self.manifest = manifest
        self._hash = hashlib.sha256()
        self._written = 0
        self._tar_bytes = 0
        fd, self._tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        self._file = os.fdopen(fd, "wb")
        # No file name or time in the gzip header: the same backup gives the same bytes.
        self._gzip = gzip.GzipFile(filename="", mode="wb", fileobj=self._file, compresslevel=6, mtime=0)
        mtime = int(time.time())
        self._member(MANIFEST_NAME, manifest.to_json(), mtime)
        self._header(DATA_NAME, manifest.size, mtime)

    def __enter__(self) -> "ArchiveWriter":
        return self

    def __exit__(self, exc_type, *_) -> None:
        if self._tmp is not None:
            self.abort()

    def write(self, chunk: bytes) -> None:
        if self._written + len(chunk) > self.manifest.size:
            raise ArchiveError(f"more data than the {self.manifest.size} bytes announced")
        self._hash.update(chunk)
        self._written += len(chunk)
        self._put(chunk)

    def commit(self) -> None:
        """Check the data against the manifest, finish the archive, make it durable, rename."""
        if self._written != self.manifest.size:
            raise ArchiveError(f"got {self._written} of {self.manifest.size} bytes of data")
        if self._hash.hexdigest() != self.manifest.sha256:
            raise ArchiveError("the data received does not match the checksum the server announced")
        self._pad()
        self._put(b"\0" * (2 * _BLOCK))  # end of archive
        self._put(b"\0" * (-self._tar_bytes % _RECORD))
        self._gzip.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._tmp, self.path)
        self._tmp = None
        _fsync_dir(self.path.parent)

    def abort(self) -> None:
        try:
            self._gzip.close()
            self._file.close()
        except (OSError, ValueError):
            pass
        if self._tmp is not None:
            Path(self._tmp).unlink(missing_ok=True)
            self._tmp = None

    def _member(self, name: str, content: bytes, mtime: int) -> None:
        self._header(name, len(content), mtime)
        self._put(content)
        self._pad()

    def _header(self, name: str, size: int, mtime: int) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = size, mtime, 0o644
        self._put(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))

    def _pad(self) -> None:
        self._put(b"\0" * (-self._tar_bytes % _BLOCK))

    def _put(self, data: bytes) -> None:
        self._gzip.write(data)
        self._tar_bytes += len(data)


def read_archive(path: str | os.PathLike) -> Backup:
    """Read and check a backup completely. Raises ArchiveError saying what is wrong."""
    shown = str(path)
    try:
        raw = open(path, "rb")
    except OSError as exc:
        raise ArchiveError(f"cannot read {shown}: {exc.strerror}") from None
    try:
        with raw, gzip.GzipFile(fileobj=raw, mode="rb") as stream:
            manifest, data = _read_members(stream)
            while stream.read(_READ):  # to the gzip trailer: its CRC and length are checked there
                pass
    except ArchiveError as exc:
        raise ArchiveError(f"{shown}: {exc}") from None
    except (EOFError, tarfile.ReadError) as exc:
        raise ArchiveError(f"{shown} is truncated or not a tar.gz archive ({exc or 'unexpected end'})") from None
    except (gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise ArchiveError(f"{shown} is damaged or not a gzip file ({exc})") from None
    if len(data) != manifest.size:
        raise ArchiveError(f"{shown}: {DATA_NAME} is {len(data)} bytes, the manifest says {manifest.size}")
    if hashlib.sha256(data).hexdigest() != manifest.sha256:
        raise ArchiveError(f"{shown}: {DATA_NAME} does not match the manifest's sha256 checksum "
                           f"(the archive was altered or damaged)")
    try:
        decoded = decode_snapshot(data)
    except ValueError as exc:
        raise ArchiveError(f"{shown}: {DATA_NAME} is not KeyVal data ({exc})") from None
    if len(decoded.data) != manifest.keys:
        raise ArchiveError(f"{shown}: {DATA_NAME} holds {len(decoded.data)} keys, the manifest says {manifest.keys}")
    return Backup(shown, manifest, data)


def _read_members(stream: io.BufferedIOBase) -> tuple[Manifest, bytes]:
    manifest: Manifest | None = None
    data: bytes | None = None
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            if member.name not in (MANIFEST_NAME, DATA_NAME):
                continue  # room for additions in later versions
            if not member.isreg():
                raise ArchiveError(f"{member.name} is not a regular file")
            if member.name == MANIFEST_NAME:
                if member.size > _MAX_MANIFEST or data is not None:
                    raise ArchiveError(f"{MANIFEST_NAME} is not where a manifest belongs")
                manifest = Manifest.from_json(tar.extractfile(member).read())
            else:
                if manifest is None:
                    raise ArchiveError(f"no {MANIFEST_NAME} before {DATA_NAME}: not a KeyVal backup")
                if member.size != manifest.size:
                    raise ArchiveError(f"{DATA_NAME} is {member.size} bytes, the manifest says {manifest.size}")
                data = tar.extractfile(member).read()
                if len(data) != member.size:
                    raise EOFError(f"{DATA_NAME} ends after {len(data)} of {member.size} bytes")
    if manifest is None:
        raise ArchiveError(f"no {MANIFEST_NAME}: not a KeyVal backup")
    if data is None:
        raise ArchiveError(f"no {DATA_NAME} in the archive")
    return manifest, data


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
