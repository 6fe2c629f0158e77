"""The ``tcp`` transport backend: Raft messages over TCP connections (the default).

Options (``transport_options`` in the config file) are listed in ``tcp_options.TcpOptions``:
``secret_file`` for HMAC-authenticated frames, ``tls_cert``/``tls_key``/``tls_ca`` for TLS
and mutual TLS, ``queue_size``/``queue_bytes``/``queue_drop`` for the per-peer send queue.
"""
from __future__ import annotations

from typing import Any

from keyval import hookimpl
from keyval.plugin_api.backends import TransportBackend

from .tcp_transport import TcpTransport


def open_tcp(options: dict[str, Any]) -> TcpTransport:
    return TcpTransport(options)


@hookimpl
def keyval_transport_backends() -> list[TransportBackend]:
    return [TransportBackend("tcp", open_tcp, "Raft messages over TCP, optional TLS and HMAC (default)")]
