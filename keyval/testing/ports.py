"""Free loopback ports for test clusters, the nemesis and the tests' harnesses."""
from __future__ import annotations

import socket


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Nothing holds ``port`` on ``host``, for tcp nor udp (a node may use either)."""
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True
