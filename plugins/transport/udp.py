"""The ``udp`` transport backend: Raft messages as UDP datagrams."""
from __future__ import annotations

from typing import Any

from keyval import hookimpl
from keyval.backends import TransportBackend


def open_udp(options: dict[str, Any]):
    raise NotImplementedError("the udp transport backend arrives with issue #4")


@hookimpl
def keyval_transport_backends() -> list[TransportBackend]:
    return [TransportBackend("udp", open_udp, "Raft messages as UDP datagrams")]
