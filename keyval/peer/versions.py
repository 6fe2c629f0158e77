"""Which protocol version to write to each peer, and which release each peer runs.

Owned by the node runtime (one table per node, handed to its transport): the transport asks
``send_version(peer)`` before encoding a message to a peer and reports every message it
decoded and accepted with ``heard(peer, advert)``. The rule (see ``keyval.peer.codec``):

- a peer not heard from yet is written ``MIN_PROTOCOL_VERSION``, which every release of
  this one's compatibility window decodes;
- a peer that advertised ``max_protocol`` is written ``min(PROTOCOL_VERSION, max_protocol)``;
- a plain version-1 message (no advert: a 0.1.0 node) sets the peer back to protocol 1 with
  an unknown release, so a node rolled back to 0.1.0 is written version 1 again as soon as
  it speaks;
- a transport that sees a peer restart (tcp: a connection to it after the first) may
  ``forget`` it, so that it is written version 1 again before it speaks.

Bounded: peers are whoever sends authenticated traffic of this cluster, but without a
cluster secret anyone can claim any id, so only the most recently heard ``limit`` are kept.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

from keyval.peer.codec import MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, Advert

#: How many peers the table remembers (far above any real cluster's size).
DEFAULT_LIMIT = 256


class PeerVersion(NamedTuple):
    #: the protocol version this node writes to the peer
    protocol: int
    #: the peer's KeyVal release, None when it did not say (0.1.0 does not)
    version: str | None


class PeerVersions:
    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self._limit = limit
        self._peers: OrderedDict[str, PeerVersion] = OrderedDict()

    def send_version(self, peer: str) -> int:
        known = self._peers.get(peer)
        return MIN_PROTOCOL_VERSION if known is None else known.protocol

    def heard(self, peer: str, advert: Advert | None) -> None:
        """Record what a message just decoded from ``peer`` said of its sender."""
        if advert is None:
            entry = PeerVersion(1, None)
        else:
            entry = PeerVersion(max(MIN_PROTOCOL_VERSION, min(PROTOCOL_VERSION, advert.max_protocol)),
                                advert.version)
        self._peers[peer] = entry
        self._peers.move_to_end(peer)
        while len(self._peers) > self._limit:
            self._peers.popitem(last=False)

    def forget(self, peer: str) -> None:
        """The peer may have restarted (a new connection to it): written the oldest version
        again until it speaks, so that one rolled back to 0.1.0 reads us at once."""
        self._peers.pop(peer, None)

    def get(self, peer: str) -> PeerVersion | None:
        return self._peers.get(peer)

    def as_json(self) -> dict[str, dict[str, object]]:
        """``{peer: {"version": str | None, "protocol": int}}`` for every peer heard from."""
        return {peer: {"version": v.version, "protocol": v.protocol} for peer, v in sorted(self._peers.items())}
