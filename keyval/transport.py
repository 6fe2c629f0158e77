"""What a transport backend provides: the contract every transport plugin implements.

A transport carries Raft messages (the frozen dataclasses of ``keyval.raft.messages``)
between nodes. The Raft core never sees a socket: the node runtime hands each outgoing
message to ``send`` after the Ready's writes are durable, and ``deliver`` feeds what arrives
to the core. Delivery is best effort: a lost, duplicated or reordered message is Raft's to
cope with, so ``send`` never blocks and never raises because a peer is slow or down.

Bytes on the wire come from ``keyval.codec`` (versioned, carrying the cluster id); a
transport never unpickles or otherwise trusts what it reads: anything that fails to decode,
authenticate or belongs to another cluster is dropped and counted, never raised.
"""
from __future__ import annotations

from typing import Any, Callable, Protocol

from keyval.raft.messages import Message

#: Called with every message received and accepted; must not block.
Deliver = Callable[[Message], None]


class Transport(Protocol):
    async def start(self, node_id: str, address: str, deliver: Deliver) -> None:
        """Listen on ``address`` (HOST:PORT; port 0 picks a free one) for messages to
        ``node_id`` and hand each one to ``deliver``. Returns once listening."""

    @property
    def address(self) -> str:
        """The address actually listened on (after ``start``)."""

    def set_cluster_id(self, cluster_id: str) -> None:
        """Accept only messages of this cluster from now on (an uninitialised node learns
        its cluster id from the leader that adds it) and stamp it on everything sent."""

    def send(self, peer_id: str, address: str, message: Message) -> None:
        """Queue ``message`` for ``peer_id`` at ``address`` (which may change with
        membership). Never blocks, never raises for an unreachable peer: a bounded queue per
        peer drops (and counts) what does not fit."""

    def stats(self) -> dict[str, int]:
        """Counters: sent, received, and every kind of drop (``dropped_decode``,
        ``dropped_cluster``, ``dropped_auth``, ``dropped_replay``, ``dropped_queue_full``...)."""

    async def close(self) -> None:
        """Stop listening, close connections, drop what is queued."""


TransportFactory = Callable[[dict[str, Any]], Transport]
