"""The credentials kvctl connects with: ``--token-file`` (or ``$KVCTL_TOKEN``), ``--cacert``,
``--cert``/``--key``; else, for a local dev cluster made with ``kvctl local up --secure``,
the CA, client certificate and admin token it keeps in its dir.

A local cluster's files are used only when kvctl talks to that cluster (its endpoints file,
or a ``kvctl local`` command): its admin token must not go to whatever ``--endpoints`` names.
"""
from __future__ import annotations

import os
import ssl
from dataclasses import dataclass

import click

from keyval.client import AsyncClient
from keyval.errors import ConfigError
from keyval.client.tls import client_context
from kvctl.endpoints import ENV as ENDPOINTS_ENV, LOCAL_DIR
from kvctl.localcluster import LocalCluster
from kvctl.output import USAGE, Failure, Settings, settings

TOKEN_ENV = "KVCTL_TOKEN"


@dataclass(frozen=True)
class Credentials:
    token: str | None = None
    tls: ssl.SSLContext | None = None


def client(addresses: list[str], timeout: float, local: LocalCluster | None = None) -> AsyncClient:
    """A client for ``addresses`` with kvctl's credentials (``local``: the dev cluster that a
    ``kvctl local`` command works on)."""
    ctx = click.get_current_context(silent=True)  # None when used as a library (keyval.bench)
    creds = credentials(settings(ctx) if ctx is not None else Settings(), local)
    return AsyncClient(addresses, timeout=timeout, token=creds.token, tls=creds.tls)


def credentials(s: Settings, local: LocalCluster | None = None) -> Credentials:
    if local is None and not s.endpoints and not os.environ.get(ENDPOINTS_ENV, "").strip():
        local = LocalCluster(LOCAL_DIR)
    key = str(local.root) if local is not None else ""
    if key not in s.credentials:  # once per command: a TLS context reads its files
        s.credentials[key] = _credentials(s, local)
    return s.credentials[key]


def _credentials(s: Settings, local: LocalCluster | None) -> Credentials:
    token = _token(s)
    tls = None
    if s.cacert or s.cert_file or s.key_file:
        try:
            tls = client_context(s.cacert, s.cert_file, s.key_file)
        except ConfigError as exc:
            raise Failure(str(exc), USAGE, "usage") from None
    if local is not None and local.tls_ca.exists():
        if token is None and local.token_file("admin").exists():
            token = _read_token(str(local.token_file("admin")), f"{local.shown}/tokens/admin")
        if tls is None:
            try:
                tls = client_context(str(local.tls_ca), str(local.cert_file("kvctl")), str(local.key_file("kvctl")),
                                     what=(f"{local.shown}/tls/ca.pem", f"{local.shown}/tls/kvctl.pem",
                                           f"{local.shown}/tls/kvctl.key"))
            except ConfigError as exc:
                raise Failure(f"{exc}; run `kvctl local up --secure` again to remake it") from None
    return Credentials(token, tls)


def _token(s: Settings) -> str | None:
    if s.token_file:
        return _read_token(s.token_file, "--token-file")
    return os.environ.get(TOKEN_ENV, "").strip() or None


def _read_token(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise Failure(f"{what}: {path!r} cannot be read: {getattr(exc, 'strerror', None) or exc}", USAGE, "usage") from None
    if not token:
        raise Failure(f"{what}: {path!r} is empty", USAGE, "usage")
    return token
