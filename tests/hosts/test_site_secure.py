"""ansible/site.yml with client TLS (mutual) and tokens on real test hosts: the role installs
the files with their modes, its own kvctl calls use them, and nothing secret is printed."""

import datetime
import fcntl
import ipaddress
import secrets

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.hazmat.primitives.asymmetric import ec

from conftest import STATE_ROOT, require_hosts
from kvctl.credentials import cert_pem, key_pem, new_ca, write_private
from test_site_playbook import inventory, site
import testhosts

pytestmark = pytest.mark.hosts

NAMES = ["kvx1", "kvx2", "kvx3"]


@pytest.fixture(scope="module")
def three_hosts():
    require_hosts()
    STATE_ROOT.mkdir(parents=True, exist_ok=True)
    with open(STATE_ROOT / "kvx.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        hs = testhosts.HostSet("kvx", "10.77.3.0/24", 3, state_root=STATE_ROOT)
        try:
            hs.create()
            yield hs
        finally:
            hs.destroy()


def node_cert(ca_key, ca_cert, name, ip):
    """A node's certificate: CN = its id, SAN = its address, for server and client auth."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name), x509.IPAddress(ipaddress.ip_address(ip))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def test_mutual_tls_and_tokens(three_hosts, tmp_path):
    hs = three_hosts
    ca_key, ca_cert = new_ca("KeyVal test CA")
    (tmp_path / "ca.pem").write_bytes(cert_pem(ca_cert))
    admin, reader = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    host_vars = {}
    for h in hs.hosts:
        key, cert = node_cert(ca_key, ca_cert, h.name, h.ip)
        (tmp_path / f"{h.name}.pem").write_bytes(cert_pem(cert))
        write_private(tmp_path / f"{h.name}.key", key_pem(key))
        host_vars[h.name] = {
            "keyval_client_tls_cert_src": str(tmp_path / f"{h.name}.pem"),
            "keyval_client_tls_key_src": str(tmp_path / f"{h.name}.key"),
            "keyval_client_tls_ca_src": str(tmp_path / "ca.pem"),
            "keyval_client_tls_mutual": True,
            "keyval_client_tokens": [{"role": "admin", "name": "ops", "token": admin},
                                     {"role": "read", "name": "dash", "token": reader}],
            "keyval_admin_token": admin,
        }
    inv = inventory(hs, tmp_path, NAMES, **host_vars)
    rc, out, recap = site(inv, "--diff")
    assert rc == 0, out[-3000:]
    secret = hs.ssh("kvx1", "cat /etc/keyval/cluster.secret").stdout.strip()
    for hidden in (admin, reader, secret):
        assert hidden not in out
    rc, out, recap = site(inv)
    assert rc == 0 and all(r["changed"] == 0 for r in recap.values()), recap

    for path, mode in (("/etc/keyval/tokens", "600"), ("/etc/keyval/tls/node.key", "600"),
                       ("/etc/keyval/tls/node.pem", "644")):
        assert hs.ssh("kvx2", f"stat -c %a {path}").stdout.strip() == mode
    tokens = hs.ssh("kvx2", "cat /etc/keyval/tokens").stdout
    assert admin not in tokens and "admin ops " in tokens

    tls = "--endpoints 10.77.3.11:8001 --cacert /etc/keyval/tls/ca.pem --cert /etc/keyval/tls/node.pem " \
          "--key /etc/keyval/tls/node.key"
    refused = hs.ssh("kvx3", f"kvctl {tls} cluster health")
    assert refused.returncode == 1 and "permission denied" in refused.stderr
    ok = hs.ssh("kvx3", f"KVCTL_TOKEN={reader} kvctl {tls} cluster health")
    assert ok.returncode == 0, ok
    plain = hs.ssh("kvx3", f"KVCTL_TOKEN={admin} kvctl --endpoints 10.77.3.11:8001 cluster health")
    assert plain.returncode != 0  # a plain-TCP client gets its connection closed
