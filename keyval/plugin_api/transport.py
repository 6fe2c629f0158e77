"""What a transport backend provides: the contract every transport plugin implements.

A transport carries Raft messages (the frozen dataclasses of ``keyval.raft.messages``)
between nodes. The Raft core never sees a socket: the node runtime hands each outgoing
message to ``send`` after the Ready's writes are durable, and ``deliver`` feeds what arrives
to the core. Delivery is best effort: a lost, duplicated or reordered message is Raft's to
cope with, so ``send`` never blocks and never raises because a peer is slow or down.

Bytes on the wire come from ``keyval.peer.codec`` (versioned, carrying the cluster id and, to
each peer, the highest protocol version it decodes: ``keyval.peer.versions``); a
transport never unpickles or otherwise trusts what it reads: anything that fails to decode,
authenticate or belongs to another cluster is dropped and counted, never raised.

A node started empty waits to be added: until its first configuration arrives it knows no
address for its leader and no cluster id, yet it must answer that leader to receive the
configuration. So a transport learns both from traffic: it remembers where each peer that
wrote to it listens (``send`` with ``address=None`` goes there), and until the node sets a
cluster id it adopts the one of the first message addressed to it (see ``cluster_id``).
What is learned comes only from traffic that passed the transport's checks (with a cluster
secret: authenticated).
"""
from __future__ import annotations

from typing import Any, Callable, Protocol

from keyval.raft.messages import Message

#: Called with every message received and accepted; must not block.
Deliver = Callable[[Message], None]


class Transport(Protocol):
    """The whole transport contract. ``keyval serve`` checks every member below before it
    serves; ``keyval.testing.transport_conformance`` checks the promises."""

    async def start(self, node_id: str, address: str, deliver: Deliver) -> None:
        """Listen on ``address`` (HOST:PORT; port 0 picks a free one) for messages to
        ``node_id`` and hand each one to ``deliver``. Returns once listening.

        ``node_id`` is this node's id: a transport needs it to tell the messages meant for
        this node from others and to name itself to its peers."""

    @property
    def address(self) -> str:
        """The address actually listened on (after ``start``)."""

    @property
    def cluster_id(self) -> str | None:
        """The cluster id stamped on what is sent: the one ``set_cluster_id`` set, else the
        one adopted from traffic, else None (then "" is stamped)."""

    def set_cluster_id(self, cluster_id: str) -> None:
        """Accept only messages of this cluster from now on and stamp it on everything sent.

        Until it is called every cluster is accepted, and the cluster id of the first
        accepted message addressed to this node is adopted (one log line) and stamped on
        what is sent: that is how a node being added answers the leader that adds it before
        its first configuration tells it the id. The node calls this once a configuration
        names the id; if it differs from the adopted one, this call wins (and is logged)."""

    def send(self, peer_id: str, address: str | None, message: Message) -> None:
        """Queue ``message`` for ``peer_id`` at ``address`` (which may change with
        membership). Never blocks, never raises for an unreachable peer: a bounded queue per
        peer drops (and counts) what does not fit.

        ``address=None``: at the address where ``peer_id`` listens as learned from its own
        traffic to us (the most recent, from a bounded table); with none known the message
        is dropped and counted as ``dropped_no_address``."""

    def stats(self) -> dict[str, int]:
        """Counters: sent, received, and every kind of drop (``dropped_decode``,
        ``dropped_cluster``, ``dropped_auth``, ``dropped_replay``, ``dropped_queue_full``,
        ``dropped_no_address``...)."""

    async def close(self) -> None:
        """Stop listening, close connections, drop what is queued."""

    # Optional (the node calls it before ``start`` when a transport has it):
    #
    # def use_peer_versions(self, versions: keyval.peer.versions.PeerVersions) -> None:
    #     """The node's table of what each peer speaks: encode each message to a peer at
    #     ``versions.send_version(peer)`` and report each accepted message with
    #     ``versions.heard(message.frm, advert)`` (``keyval.peer.codec.decode_envelope``).
    #     Without it a transport keeps a table of its own."""


TransportFactory = Callable[[dict[str, Any]], Transport]
