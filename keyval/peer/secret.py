"""Which cluster secret a node authenticates its peer traffic with (docs/security.md).

Peer traffic is authenticated by default. A node takes, in this order:

1. ``secret_file`` (``--secret-file``): the operator's choice;
2. nothing, with ``insecure_peers`` (``--insecure-peers``): an explicit, logged opt-out;
3. ``cluster.secret`` in its data dir, made when it bootstrapped alone (or put there);
4. a new random ``cluster.secret`` in its data dir when it bootstraps a cluster of itself
   only: nobody else needs the secret until a node is added, and that node is given it.

Anything else is refused: the members of a new multi-node cluster must share one secret, so
a node cannot make its own, and a node that joins must be handed the cluster's.
"""
from __future__ import annotations

import dataclasses
import os
import secrets
from pathlib import Path

from keyval.peer.auth import load_secret
from keyval.config import NodeConfig
from keyval.errors import ConfigError

SECRET_NAME = "cluster.secret"
#: 32 random bytes, written as hex so that the file can be copied and pasted safely.
SECRET_BYTES = 32


def create_secret(path: str | Path) -> Path:
    """Write a new random secret to ``path`` (mode 0600); refuses to replace an existing file."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{str(path)!r} exists already; a cluster secret is never overwritten") from None
    except OSError as exc:
        raise ConfigError(f"cannot create the cluster secret {str(path)!r}: {exc.strerror}") from None
    try:
        os.write(fd, secrets.token_hex(SECRET_BYTES).encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def peer_secret_file(config: NodeConfig, create: bool = True) -> str | None:
    """The secret file ``config``'s node runs with, or None with ``insecure_peers``.

    May create ``DATA_DIR/cluster.secret`` (case 4 above; with ``create=False`` it returns None
    instead); raises ConfigError when no rule applies, telling the operator what to do.
    """
    if config.secret_file:
        load_secret(config.secret_file)  # unreadable, empty or too open: fail now, in one line
        return config.secret_file
    if config.insecure_peers:
        return None
    if config.data_dir:
        kept = Path(config.data_dir) / SECRET_NAME
        if kept.exists():
            load_secret(str(kept))
            return str(kept)
        if set(config.bootstrap) == {config.id}:
            if not create:
                return None
            Path(config.data_dir).mkdir(parents=True, exist_ok=True)
            return str(create_secret(kept))
    if len(config.bootstrap) > 1:
        raise ConfigError(
            "peer traffic is authenticated with a cluster secret that every member shares: make one with "
            "`keyval secret create FILE`, copy it to every node (mode 0600) and start each with --secret-file FILE "
            "(or accept unauthenticated peers with --insecure-peers)"
        )
    raise ConfigError(
        "this node needs the cluster's secret to talk to its peers: start it with --secret-file FILE, a copy "
        "(mode 0600) of the file the members run with (or accept unauthenticated peers with --insecure-peers)"
    )


def with_peer_secret(config: NodeConfig, create: bool = True) -> NodeConfig:
    """``config`` with its secret file settled and handed to the transport as its
    ``secret_file`` option (the option every built-in transport and the conformance suite
    know; a transport that cannot authenticate needs --insecure-peers)."""
    if not config.secret_file and config.transport_options.get("secret_file"):
        config = dataclasses.replace(config, secret_file=str(config.transport_options["secret_file"]))
    path = peer_secret_file(config, create)
    if path is None:
        return config
    options = dict(config.transport_options)
    given = options.get("secret_file")
    if given is not None and given != path:
        raise ConfigError(f"transport_options.secret_file {given!r} differs from the cluster secret {path!r}; give one")
    options["secret_file"] = path
    return dataclasses.replace(config, secret_file=path, transport_options=options)
