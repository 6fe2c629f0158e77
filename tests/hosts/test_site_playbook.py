"""ansible/site.yml on real test hosts: grow a running cluster by one host, and refuse bad input.

Four booted hosts kvs1..kvs4; the inventory first lists three. site.yml bootstraps them, then
kvs4 is added to the inventory: `--check --diff` says it would join it and changes nothing,
the real run joins it as a learner that becomes a voter, and a third run changes nothing.
"""

import fcntl
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import STATE_ROOT, require_hosts
import testhosts

pytestmark = pytest.mark.hosts

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
NAMES = ["kvs1", "kvs2", "kvs3", "kvs4"]


@pytest.fixture(scope="module")
def four_hosts():
    require_hosts()
    STATE_ROOT.mkdir(parents=True, exist_ok=True)
    with open(STATE_ROOT / "kvs.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        hs = testhosts.HostSet("kvs", "10.77.2.0/24", 4, state_root=STATE_ROOT)
        try:
            hs.create()
            yield hs
        finally:
            hs.destroy()


def inventory(hs, tmp_path, names, **host_vars):
    """hs's inventory with only ``names`` in group keyval (extra vars per host name)."""
    data = yaml.safe_load(hs.inventory.read_text())
    hosts = data["all"]["children"]["keyval"]["hosts"]
    data["all"]["children"]["keyval"]["hosts"] = {n: {**hosts[n], **host_vars.get(n, {})} for n in names}
    path = tmp_path / f"inventory-{len(names)}.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def site(inv, *args):
    """Run site.yml; (returncode, output, {host: recap counters})."""
    ansible = Path(sys.executable).parent / "ansible-playbook"
    result = subprocess.run([str(ansible), "-i", str(inv), "site.yml", *args], cwd=ANSIBLE_DIR,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900,
                            env={**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"})
    recap = {m[1]: {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m[2])}
             for m in re.finditer(r"^(\S+)\s+: (ok=.*)$", result.stdout, re.M)}
    return result.returncode, result.stdout + result.stderr, recap


def members(hs, via="kvs1"):
    out = hs.ssh(via, "kvctl --json --endpoints 10.77.2.11:8001,10.77.2.12:8001 cluster info")
    assert out.returncode == 0, out
    return json.loads(out.stdout)


def test_three_hosts_bootstrap_one_cluster(four_hosts, tmp_path):
    rc, out, recap = site(inventory(four_hosts, tmp_path, NAMES[:3]))
    assert rc == 0, out[-3000:]
    assert sorted(members(four_hosts)["voters"]) == NAMES[:3]
    assert four_hosts.ssh("kvs4", "test -e /opt/keyval").returncode != 0


def test_two_hosts_with_one_node_id_fail_and_change_nothing(four_hosts, tmp_path):
    inv = inventory(four_hosts, tmp_path, NAMES, kvs4={"keyval_node_id": "kvs2"})
    rc, out, recap = site(inv)
    assert rc != 0
    assert "kvs2 and kvs4 have the same node id kvs2" in out
    assert all(r["changed"] == 0 for r in recap.values()), recap
    assert four_hosts.ssh("kvs4", "test -e /opt/keyval").returncode != 0


def test_check_diff_with_a_fourth_host_says_what_it_would_do_and_does_nothing(four_hosts, tmp_path):
    rc, out, recap = site(inventory(four_hosts, tmp_path, NAMES), "--check", "--diff")
    assert rc == 0, out[-3000:]
    assert recap["kvs4"]["changed"] > 0 and all(recap[n]["changed"] == 0 for n in NAMES[:3]), recap
    join = out[out.index("TASK [keyval.cluster.keyval_node : Join each new node"):]
    assert '"kvs4": "10.77.2.14:7001"' in join and "changed: [kvs4 -> kvs1" in join, join[:2000]  # --diff
    assert four_hosts.ssh("kvs4", "test -e /opt/keyval").returncode != 0
    assert sorted(members(four_hosts)["voters"]) == NAMES[:3]


def test_an_unreachable_new_host_fails_the_run_and_the_cluster_stays_as_it_was(four_hosts, tmp_path):
    four_hosts.isolate("kvs4")  # its link to the bridge down: ssh and peer traffic both time out
    try:
        rc, out, recap = site(inventory(four_hosts, tmp_path, NAMES))
    finally:
        four_hosts.heal()
    assert rc != 0 and "UNREACHABLE" in out, out[-3000:]
    assert all(recap[n]["changed"] == 0 for n in NAMES[:3]), recap
    info = members(four_hosts)
    assert sorted(info["voters"]) == NAMES[:3] and info["learners"] == []
    assert four_hosts.ssh("kvs4", "test -e /opt/keyval").returncode != 0


def test_a_fourth_host_joins_as_a_learner_and_becomes_a_voter_then_nothing_changes(four_hosts, tmp_path):
    inv = inventory(four_hosts, tmp_path, NAMES)
    rc, out, recap = site(inv, "-v")
    assert rc == 0, out[-3000:]
    print(out[out.index("PLAY RECAP"):])
    join = out[out.index("TASK [keyval.cluster.keyval_node : Join each new node"):]
    assert "changed: [kvs4 -> kvs1" in join and "added kvs4 (10.77.2.14:7001) as a learner" in join, join[:3000]
    info = members(four_hosts, via="kvs4")
    assert sorted(info["voters"]) == NAMES and info["learners"] == []
    config = four_hosts.ssh("kvs4", "cat /etc/keyval/node.yaml").stdout
    assert "bootstrap:" not in config  # joined, never bootstrapped as a second cluster
    print(four_hosts.ssh("kvs1", "kvctl --endpoints 10.77.2.11:8001 cluster members").stdout)
    rc, out, recap = site(inv)
    assert rc == 0, out[-3000:]
    assert all(r["changed"] == 0 for r in recap.values()), recap
    rc, out, recap = site(inv, "--check")
    assert rc == 0 and all(r["changed"] == 0 for r in recap.values()), recap


def test_a_config_change_restarts_one_node_at_a_time_each_back_healthy_before_the_next(four_hosts, tmp_path):
    inv = inventory(four_hosts, tmp_path, NAMES)
    rc, out, recap = site(inv, "-e", "keyval_log_level=DEBUG")
    assert rc == 0, out[-3000:]
    steps = re.findall(r"^RUNNING HANDLER \[keyval\.cluster\.keyval_node : (Wait until the cluster is healthy|Restart KeyVal|"
                       r"Wait until the node is back)[^\]]*?(kvs\d)\]", out, re.M)
    # Per node: cluster healthy, restart, back and caught up; then the next node.
    assert steps == [(step, n) for n in NAMES for step in
                     ("Wait until the cluster is healthy", "Restart KeyVal", "Wait until the node is back")], steps
    for n in NAMES:
        assert "log_level: DEBUG" in four_hosts.ssh(n, "cat /etc/keyval/node.yaml").stdout
    assert sorted(members(four_hosts)["voters"]) == NAMES
    rc, out, recap = site(inv, "-e", "keyval_log_level=DEBUG")
    assert rc == 0 and all(r["changed"] == 0 for r in recap.values()), recap
