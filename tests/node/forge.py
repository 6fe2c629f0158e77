"""What an attacker on the network sends to a node's peer port: forged Raft messages, raw.

Built by hand from the documented wire formats (keyval/peer/codec.py, plugins/transport/tcp*.py,
plugins/transport/udp_wire.py) so that out-of-range values our own encoder refuses can be
sent too. Nothing here knows the cluster secret unless it is handed one.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import socket
import time

import msgspec

from keyval.peer.auth import Authenticator
from keyval_plugins.transport import udp_wire
from keyval_plugins.transport.tcp_hello import CHALLENGE_BYTES, decode_challenge, encode_hello
from keyval_plugins.transport.tcp_session import FrameSealer, session_key

#: codec message tags (keyval/peer/codec.py TAGS)
APPEND_ENTRIES, REQUEST_VOTE = 1, 3
ENTRY_NORMAL = 0


def message(cluster_id: str, tag: int, term: int, frm: str, to: str, *fields) -> bytes:
    """The codec's bytes (protocol version 1) of a message with these raw fields."""
    return b"KV\x01" + msgspec.msgpack.encode([cluster_id, [tag, term, frm, to, *fields]])


def append_entries(cluster_id: str, term: int, frm: str, to: str, prev_index: int, prev_term: int,
                   entries: list[tuple[int, int, int, bytes]], commit: int) -> bytes:
    return message(cluster_id, APPEND_ENTRIES, term, frm, to, prev_index, prev_term, entries, commit)


def request_vote(cluster_id: str, term: int, frm: str, to: str, last_index: int, last_term: int,
                 transfer: bool = False) -> bytes:
    return message(cluster_id, REQUEST_VOTE, term, frm, to, last_index, last_term, False, transfer)


def sealed(payload: bytes, secret: bytes | None) -> bytes:
    """With a secret: what a holder of it would append; without: a tag of random bytes."""
    tag = hmac.digest(secret, payload, hashlib.sha256) if secret else os.urandom(32)
    return payload + tag


def send_tcp(address: str, payloads: list[bytes], linger: float = 0.3) -> None:
    """Connect to a peer port and send each payload as one length-prefixed frame."""
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"".join(len(p).to_bytes(4, "big") + p for p in payloads))
        time.sleep(linger)  # let the node read before the connection goes


def send_tcp_session(address: str, payloads: list[bytes], cluster_id: str = "", sender: str = "intruder",
                     secret: bytes | None = None, linger: float = 0.3) -> None:
    """Dial like a peer (read the acceptor's nonce, send a hello as ``sender``), then send each
    payload as a frame of that connection — sealed for it when given the secret. Without the
    secret this is what a stranger can do to a node run with --insecure-peers."""
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        challenge = b""
        while len(challenge) < 4 + CHALLENGE_BYTES:
            chunk = sock.recv(4 + CHALLENGE_BYTES - len(challenge))
            if not chunk:
                raise EOFError("the node closed the connection before its challenge")
            challenge += chunk
        theirs, ours = decode_challenge(challenge[4:]), os.urandom(32)
        sealer = FrameSealer(session_key(Authenticator(secret), theirs, ours) if secret else None)
        hello = encode_hello(ours, secret is not None, sender, "127.0.0.1:9", cluster_id)
        sock.sendall(sealer.frame(hello) + b"".join(sealer.frame(p) for p in payloads))
        time.sleep(linger)


def send_udp(address: str, payload: bytes, sender: str = "intruder", seq: int = 1, epoch: int = 1,
             secret: bytes | None = None) -> None:
    """One datagram carrying ``payload`` as a single record."""
    host, _, port = address.rpartition(":")
    datagram = udp_wire.pack_header(udp_wire.FLAG_SEALED if secret is not None else 0, epoch, seq,
                                    udp_wire.encode_sender(sender))
    datagram += udp_wire.pack_record(1, 0, 1, len(payload), payload)
    if secret is not None:
        datagram = sealed(datagram, secret or None)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(datagram, (host, int(port)))
