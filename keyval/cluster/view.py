"""The leader's view of the cluster, as the interface's JSON and as a MembershipManager.

Everything here reads the node; nothing changes it. How long a member's replication has not
moved, and the appends it rejected, are the leader's core's counts (``PeerStatus``), in
ticks, turned into seconds here.
"""
from __future__ import annotations

import json
from typing import Any

from keyval import __version__
from keyval.cluster.membership import LEARNER, VOTER, Member, MembershipManager
from keyval.peer.codec import PROTOCOL_VERSION
from keyval.raft import Membership, Role

CLIENT_ADDRESS_META = "client_address/"  # keyval.clientport.service's key, repeated to keep this import-light
#: replicated per-learner settings given to `kvctl cluster add` (JSON; "" = none)
LEARNER_SETTINGS_META = "learner_settings/"


def learner_settings(node, member: str) -> dict[str, Any]:
    """What `kvctl cluster add` set for ``member``, as ``node``'s replicated records hold it."""
    try:
        doc = json.loads(node.meta(LEARNER_SETTINGS_META + member) or "{}")
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def client_addresses(node) -> dict[str, str]:
    """Each member's client address, as ``node``'s replicated records hold them."""
    return {k[len(CLIENT_ADDRESS_META):]: v for k, v in node.meta_items() if k.startswith(CLIENT_ADDRESS_META)}


class LeaderView:
    """One consistent reading of the leader's state (call only on the leader)."""

    def __init__(self, node, config) -> None:
        status = node.status()
        if status.role is not Role.LEADER:
            raise ValueError("the leader's view exists only on the leader")
        self.status = status
        self.cluster_id = node.cluster_id
        self.clients = client_addresses(node)
        tick = node.timing.tick_interval
        membership = status.membership
        peers = {p.id: p for p in status.peers}
        self.peers = peers
        # The release each member runs, as it said in its own messages: a mixed cluster (a
        # rolling upgrade) shows here. None for one that did not say (0.1.0) or was not heard.
        self.versions: dict[str, tuple[str | None, int | None]] = {status.id: (__version__, PROTOCOL_VERSION)}
        for node_id in membership.members - {status.id}:
            heard = node.peer_versions.get(node_id)
            self.versions[node_id] = (None, None) if heard is None else (heard.version, heard.protocol)
        members = []
        for node_id in sorted(membership.members):
            peer = peers.get(node_id)
            settings = learner_settings(node, node_id)
            is_leader = node_id == status.id
            ticks = peer.ticks_since_contact if peer is not None else None
            behind = peer is not None and not is_leader and peer.match < status.last_index
            members.append(Member(
                id=node_id,
                type=VOTER if node_id in membership.voters else LEARNER,
                match_index=status.last_index if is_leader else (peer.match if peer else 0),
                last_contact=0.0 if is_leader else (None if ticks is None else round(ticks * tick, 1)),
                is_leader=is_leader,
                peer_address=membership.address_of(node_id) or "",
                bytes_replicated=peer.bytes_sent if peer and not is_leader else 0,
                catchup_threshold=settings.get("catchup_threshold"),
                auto_promote=settings.get("auto_promote"),
                stalled_for=round(peer.stalled_ticks * tick, 1) if behind else None,
                append_rejections=peer.rejections if peer and not is_leader else 0,
                last_rejection=(None if peer is None or is_leader or peer.ticks_since_rejection is None
                                else round(peer.ticks_since_rejection * tick, 1)),
                recovering_to=peer.lost_to if peer and not is_leader else 0,
            ))
        self.manager = MembershipManager(
            members, config.catchup_threshold, last_index=status.last_index,
            auto_promote=config.auto_promote, min_voters=config.min_voters,
            contact_timeout=2 * node.timing.election_ticks * tick,
        )

    def member_json(self, node_id: str) -> dict[str, Any]:
        mgr = self.manager
        m = mgr.members[node_id]
        peer = self.peers.get(node_id)
        return {
            "id": m.id,
            "peer_address": m.peer_address,
            "client_address": self.clients.get(m.id),
            "type": m.type,
            "is_leader": m.is_leader,
            "healthy": mgr.healthy(m.id),
            "match_index": m.match_index,
            "lag": mgr.lag(m.id),
            "last_contact": None if m.is_leader else m.last_contact,
            "bytes_replicated": m.bytes_replicated,
            "caught_up": mgr.caught_up(m.id),
            # beyond the interface's minimum:
            # what applies to it; "catchup_threshold" only when set for this learner (`add
            # --catchup-threshold`), so a MembershipManager built from these objects applies
            # its own threshold to every other member
            "effective_catchup_threshold": mgr.threshold_for(m.id),
            **({} if m.catchup_threshold is None else {"catchup_threshold": m.catchup_threshold}),
            "auto_promote": mgr.auto_promote if m.auto_promote is None else m.auto_promote,
            "replication_state": "leader" if m.is_leader else (peer.state if peer else None),
            "stalled_for": m.stalled_for,
            "append_rejections": m.append_rejections,
            "last_rejection": m.last_rejection,
            "recovering_to": m.recovering_to,
            "version": self.versions[m.id][0],
            # the protocol version the leader writes to it (its own for the leader)
            "protocol": self.versions[m.id][1],
        }

    def cluster_json(self, change_in_progress: str | None) -> dict[str, Any]:
        mgr, status = self.manager, self.status
        return {
            "cluster_id": self.cluster_id,
            "leader": status.id,
            "term": status.term,
            "commit_index": status.commit,
            "last_index": status.last_index,
            "voters": mgr.voters,
            "learners": mgr.learners,
            "quorum": mgr.quorum,
            "catchup_threshold": mgr.catchup_threshold,
            "auto_promote": mgr.auto_promote,
            "min_voters": mgr.min_voters,
            "change_in_progress": change_in_progress,
            "members": [self.member_json(n) for n in sorted(mgr.members)],
        }


def describe_change(before: Membership, after: Membership) -> str:
    """What turned ``before`` into ``after``, in words ("adding node4 ... as a learner")."""
    parts = []
    for node in sorted(after.members - before.members):
        kind = "voter" if node in after.voters else "learner"
        parts.append(f"adding {node} ({after.address_of(node) or 'no address'}) as a {kind}")
    for node in sorted(after.voters & before.learners):
        parts.append(f"promoting {node} to voter")
    for node in sorted(before.voters & after.learners):
        parts.append(f"demoting {node} to learner")
    for node in sorted(before.members - after.members):
        parts.append(f"removing {node}")
    return ", ".join(parts) or "a configuration change"
