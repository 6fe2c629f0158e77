"""The ``tcp`` transport over TLS and mutual TLS, with certificates made for the test.

Certificates come from the ``openssl`` command (the ``cryptography`` package is not a
dependency, and not installed to make them); without it these tests are skipped.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from keyval.raft.messages import Heartbeat, InstallSnapshot, TimeoutNow
from keyval.raft.types import Membership, SnapshotMeta
from keyval.testing.transport_conformance import Net, host_port
from plugins.transport.tcp_transport import TcpTransport

# In CI a missing openssl is a setup failure (scripts/setup installs it), not a reason to skip.
pytestmark = pytest.mark.skipif(
    shutil.which("openssl") is None and not os.environ.get("CI"),
    reason="making test certificates needs the openssl command on PATH",
)


class Tcp:
    options = {"reconnect_max": 0.2}
    timeout = 10.0

    def open_transport(self, options):
        return TcpTransport(options)


@pytest.fixture
def net():
    net = Net(Tcp())
    try:
        yield net
    finally:
        problems = net.shutdown()
    assert not problems, f"left behind after close(): {problems}"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(directory: Path, name: str) -> None:
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN={name}", cwd=directory)


def make_leaf(directory: Path, name: str, ca: str) -> None:
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=directory)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", cwd=directory)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """Two CAs ("ca", "rogue-ca"), nodes n1, n2 signed by ca, and "rogue" signed by rogue-ca."""
    directory = tmp_path_factory.mktemp("pki")
    make_ca(directory, "ca")
    make_ca(directory, "rogue-ca")
    for name in ("n1", "n2"):
        make_leaf(directory, name, "ca")
    make_leaf(directory, "rogue", "rogue-ca")

    def options(name: str, ca: str | None = "ca") -> dict:
        opts = {"tls_cert": str(directory / f"{name}.crt"), "tls_key": str(directory / f"{name}.key")}
        if ca:
            opts["tls_ca"] = str(directory / f"{ca}.crt")
        return opts
    return options


def test_tls_without_a_ca_encrypts_both_ways(net, pki):
    a, b = net.node("a", pki("n1", ca=None)), net.node("b", pki("n2", ca=None))
    net.deliver(a, b, Heartbeat(1, "a", "b", 1, b"over tls"))
    net.deliver(b, a, Heartbeat(1, "b", "a", 1, b"and back"))


def test_mutual_tls_with_certificates_of_the_cluster_ca(net, pki):
    a, b = net.node("a", pki("n1")), net.node("b", pki("n2"))
    net.deliver(a, b, Heartbeat(1, "a", "b", 1))
    net.deliver(b, a, Heartbeat(1, "b", "a", 1))
    big = InstallSnapshot(1, "a", "b", SnapshotMeta(1, 1, Membership(frozenset({"a"}))), 0, b"z" * (3 * 1024 * 1024), True)
    net.deliver(a, b, big, resend_every=3.0)


def test_mutual_tls_refuses_a_client_certificate_of_another_ca(net, pki):
    b = net.node("b", pki("n2"))
    rogue = net.node("r", pki("rogue", ca=None))  # presents its cert, trusts anyone
    started = time.monotonic()
    while time.monotonic() - started < 1.0:
        rogue.send(b, TimeoutNow(1, "r", "b"))
        time.sleep(0.01)
    stats = rogue.stats()
    # TLS 1.3 lets the client finish its handshake before the server checks its certificate:
    # the refusal shows as lost connections, redialled with backoff, not 100 times a second.
    assert stats["connections_lost"] + stats["connect_failures"] > 0
    assert stats["connects"] <= 20, stats
    assert b.inbox == [] and b.stats()["received"] == 0
    net.deliver(net.node("a", pki("n1")), b, TimeoutNow(1, "a", "b"))


def test_mutual_tls_refuses_a_server_certificate_of_another_ca(net, pki):
    rogue = net.node("r", pki("rogue", ca=None))
    a = net.node("a", pki("n1"))
    net.wait(lambda: a.send(rogue, TimeoutNow(1, "a", "r")) or a.stats()["connect_failures"] > 0,
             "a to refuse the rogue server")
    assert rogue.inbox == []


def test_a_tls_listener_refuses_plaintext_and_keeps_serving(net, pki):
    b = net.node("b", pki("n2"))
    plain = net.node("p")
    for _ in range(20):
        plain.send(b, TimeoutNow(1, "p", "b"))
    with socket.create_connection(host_port(b.address), timeout=5) as s:
        s.sendall(b"\x00\x00\x00\x05hello" * 10)
        try:
            while s.recv(4096):  # a TLS alert, then the server hangs up
                pass
        except ConnectionResetError:
            pass
    net.deliver(net.node("a", pki("n1")), b, TimeoutNow(1, "a", "b"))
    assert all(m.frm == "a" for m in b.inbox)
