"""How `kvctl cluster member` shows a member whose replication is not moving."""
from __future__ import annotations

from kvctl import cluster_show


def member(**kw) -> dict:
    doc = {"id": "node2", "type": "Voter", "is_leader": False, "peer_address": "127.0.0.1:7002",
           "client_address": "127.0.0.1:8002", "healthy": True, "match_index": 100, "lag": 42,
           "last_contact": 0.1, "bytes_replicated": 2048, "caught_up": True, "effective_catchup_threshold": 100,
           "replication_state": "probe", "stalled_for": None, "append_rejections": 0, "last_rejection": None}
    return {**doc, **kw}


def test_a_stalled_member_that_rejects_appends_shows_both():
    text = cluster_show.member(member(stalled_for=12.3, append_rejections=310, last_rejection=0.1), {"term": 3})
    assert "No Progress For:   12.3s (while behind)" in text
    assert "Appends Rejected:  310 (the last 0.1s ago)" in text


def test_a_moving_member_shows_neither():
    for doc in (member(stalled_for=0.0), member(lag=0), {k: v for k, v in member().items()
                                                          if k not in ("stalled_for", "append_rejections")}):
        text = cluster_show.member(doc, {"term": 3})
        assert "No Progress For" not in text and "Appends Rejected" not in text
