"""A cluster dir reached through a symlink (./.keyval -> elsewhere): kvctl still recognises
its running nodes, and no command (least of all a read-only one) deletes their pid files."""
from __future__ import annotations

from kvctl_harness import Cluster, free_base_port, ok, take_down


def test_a_symlinked_cluster_dir_keeps_its_nodes_and_pid_files(tmp_path):
    real = tmp_path / "real-cluster-dir"
    real.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    (work / ".keyval").symlink_to(real)
    c = Cluster(work, free_base_port(), 3)
    try:
        c.up()
        pid_files = sorted(real.glob("node*/keyval.pid"))
        assert len(pid_files) == 3
        ok(c.kvctl("put", "k", "v"))
        assert ok(c.kvctl("get", "k")).stdout.strip() == "v"
        assert sorted(real.glob("node*/keyval.pid")) == pid_files, "a read-only command removed pid files"
        assert all(r["running"] for r in c.status()), c.status()
        # Through the real path too.
        status = ok(c.kvctl("local", "status", "--dir", str(real))).stdout
        assert status.count("running") == 3, status
    finally:
        take_down(c)
    assert not list(real.glob("node*/keyval.pid"))
