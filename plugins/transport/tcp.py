"""The ``tcp`` transport backend: Raft messages over TCP connections (the default)."""
from __future__ import annotations

from typing import Any

from keyval import hookimpl
from keyval.backends import TransportBackend


def open_tcp(options: dict[str, Any]):
    raise NotImplementedError("the tcp transport backend arrives with issue #4")


@hookimpl
def keyval_transport_backends() -> list[TransportBackend]:
    return [TransportBackend("tcp", open_tcp, "Raft messages over TCP (default)")]
