"""The credentials of a secure dev cluster, kept in its dir (layout: kvctl.localcluster).

Made once, by the first ``local up --secure``; a restart reuses them, and a node added
later (``local start nodeN``) gets a certificate from the same CA.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from kvctl import credentials as c

if TYPE_CHECKING:
    from kvctl.localcluster import LocalCluster


def ensure_cluster(local: "LocalCluster") -> None:
    """The CA, kvctl's certificate and a token per role, unless they exist (the cluster
    secret is made with every local cluster: LocalCluster.cluster_secret)."""
    if not local.tls_ca.exists():
        ca_key, ca_cert = c.new_ca()
        c.write_private(local.key_file("ca"), c.key_pem(ca_key))
        c.write_private(local.tls_ca, c.cert_pem(ca_cert))
        _issue(local, "kvctl", server=False)
    if not local.tokens_file.exists():
        tokens = {role: c.new_token() for role in c.ROLES}
        for role, token in tokens.items():
            c.write_private(local.token_file(role), token.encode() + b"\n")
        c.write_private(local.tokens_file, c.tokens_file_text(tokens).encode())


def ensure_node(local: "LocalCluster", node_id: str) -> None:
    ensure_cluster(local)
    if not local.cert_file(node_id).exists():
        _issue(local, node_id, server=True)


def _issue(local: "LocalCluster", name: str, server: bool) -> None:
    ca_key, ca_cert = c.load_ca(local.tls_ca, local.key_file("ca"))
    key, cert = c.issue(ca_key, ca_cert, name, server)
    c.write_private(local.key_file(name), c.key_pem(key))
    c.write_private(local.cert_file(name), c.cert_pem(cert))
