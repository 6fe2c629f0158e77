"""Who a peer's TLS certificate says it is, and whether the operator refused it.

Under mutual TLS (``tls_ca``) a node's certificate names its node id, as the subject's CN or
a DNS subjectAltName. A hello, and every message of the connection, must come from a node
id the certificate names; the dialling side likewise expects the certificate of the peer
it means to reach. ``tls_refused`` lists certificates a node refuses although the CA signed
them (a removed member's, say), as ``node:ID`` (any certificate naming ID), ``serial:HEX``
or ``sha256:HEX`` (the fingerprint of the DER certificate; colons optional, any case).
"""
from __future__ import annotations

import hashlib
import ssl
from dataclasses import dataclass

REFUSAL_KINDS = ("node", "serial", "sha256")


@dataclass(frozen=True)
class PeerCertificate:
    names: frozenset[str]
    serial: str  # upper-case hex, no leading zeros
    sha256: str  # lower-case hex

    def refused_by(self, refused: frozenset[str]) -> str | None:
        """The ``tls_refused`` entry that refuses this certificate, if any."""
        for entry in (*(f"node:{n}" for n in sorted(self.names)), f"serial:{self.serial}", f"sha256:{self.sha256}"):
            if entry in refused:
                return entry
        return None


def peer_certificate(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> PeerCertificate | None:
    """The verified certificate the peer presented, or None (no TLS, or none was asked for)."""
    if ssl_object is None:
        return None
    decoded = ssl_object.getpeercert()
    der = ssl_object.getpeercert(binary_form=True)
    if not decoded or not der:  # only verified certificates are decoded: mutual TLS is off
        return None
    names = {value for rdn in decoded.get("subject", ()) for key, value in rdn if key == "commonName"}
    names.update(value for kind, value in decoded.get("subjectAltName", ()) if kind == "DNS")
    serial = str(decoded.get("serialNumber", "")).upper().lstrip("0") or "0"
    return PeerCertificate(frozenset(names), serial, hashlib.sha256(der).hexdigest())


def normalise_refusal(entry: object) -> str:
    """One ``tls_refused`` entry in the form ``PeerCertificate.refused_by`` compares;
    raises ValueError with the reason."""
    if not isinstance(entry, str) or ":" not in entry:
        raise ValueError(f"expected node:ID, serial:HEX or sha256:HEX, got {entry!r}")
    kind, _, value = entry.partition(":")
    if kind not in REFUSAL_KINDS or not value:
        raise ValueError(f"expected node:ID, serial:HEX or sha256:HEX, got {entry!r}")
    if kind == "node":
        return entry
    digits = value.replace(":", "")
    try:
        int(digits, 16)
    except ValueError:
        raise ValueError(f"{kind} of {entry!r} is not hexadecimal") from None
    if kind == "sha256":
        if len(digits) != 64:
            raise ValueError(f"sha256 of {entry!r} is not 64 hex digits")
        return f"sha256:{digits.lower()}"
    return f"serial:{digits.upper().lstrip('0') or '0'}"
