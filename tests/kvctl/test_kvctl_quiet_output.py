"""Without a terminal, backup/restore print no progress bar (not even its bare label); a
member that is not behind shows `stalled_for: null`."""
from __future__ import annotations

import json
import time

from kvctl import backup
from kvctl_harness import ok


def test_no_progress_bar_without_a_terminal(monkeypatch, capsys):
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    with backup._progress(backup.PROGRESS_FROM * 4, "backup") as bar:
        assert bar is None
    assert capsys.readouterr().err == ""


def test_caught_up_followers_show_stalled_for_null(new_cluster):
    c = new_cluster(3)
    ok(c.kvctl("put", "k", "v"))
    time.sleep(1.5)
    members = json.loads(ok(c.kvctl("cluster", "members", "--json")).stdout)
    time.sleep(1.5)
    members = json.loads(ok(c.kvctl("cluster", "members", "--json")).stdout)
    assert all(m["stalled_for"] is None for m in members if m["lag"] == 0), members
