"""The ``tcp`` transport over TLS and mutual TLS, with certificates made for the test.

Under mutual TLS a certificate must name (CN or DNS SAN) the node id its holder claims,
and ``tls_refused`` refuses certificates the CA signed (a removed member's).

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

from keyval.errors import ConfigError
from keyval.raft.messages import Heartbeat, InstallSnapshot, TimeoutNow
from keyval.raft.types import Membership, SnapshotMeta
from keyval.testing.transport_conformance import Net, host_port
from keyval_plugins.transport.tcp_transport import TcpTransport

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


def make_leaf(directory: Path, name: str, ca: str, cn: str | None = None, dns: str | None = None) -> None:
    """A certificate in ``name.crt``, for CN ``cn`` (default ``name``) and maybe a DNS SAN."""
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn or name}", cwd=directory)
    extensions = []
    if dns:
        (directory / f"{name}.ext").write_text(f"subjectAltName=DNS:{dns}\n")
        extensions = ["-extfile", f"{name}.ext"]
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", *extensions, cwd=directory)


def certificate_field(path: str, flag: str) -> str:
    """``serial`` or ``fingerprint`` of a certificate, as openssl prints it (after the '=')."""
    out = subprocess.run(["openssl", "x509", "-in", path, "-noout", flag, *(["-sha256"] if "finger" in flag else [])],
                         check=True, capture_output=True, text=True).stdout
    return out.strip().split("=", 1)[1]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """Two CAs ("ca", "rogue-ca"); nodes n1, n2, n3 signed by ca (n3's name is a DNS SAN, its
    CN something else), and "rogue" signed by rogue-ca."""
    directory = tmp_path_factory.mktemp("pki")
    make_ca(directory, "ca")
    make_ca(directory, "rogue-ca")
    for name in ("n1", "n2"):
        make_leaf(directory, name, "ca")
    make_leaf(directory, "n3", "ca", cn="host3.example", dns="n3")
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
    a, b = net.node("n1", pki("n1")), net.node("n2", pki("n2"))
    net.deliver(a, b, Heartbeat(1, "n1", "n2", 1))
    net.deliver(b, a, Heartbeat(1, "n2", "n1", 1))
    big = InstallSnapshot(1, "n1", "n2", SnapshotMeta(1, 1, Membership(frozenset({"n1"}))), 0, b"z" * (3 * 1024 * 1024), True)
    net.deliver(a, b, big, resend_every=3.0)


def test_a_dns_subject_alt_name_names_the_node_too(net, pki):
    a, c = net.node("n1", pki("n1")), net.node("n3", pki("n3"))
    net.deliver(c, a, TimeoutNow(1, "n3", "n1"))
    net.deliver(a, c, TimeoutNow(1, "n1", "n3"))


def test_a_certificate_for_another_node_id_is_refused(net, pki):
    b = net.node("n2", pki("n2"))
    impostor = net.node("n9", pki("n1"))  # a genuine certificate of the cluster, for n1
    started = time.monotonic()
    while time.monotonic() - started < 1.0:
        impostor.send(b, TimeoutNow(1, "n9", "n2"))
        time.sleep(0.01)
    assert b.inbox == [] and b.stats()["dropped_identity"] > 0 and b.stats()["hellos_received"] == 0
    net.deliver(net.node("n1", pki("n1")), b, TimeoutNow(1, "n1", "n2"))


def test_a_dialler_refuses_a_listener_whose_certificate_names_another_node(net, pki):
    a, c = net.node("n1", pki("n1")), net.node("n2", pki("n2"))
    net.wait(lambda: a.send(("n3", c.address), TimeoutNow(1, "n1", "n3")) or a.stats()["dropped_identity"] > 0,
             "n1 to refuse n2's certificate at the address it dials for n3")
    assert c.inbox == [] and c.stats()["hellos_received"] == 0


@pytest.mark.parametrize("entry", ["node", "serial", "sha256"])
def test_a_refused_certificate_is_refused_both_ways(net, pki, entry):
    cert = pki("n1")["tls_cert"]
    refusal = {"node": "node:n1", "serial": f"serial:{certificate_field(cert, '-serial')}",
               "sha256": f"sha256:{certificate_field(cert, '-fingerprint')}"}[entry]
    b = net.node("n2", {**pki("n2"), "tls_refused": [refusal]})
    removed = net.node("n1", pki("n1"))
    net.wait(lambda: removed.send(b, TimeoutNow(1, "n1", "n2")) or b.stats()["connections_refused_tls"] > 0,
             "n2 to refuse n1's certificate")
    net.wait(lambda: b.send(removed, TimeoutNow(1, "n2", "n1")) or b.stats()["connections_refused_tls"] > 1,
             "n2 to refuse to dial n1")
    assert b.inbox == [] and removed.inbox == []
    net.deliver(net.node("n3", pki("n3")), b, TimeoutNow(1, "n3", "n2"))


@pytest.mark.parametrize("refused, words", [
    (["n1"], "node:ID"), (["colour:red"], "node:ID"), (["serial:xyz"], "not hexadecimal"),
    (["sha256:abcd"], "64 hex digits"), ("node:n1", "must be a list"),
])
def test_bad_refusals_are_one_line_config_errors(pki, refused, words):
    with pytest.raises(ConfigError, match=words) as info:
        TcpTransport({**pki("n1"), "tls_refused": refused})
    assert "\n" not in str(info.value)


def test_refusals_need_mutual_tls(pki):
    with pytest.raises(ConfigError, match="tls_refused needs tls_ca"):
        TcpTransport({**pki("n1", ca=None), "tls_refused": ["node:n2"]})


def test_mutual_tls_refuses_a_client_certificate_of_another_ca(net, pki):
    b = net.node("n2", pki("n2"))
    rogue = net.node("rogue", pki("rogue", ca=None))  # presents its cert, trusts anyone
    started = time.monotonic()
    while time.monotonic() - started < 1.0:
        rogue.send(b, TimeoutNow(1, "rogue", "n2"))
        time.sleep(0.01)
    stats = rogue.stats()
    # TLS 1.3 lets the client finish its handshake before the server checks its certificate:
    # the refusal shows as lost connections, redialled with backoff, not 100 times a second.
    assert stats["connections_lost"] + stats["connect_failures"] > 0
    assert stats["connects"] <= 20, stats
    assert b.inbox == [] and b.stats()["received"] == 0
    net.deliver(net.node("n1", pki("n1")), b, TimeoutNow(1, "n1", "n2"))


def test_mutual_tls_refuses_a_server_certificate_of_another_ca(net, pki):
    rogue = net.node("rogue", pki("rogue", ca=None))
    a = net.node("n1", pki("n1"))
    net.wait(lambda: a.send(rogue, TimeoutNow(1, "n1", "rogue")) or a.stats()["connect_failures"] > 0,
             "n1 to refuse the rogue server")
    assert rogue.inbox == []


def test_a_tls_listener_refuses_plaintext_and_keeps_serving(net, pki):
    b = net.node("n2", pki("n2"))
    plain = net.node("p", {"connect_timeout": 0.5})
    for _ in range(20):
        plain.send(b, TimeoutNow(1, "p", "n2"))
    with socket.create_connection(host_port(b.address), timeout=5) as s:
        s.sendall(b"\x00\x00\x00\x05hello" * 10)
        try:
            while s.recv(4096):  # a TLS alert, then the server hangs up
                pass
        except ConnectionResetError:
            pass
    net.deliver(net.node("n1", pki("n1")), b, TimeoutNow(1, "n1", "n2"))
    assert all(m.frm == "n1" for m in b.inbox)
    # The plain dialler waits for a challenge while the listener waits for a TLS hello, until
    # the dialler's connect_timeout ends both (or the listener's handshake_timeout would).
    net.wait(lambda: plain.stats()["connect_failures"] > 0, "the plain dialler to give up")
    net.close(plain)
    time.sleep(0.2)
