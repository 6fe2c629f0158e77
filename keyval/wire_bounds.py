"""Bounds on every value a peer may send: the peer codec, the UDP datagram format and the
node configuration share them, so what one part accepts every other part can hold.

Terms, indexes and offsets
--------------------------
Decoders accept ``0 <= n < MAX_WIRE_INT`` (2**62) and the encoder writes nothing outside it.

Invariant kept here: every term or index a node can reach from accepted input stays
encodable by the codec and by storage. A node makes new values only by one-steps from
values it holds (term + 1 when campaigning or in ``keyval recover``, index + 1 when
appending), and everything it holds came from accepted input or from such steps. The
tightest store is the segment log's term column, a signed 64-bit int (< 2**63; indexes and
the hard state are unsigned 64-bit, snapshot file names 20 digits). From below 2**62 it
takes 2**62 one-steps to reach 2**63: at a million elections a second, 146,000 years.
Peers decode the same range: a genuine cluster never gets near 2**62. Forged traffic
(no cluster secret) can still push a term to just below it; the next election's term is then
refused by peers, which is a stalled cluster, never a crash or an overflow. The encoder
refuses such a value with ``ValueError`` (the transports count it) rather than write it.

Node ids follow ``NODE_ID`` (``keyval serve --id`` is checked against the same pattern).
``parse_node_id`` and ``parse_address`` check one against these bounds, for the config file
and for clients' endpoints alike.
"""
from __future__ import annotations

import re

from keyval.errors import ConfigError

MAX_WIRE_INT = 2**62
#: The largest term or index storage holds: the segment log's signed 64-bit term column.
MAX_STORED_INT = 2**63 - 1

#: Letters, digits, '.', '_', '-'; starts with a letter or digit. ``\Z``: a trailing newline
#: does not match (``$`` would let one through).
NODE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*\Z"
NODE_ID = re.compile(NODE_ID_PATTERN)
#: In bytes and characters alike (the pattern is ASCII); the UDP header's length byte.
MAX_NODE_ID = 255
#: The cluster id: a 16-hex-digit hash today, empty before a node learned it.
CLUSTER_ID_PATTERN = r"^[A-Za-z0-9._-]*\Z"
MAX_CLUSTER_ID = 64
#: HOST:PORT or [V6]:PORT (a zone id allowed); the port's range is checked in Python.
ADDRESS_PATTERN = r"^(\[[0-9A-Fa-f:.%a-zA-Z_-]+\]|[A-Za-z0-9._-]+):[0-9]{1,5}\Z"
MAX_ADDRESS = 300
#: Members of one configuration (voters + learners, and addresses).
MAX_MEMBERS = 1024
#: a peer's KeyVal release as it advertises it (PEP 440 characters); shown in node status
SOFTWARE_VERSION_PATTERN = r"^[A-Za-z0-9.+!_-]+\Z"
MAX_SOFTWARE_VERSION = 64
#: Entries in one AppendEntries. A leader sends at most ``RaftConfig.max_entries_per_msg``
#: (512 by default), which must stay at or below this. Without it a 64 MiB message of empty
#: entries would make a receiver build millions of objects.
MAX_ENTRIES_PER_MESSAGE = 4096
#: A heartbeat's read context: the leader's 8-byte round number.
MAX_CONTEXT_BYTES = 64


def address_ok(address: str) -> bool:
    """True for a HOST:PORT the codec accepts (shape, length and port range)."""
    if len(address) > MAX_ADDRESS or not re.match(ADDRESS_PATTERN, address):
        return False
    return int(address.rpartition(":")[2]) <= 65535


def membership_problem(voters, learners, addresses, cluster_id: str) -> str | None:
    """Why a configuration is internally inconsistent or out of bounds, or None.

    ``voters``/``learners`` are collections of ids, ``addresses`` (id, address) pairs: what
    a snapshot's meta or a CONFIG entry carries. Runs once per snapshot chunk or CONFIG
    entry, never per normal entry.
    """
    voters, learners = list(voters), list(learners)
    members = set(voters) | set(learners)
    if not voters:
        return "a configuration needs a voter"
    if len(members) != len(voters) + len(learners):
        return "a member is listed twice (or is both voter and learner)"
    if len(members) > MAX_MEMBERS or len(addresses) > MAX_MEMBERS:
        return f"more than {MAX_MEMBERS} members"
    for node in members:
        if not isinstance(node, str) or len(node) > MAX_NODE_ID or not NODE_ID.match(node):
            return f"member id {node!r} is not a node id"
    ids = [node for node, _ in addresses]
    if len(set(ids)) != len(ids):
        return "two addresses for one member"
    for node, address in addresses:
        if node not in members:
            return f"address for {node!r}, not a member"
        if not isinstance(address, str) or not address_ok(address):
            return f"address {address!r} of {node!r} is not HOST:PORT"
    if not isinstance(cluster_id, str) or len(cluster_id) > MAX_CLUSTER_ID or not re.match(CLUSTER_ID_PATTERN, cluster_id):
        return f"cluster id {cluster_id!r} out of bounds"
    return None


def parse_node_id(text: str, what: str = "id") -> str:
    if not isinstance(text, str) or len(text) > MAX_NODE_ID or not NODE_ID.match(text):
        raise ConfigError(f"{what}: {text!r} is not a valid node id (letters, digits, '.', '_', '-'; "
                          f"at most {MAX_NODE_ID})")
    return text


def parse_address(text: str, what: str = "address") -> str:
    """Check ``HOST:PORT`` (``[v6]:PORT`` for IPv6) and return it unchanged."""
    if not isinstance(text, str):
        raise ConfigError(f"{what}: expected HOST:PORT, got {text!r}")
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    # address_ok: the shape peers accept in a configuration they receive
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535 or not address_ok(text):
        raise ConfigError(f"{what}: expected HOST:PORT, got {text!r}")
    return text
