"""Raw sockets against a node's ports, as a stranger would open them: helpers of the tests."""
from __future__ import annotations

import os
import resource
import socket
import time

from keyval.client import protocol as p


def allow_descriptors(count: int) -> None:
    """Let this process hold ``count`` more sockets (soft limit raised toward the hard one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = len(os.listdir("/proc/self/fd")) + count
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    if hard != resource.RLIM_INFINITY and hard < wanted:
        import pytest

        pytest.skip(f"needs {wanted} open files, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def open_connections(address: str, count: int) -> list[socket.socket]:
    """Up to ``count`` connections (the kernel's backlog accepts them whatever the node does)."""
    socks = []
    for _ in range(count):
        try:
            socks.append(socket.create_connection(host_port(address), timeout=2))
        except OSError:
            break
    return socks


def send_quietly(sock: socket.socket, data: bytes) -> None:
    """Send what the socket takes without waiting; a node that hung up is no error here."""
    sock.setblocking(False)
    try:
        sock.send(data)
    except OSError:
        pass


def close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        sock.close()
    socks.clear()


def read_response(sock: socket.socket, timeout: float) -> p.Response | None:
    """The next response frame, or None if the node closed the connection first."""
    sock.setblocking(True)
    sock.settimeout(timeout)
    data = b""
    try:
        while len(data) < 4 or len(data) < 4 + int.from_bytes(data[:4], "big"):
            chunk = sock.recv(65536)
            if not chunk:
                return None
            data += chunk
    except ConnectionResetError:
        return None
    size = int.from_bytes(data[:4], "big")
    return p.decode_response(data[4:4 + size])


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """True once the node closes the connection (whatever it sent before), False on timeout."""
    sock.setblocking(True)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            if not sock.recv(65536):
                return True
    except socket.timeout:
        return False
    except ConnectionResetError:
        return True
    return False


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/PID/status")
