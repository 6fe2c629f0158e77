"""TLS contexts for the client port: the node's (server side) and a client's.

Built once at startup (a context per connection would reread the files each time); a file
that is missing or does not hold what it should is one ConfigError naming the setting.
"""
from __future__ import annotations

import ssl

from keyval.errors import ConfigError


def server_context(cert: str, key: str, ca: str | None = None) -> ssl.SSLContext:
    """The client port's context; with ``ca``, clients must present a certificate it signed."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(context, cert, key, "client_cert", "client_key")
    if ca:
        _load_ca(context, ca, "client_ca")
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(cafile: str | None = None, cert: str | None = None, key: str | None = None,
                   what: tuple[str, str, str] = ("--cacert", "--cert", "--key")) -> ssl.SSLContext:
    """A client's context: the server's certificate is checked against ``cafile`` (default:
    the system's CAs) and the endpoint's host name; ``cert``/``key`` are presented for
    mutual TLS. ``what`` names the three settings in error messages."""
    if bool(cert) != bool(key):
        raise ConfigError(f"{what[1]} and {what[2]} must be given together")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cafile:
        _load_ca(context, cafile, what[0])
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if cert:
        _load_chain(context, cert, key, what[1], what[2])
    return context


def _load_chain(context: ssl.SSLContext, cert: str, key: str, cert_what: str, key_what: str) -> None:
    for path, what in ((cert, cert_what), (key, key_what)):
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise ConfigError(f"{what}: {path!r} cannot be read: {exc.strerror}") from None
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise ConfigError(f"{cert_what}/{key_what}: {cert!r} and {key!r} are not a PEM certificate and its "
                          f"private key ({exc.reason or exc})") from None


def _load_ca(context: ssl.SSLContext, ca: str, what: str) -> None:
    try:
        context.load_verify_locations(cafile=ca)
    except ssl.SSLError as exc:  # before OSError: it is one
        raise ConfigError(f"{what}: {ca!r} holds no PEM CA certificate ({exc.reason or exc})") from None
    except OSError as exc:
        raise ConfigError(f"{what}: {ca!r} cannot be read: {exc.strerror}") from None
