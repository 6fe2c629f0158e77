"""What a transport learns from traffic: which cluster it is in, and where its peers listen.

A node started empty (no ``--bootstrap``) knows neither until its first configuration
arrives, and that configuration comes from a leader it must answer first. So while the node
has not set a cluster id, a transport adopts the one of the first message addressed to it,
and it always remembers where each peer that wrote to it listens; the node then sends with
``address=None`` to a peer its configuration does not name yet (``keyval/plugin_api/transport.py``).
"""
from __future__ import annotations

import logging
from collections import OrderedDict

#: Peers whose listen address is remembered; the least recently heard from are forgotten.
MAX_LEARNED_PEERS = 4096


class ClusterIdentity:
    """The cluster id a transport stamps on what it sends and filters what it receives by.

    The node's ``set_cluster_id`` is authoritative. Until it is called, every cluster is
    accepted (as an uninitialised node always did) and the id of the first message addressed
    to this node is adopted, only to stamp replies with it: filtering on an id nobody
    vouched for could lock the node out of the cluster that is actually adding it.
    """

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self.label = "transport"  # set again once the node id is known
        self.configured: str | None = None
        self.adopted: str | None = None

    @property
    def cluster_id(self) -> str | None:
        return self.configured if self.configured is not None else self.adopted

    def stamp(self) -> str:
        return self.cluster_id or ""

    def configure(self, cluster_id: str) -> None:
        if self.configured is None and self.adopted is not None and self.adopted != cluster_id:
            self._log.warning("%s: the node set cluster id %s, replacing %s adopted from its traffic",
                              self.label, cluster_id, self.adopted)
        self.configured = cluster_id

    def accepts(self, cluster_id: str) -> bool:
        return self.configured is None or cluster_id == self.configured

    def observe(self, cluster_id: str, sender: str) -> None:
        """An accepted message addressed to this node, of ``cluster_id``, came from ``sender``."""
        if self.configured is None and self.adopted is None and cluster_id:
            self.adopted = cluster_id
            self._log.info("%s: adopted cluster id %s from the traffic of %s (no cluster id was set)",
                           self.label, cluster_id, sender)


class PeerAddresses:
    """Where peers listen, as learned from their own traffic: bounded, most recent wins."""

    def __init__(self, log: logging.Logger, limit: int = MAX_LEARNED_PEERS) -> None:
        self._log = log
        self.label = "transport"
        self._limit = limit
        self._addresses: OrderedDict[str, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._addresses)

    def get(self, peer_id: str) -> str | None:
        return self._addresses.get(peer_id)

    def learn(self, peer_id: str, address: str) -> None:
        previous = self._addresses.get(peer_id)
        self._addresses[peer_id] = address
        self._addresses.move_to_end(peer_id)
        if len(self._addresses) > self._limit:
            self._addresses.popitem(last=False)
        if previous != address:
            # Debug only: without a secret anyone may claim any id, and must not flood the log.
            self._log.debug("%s: peer %r listens on %s (learned from its traffic)", self.label, peer_id, address)
