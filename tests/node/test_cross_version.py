"""0.2.0 and the previous release, 0.1.0 (git tag v0.1.0), in one cluster of real processes.

The old node runs the 0.1.0 tree itself, extracted with `git archive v0.1.0` and run from
source. A 0.2.0 node writes protocol 1 (with its advert trailing, which 0.1.0 ignores) to a
peer until that peer advertises protocol 2, and protocol 2 after (keyval.peer.versions).
Checked over tcp and udp: writes through every node are read back from every node; the old
node is upgraded to 0.2.0 and a 0.2.0 node rolled back to 0.1.0, and writes keep working;
status's `peer_versions` and `kvctl cluster members --json` say who runs what.
"""
from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from keyval import __version__
from keyval.client import Client
from keyval.errors import KeyvalError

from .procs import LocalCluster

# 0.1.0 is tag v0.1.0; named by commit so that a clone without tags still has it
OLD_TAG = "2c6b10048cb546914148505083f6b1939c4f4650"
REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 60.0  # generous: the machine is shared, and a rolled-back node needs an election timeout


@pytest.fixture(scope="module")
def old_tree(tmp_path_factory) -> Path:
    """The 0.1.0 source tree. Missing git or tag fails the test: the check must not vanish."""
    git = shutil.which("git")
    if git is None:
        pytest.fail(f"the cross-version test needs `git` to extract {OLD_TAG}; install git")
    found = subprocess.run([git, "-C", str(REPO), "rev-parse", "--verify", "--quiet", f"{OLD_TAG}^{{commit}}"],
                           capture_output=True, text=True)
    if found.returncode != 0:
        pytest.fail(f"commit {OLD_TAG} (the previous release, tag v0.1.0) is not in {REPO}: fetch it "
                    f"(`git fetch --unshallow`): the cross-version test runs that release")
    archive = subprocess.run([git, "-C", str(REPO), "archive", "--format=tar", OLD_TAG], capture_output=True)
    assert archive.returncode == 0, archive.stderr.decode()
    tree = tmp_path_factory.mktemp("keyval-0.1.0")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(tree, filter="data")
    assert '__version__ = "0.1.0"' in (tree / "keyval" / "__init__.py").read_text()
    # The entry points installed here load keyval_plugins.*; in 0.1.0 the built-ins were the
    # top-level plugins/. Without this link the old node would run this tree's built-ins.
    (tree / "keyval_plugins").symlink_to("plugins", target_is_directory=True)
    return tree


def _until(what: str, check, cluster: LocalCluster, timeout: float = TIMEOUT):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (KeyvalError, OSError, AssertionError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.3)
    raise AssertionError(f"{what}: not within {timeout}s (last: {last!r})\n{cluster.logs()}")


def _peer_versions(cluster: LocalCluster, node_id: str) -> dict:
    """What ``node_id`` knows of its peers ({} if it does not answer; a tcp reconnect makes it
    forget a peer until that peer speaks again)."""
    return (cluster.status(node_id) or {}).get("peer_versions") or {}


def _write_through_each(cluster: LocalCluster, prefix: str) -> dict[str, str]:
    """One write through each node (a follower redirects to the leader); key -> value."""
    written = {}
    for node_id in cluster.initial:
        key, value = f"{prefix}/{node_id}", f"{prefix} via {node_id}"

        def put(node_id=node_id, key=key, value=value):
            with Client([cluster.nodes[node_id].client_addr], timeout=10) as client:
                return client.put(key, value) > 0
        _until(f"write {key} through {node_id}", put, cluster)
        written[key] = value
    return written


def _readable_everywhere(cluster: LocalCluster, written: dict[str, str]) -> None:
    for node_id in cluster.initial:
        def read(node_id=node_id):
            with Client([cluster.nodes[node_id].client_addr], timeout=5) as client:
                # serializable: this node's own state, so every node is shown to hold them
                return all(client.get(k, serializable=True) == v.encode() for k, v in written.items())
        _until(f"every write readable from {node_id}", read, cluster)


def _kvctl(cluster: LocalCluster, *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "kvctl.cli", "--endpoints", ",".join(cluster.endpoints()), *args],
                            cwd=cluster.base, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"kvctl {' '.join(args)}: {result.stdout}{result.stderr}"
    return result.stdout


def _kvctl_json(cluster: LocalCluster, *args: str):
    return json.loads(_kvctl(cluster, "--json", *args))


def _members(cluster: LocalCluster) -> dict[str, tuple]:
    return {m["id"]: (m["version"], m["protocol"]) for m in _kvctl_json(cluster, "cluster", "members")}


def _new_leader(cluster: LocalCluster, new: list[str]) -> str:
    """A 0.2.0 node leading (the members view and peer_versions are the leader's)."""
    leader = cluster.wait_for_leader(timeout=TIMEOUT)
    if leader not in new:
        _kvctl_json(cluster, "cluster", "transfer", new[0])
        leader = _until(f"{new[0]} leads", lambda: cluster.wait_for_leader(timeout=5) == new[0] and new[0],
                        cluster)
    return leader


def _restart(cluster: LocalCluster, node_id: str, source: Path | None) -> None:
    node = cluster.nodes[node_id]
    assert node.stop() == 0, f"{node_id} did not stop cleanly:\n{node.log()[-3000:]}"
    node.source = source
    node.start(None, *cluster.extra)  # its data dir holds the cluster: no bootstrap


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_0_1_0_and_0_2_0_in_one_cluster_upgrade_and_rollback(tmp_path, old_tree, transport):
    cluster = LocalCluster(tmp_path, extra=("--transport", transport))
    cluster.nodes["n3"].source = old_tree
    cluster.start()
    try:
        # -- n1, n2 on 0.2.0, n3 on 0.1.0 -------------------------------------------------
        leader = _new_leader(cluster, ["n1", "n2"])
        follower = "n2" if leader == "n1" else "n1"
        written = _write_through_each(cluster, "mixed")
        _readable_everywhere(cluster, written)
        assert "version" not in cluster.status("n3")  # really the old release
        assert (cluster.status(leader) or {}).get("version") == __version__ == "0.2.0"
        _until("the leader writes protocol 2 to the 0.2.0 follower and 1 to the 0.1.0 node",
               lambda: _peer_versions(cluster, leader) == {
                   follower: {"version": "0.2.0", "protocol": 2}, "n3": {"version": None, "protocol": 1}},
               cluster)
        _until("the 0.2.0 follower writes protocol 2 to the leader",
               lambda: _peer_versions(cluster, follower).get(leader) == {"version": "0.2.0", "protocol": 2},
               cluster)
        assert _until("members show each version", lambda: _members(cluster) == {
            "n1": ("0.2.0", 2), "n2": ("0.2.0", 2), "n3": (None, 1)}, cluster)
        table = _kvctl(cluster, "cluster", "members").splitlines()
        assert table[0].split()[-1] == "VERSION"
        assert {line.split()[0]: line.split()[-1] for line in table[1:]} == {"n1": "0.2.0", "n2": "0.2.0", "n3": "-"}
        # each node about itself: 0.1.0 says nothing of its version
        assert {d["id"]: d["version"] for d in _kvctl_json(cluster, "status")} == {
            "n1": "0.2.0", "n2": "0.2.0", "n3": None}

        # -- upgrade: n3 restarted as 0.2.0 ------------------------------------------------
        _restart(cluster, "n3", None)
        _until("n3 reports 0.2.0", lambda: (cluster.status("n3") or {}).get("version") == "0.2.0", cluster)
        written.update(_write_through_each(cluster, "upgraded"))
        _readable_everywhere(cluster, written)
        leader = _new_leader(cluster, ["n1", "n2", "n3"])
        _until("members all on 0.2.0, protocol 2", lambda: set(_members(cluster).values()) == {("0.2.0", 2)},
               cluster)

        # -- rollback: a 0.2.0 follower restarted as 0.1.0 ---------------------------------
        back = next(n for n in ("n1", "n2", "n3") if n != leader)
        _restart(cluster, back, old_tree)
        # The leader's reconnect (tcp) forgets it, or its first message (at the latest its
        # election timeout's pre-vote: udp) says it speaks protocol 1 only.
        _until(f"the leader writes protocol 1 to {back}, rolled back",
               lambda: _peer_versions(cluster, leader).get(back) == {"version": None, "protocol": 1}, cluster)
        written.update(_write_through_each(cluster, "rolled-back"))
        _readable_everywhere(cluster, written)
        assert "version" not in cluster.status(back)
        leader = _new_leader(cluster, [n for n in ("n1", "n2", "n3") if n != back])
        expected = {n: ("0.2.0", 2) for n in ("n1", "n2", "n3")}
        expected[back] = (None, 1)
        _until("members show the rolled-back node as unknown", lambda: _members(cluster) == expected, cluster)
    finally:
        cluster.stop_all()
