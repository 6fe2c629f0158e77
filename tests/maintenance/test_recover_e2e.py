"""keyval recover --force-new-cluster brings back a cluster that lost two of its three nodes."""
import shutil
import subprocess
import sys


def keyval(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "keyval.cli", *args], cwd=cwd, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)


def test_the_survivor_becomes_a_one_node_cluster_with_all_the_data(new_cluster):
    c = new_cluster()
    with c.client() as client:
        for n in range(100):
            client.put(f"k{n:03d}", f"v{n}")
    c.settle()
    expected = c.contents(1)
    assert len(expected) == 100

    # node2 and node3 are lost for good: stopped, their disks gone.
    for lost in ("node2", "node3"):
        assert c.run("local", "stop", lost).returncode == 0
        shutil.rmtree(c.cwd / ".keyval" / lost / "data")
    no_quorum = c.run("put", "x", "y", "--timeout", "3")
    assert no_quorum.returncode == 3

    data_dir = str(c.cwd / ".keyval" / "node1" / "data")
    busy = keyval("recover", "--data-dir", data_dir, "--force-new-cluster", cwd=c.cwd)
    assert busy.returncode == 1 and "stop that node first" in busy.stderr
    assert c.run("local", "stop", "node1").returncode == 0
    recovered = keyval("recover", "--data-dir", data_dir, "--force-new-cluster", cwd=c.cwd)
    assert recovered.returncode == 0, recovered.stderr
    assert "recovered node1: voters were node1, node2, node3" in recovered.stdout
    assert "now node1 alone is the voter" in recovered.stdout

    assert c.run("local", "start", "node1").returncode == 0
    c.wait_until(lambda: c.node_status(1)["role"] == "leader", "node1 elects itself")
    status = c.node_status(1)
    assert status["voters"] == ["node1"] and status["learners"] == []
    # Nothing lost. The write that timed out may be there too: if node1 led when it came, it
    # held the entry, uncommitted, and recovery commits what the survivor holds.
    held = c.contents(1)
    assert held in (expected, {**expected, b"x": b"y"})
    written = c.run("put", "after", "recovery")
    assert written.returncode == 0, written.stderr
    assert c.run("get", "after").stdout == "recovery\n"
    assert c.run("get", "k099").stdout == "v99\n"

    # A lost node comes back with an empty data dir and is added as a learner: it catches up.
    assert c.run("local", "start", "node2").returncode == 0
    added = c.run("cluster", "add", "node2", f"127.0.0.1:{c.base_port + 2}")
    assert added.returncode == 0, added.stderr
    c.wait_until(lambda: c.contents(2) == {**held, b"after": b"recovery"}, "node2 caught up")
