"""kvctl snapshot create|list and kvctl compact on a real cluster with data."""
import json

NODES = ["node1", "node2", "node3"]


def test_snapshot_create_and_list_on_every_node(new_cluster):
    c = new_cluster()
    with c.client() as client:
        for n in range(50):
            client.put(f"k{n:03d}", f"v{n}")
    c.settle()
    leader = c.leader()
    assert c.json("snapshot", "list") == []
    none_yet = c.run("snapshot", "list")
    assert none_yet.returncode == 0 and f"snapshots on {leader} (leader)" in none_yet.stdout
    assert "none yet" in none_yet.stdout

    created = c.json("snapshot", "create")
    assert [a["node"] for a in created][0] == leader and sorted(a["node"] for a in created) == NODES
    assert all(a["taken"] and a["index"] >= 50 and a["size"] > 0 and a["keys"] == 50 for a in created)

    listed = c.json("snapshot", "list")
    assert len(listed) == 1 and {"index", "term", "size", "created"} <= set(listed[0])
    mine = next(a for a in created if a["node"] == leader)
    assert (listed[0]["index"], listed[0]["term"], listed[0]["node"]) == (mine["index"], mine["term"], leader)
    follower = next(n for n in NODES if n != leader)
    theirs = c.json("snapshot", "list", "--node", follower)
    assert [s["node"] for s in theirs] == [follower]
    text = c.run("snapshot", "list", "--node", follower)
    assert text.returncode == 0 and f"snapshots on {follower} (follower)" in text.stdout
    assert text.stdout.splitlines()[1].split() == ["INDEX", "TERM", "SIZE", "CREATED"]
    unknown = c.run("snapshot", "list", "--node", "node9")
    assert unknown.returncode == 1 and "node9 is not a member" in unknown.stderr

    again = c.run("snapshot", "create")  # nothing new applied on some nodes: said so, not an error
    assert again.returncode == 0 and all(n in again.stdout for n in NODES)


def test_compact_moves_the_first_index_and_a_node_that_was_down_catches_up_by_snapshot(new_cluster):
    c = new_cluster()
    leader = c.leader()
    down = next(n for n in NODES if n != leader)
    with c.client() as client:
        for n in range(30):
            client.put(f"early{n:03d}", "x")
    assert c.run("local", "stop", down).returncode == 0
    with c.client(*[int(n[-1]) for n in NODES if n != down]) as client:
        for n in range(100):
            client.put(f"late{n:03d}", f"v{n}")

    # Every member is asked; the one that is down is named and the command exits 1.
    partial = c.run("compact", "--json")
    assert partial.returncode == 1
    error = json.loads(partial.stdout)["error"]
    assert error["code"] == "partial" and f"{down} did not answer" in error["message"]
    answered = {a["node"]: a for a in error["nodes"] if "error" not in a}
    assert sorted(answered) == sorted(n for n in NODES if n != down)
    for a in answered.values():
        assert a["first_index_before"] == 1 and a["first_index_after"] == a["snapshot_index"] + 1 > 130
    text = c.run("compact")
    assert text.returncode == 1 and f"{down} did not answer" in text.stderr
    assert f"{leader} (leader)" in text.stdout and "first index" in text.stdout

    # The returning node's log ends long before the leader's first index: it gets a snapshot.
    assert c.run("local", "start", down).returncode == 0
    n = int(down[-1])
    c.wait_until(lambda: len(c.contents(n)) == 130, f"{down} caught up")
    assert c.contents(n) == c.contents(int(leader[-1]))
    log = (c.cwd / ".keyval" / down / "keyval.log").read_text()
    assert "restored snapshot at index" in log

    with c.client() as client:
        for n in range(5):
            client.put(f"last{n}", "x")
    c.settle()
    everyone = c.json("compact")
    assert sorted(a["node"] for a in everyone) == NODES
    assert all(a["first_index_after"] == a["snapshot_index"] + 1 > a["first_index_before"] for a in everyone)
    assert len(c.json("snapshot", "list")) == 2  # the segment backend keeps the newest two
