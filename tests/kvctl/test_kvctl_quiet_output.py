"""Without a terminal, backup/restore print no progress bar (not even its bare label); a
member that is not behind shows `stalled_for: null`."""
from __future__ import annotations

import json
import time

from keyval.cluster.membership import Member
from keyval.cluster.view import ProgressTracker
from kvctl import backup
from kvctl_harness import ok


def test_no_progress_bar_without_a_terminal(monkeypatch, capsys):
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    with backup._progress(backup.PROGRESS_FROM * 4, "backup") as bar:
        assert bar is None
    assert capsys.readouterr().err == ""


def test_the_tracker_reports_none_for_a_member_not_behind():
    tracker = ProgressTracker()
    up = Member("node2", match_index=50)
    behind = Member("node3", match_index=40)
    assert tracker.update(1, [up, behind], now=0.0, last_index=50) == {"node2": None, "node3": 0.0}
    assert tracker.update(1, [up, behind], now=10.0, last_index=50) == {"node2": None, "node3": 10.0}
    # node2 was idle but caught up: its stall counts from when it was last seen caught up
    # (10 s), not from its last progress (0 s).
    assert tracker.update(1, [up, behind], now=20.0, last_index=60)["node2"] == 10.0


def test_caught_up_followers_show_stalled_for_null(new_cluster):
    c = new_cluster(3)
    ok(c.kvctl("put", "k", "v"))
    time.sleep(1.5)
    members = json.loads(ok(c.kvctl("cluster", "members", "--json")).stdout)
    time.sleep(1.5)
    members = json.loads(ok(c.kvctl("cluster", "members", "--json")).stdout)
    assert all(m["stalled_for"] is None for m in members if m["lag"] == 0), members
