"""TLS on the client port, against real `keyval serve` processes with certificates made by
kvctl's dev CA: plain TCP fails cleanly, the CA's clients get in, mutual TLS needs a cert."""
import pytest

from keyval.client import Client
from keyval.errors import Unreachable
from keyval.client.tls import client_context
from kvctl.credentials import cert_pem, issue, key_pem, new_ca, write_private

from .procs import LocalCluster


@pytest.fixture
def pki(tmp_path):
    """A CA, a certificate for each node n1..n5 and one for a client: {name: (cert, key)} paths."""
    ca_key, ca_cert = new_ca()
    (tmp_path / "ca.pem").write_bytes(cert_pem(ca_cert))
    files = {"ca": str(tmp_path / "ca.pem")}
    for name, server in [(f"n{i}", True) for i in range(1, 6)] + [("client", False)]:
        key, cert = issue(ca_key, ca_cert, name, server)
        (tmp_path / f"{name}.pem").write_bytes(cert_pem(cert))
        write_private(tmp_path / f"{name}.key", key_pem(key))
        files[name] = (str(tmp_path / f"{name}.pem"), str(tmp_path / f"{name}.key"))
    return files


def tls_node(tmp_path, pki, mutual: bool, size: int = 1) -> LocalCluster:
    """Each node serves its own certificate (--client-cert differs per node)."""
    cluster = LocalCluster(tmp_path, size=size)
    client_cert = pki["client"] if mutual else (None, None)
    cluster.client_options = {"tls": client_context(pki["ca"], *client_cert)}
    for node_id in cluster.initial:
        cert, key = pki[node_id]
        extra = ("--client-cert", cert, "--client-key", key) + (("--client-ca", pki["ca"]) if mutual else ())
        cluster.nodes[node_id].start(cluster.bootstrap, *extra)
    return cluster


def test_tls_port_serves_clients_that_trust_its_ca_and_nothing_else(tmp_path, pki):
    cluster = tls_node(tmp_path, pki, mutual=False)
    try:
        leader = cluster.wait_for_leader()
        address = cluster.nodes[leader].client_addr
        with Client([address], tls=client_context(pki["ca"])) as c:
            c.put("k", "over tls")
            assert c.get("k") == b"over tls"
        with Client([address], timeout=2) as plain, pytest.raises(Unreachable):
            plain.get("k")
        with Client([address], timeout=5, tls=client_context()) as untrusting, pytest.raises(Unreachable) as caught:
            untrusting.get("k")  # the system CAs do not know the dev CA
        assert "certificate verify failed" in str(caught.value)
        assert cluster.nodes[leader].running
    finally:
        cluster.stop_all()


def test_mutual_tls_refuses_a_client_without_a_certificate(tmp_path, pki):
    cluster = tls_node(tmp_path, pki, mutual=True, size=3)
    try:
        leader = cluster.wait_for_leader()
        follower = next(n for n in cluster.initial if n != leader)
        address = cluster.nodes[follower].client_addr
        with Client([address], timeout=2, tls=client_context(pki["ca"])) as no_cert, pytest.raises(Unreachable):
            no_cert.get("k")
        # Nodes call each other's ports with their own certificates: every one registers its
        # address, so a follower can send a client on to the leader.
        with cluster.client(ids=[follower]) as c:
            c.put("k", "via a follower")
            assert c.get("k") == b"via a follower"
            assert sorted(c.status(address)["client_addresses"]) == ["n1", "n2", "n3"]
    finally:
        cluster.stop_all()


def test_a_bad_certificate_file_stops_the_node_with_one_line(tmp_path, pki):
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    cluster = LocalCluster(tmp_path, size=1)
    node = cluster.nodes["n1"]
    node.start(cluster.bootstrap, "--client-cert", str(tmp_path / "junk.pem"), "--client-key", pki["n1"][1])
    assert node.proc.wait(15) != 0
    stderr = node.proc.stderr.read().decode()
    assert "client_cert/client_key" in stderr and "Traceback" not in stderr, stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
