"""keyval_leader through ansible-playbook and ad-hoc on a real cluster; and every module
pointed at no reachable cluster fails with kvctl's message and exit code 3."""
from __future__ import annotations

import json

from ansible_harness import KVCTL, module, playbook, recap, write_play
from kvctl_harness import free_base_port, ok


def leader(cluster) -> str:
    return json.loads(ok(cluster.kvctl("cluster", "leader", "--json")).stdout)["id"]


def test_transfer_to_a_node_check_then_real_then_unchanged(cluster, workdir):
    first = leader(cluster)
    target = next(n for n in ("node1", "node2", "node3") if n != first)
    play = write_play(workdir, [
        {"name": "state", "keyval.cluster.keyval_info": {"kvctl_path": KVCTL, "endpoints": [cluster.endpoint(1)]},
         "register": "before"},
        {"name": "leader", "keyval.cluster.keyval_leader": {"kvctl_path": KVCTL, "endpoints": [cluster.endpoint(1)],
                                                            "to": target}, "register": "moved"},
        {"name": "it says where", "ansible.builtin.assert": {"that": [f"moved.leader == {target!r}",
                                                                   "moved.previous_leader == before.leader"]}},
    ])
    check = playbook(play, workdir, "--check", "--diff")
    assert check.returncode == 0 and recap(check.stdout)["changed"] == 1, check.stdout
    assert f'+    "leader": "{target}"' in check.stdout and leader(cluster) == first
    real = playbook(play, workdir)
    assert real.returncode == 0 and recap(real.stdout)["changed"] == 1, real.stdout
    assert leader(cluster) == target
    again = playbook(play, workdir)
    assert again.returncode == 0 and recap(again.stdout)["changed"] == 0, again.stdout


def test_transfer_away_from_a_node(cluster, workdir):
    first = leader(cluster)
    args = {"endpoints": [cluster.endpoint(n) for n in (1, 2, 3)], "away_from": first}
    check = module("keyval_leader", args, workdir, check=True)
    assert check.changed and check.result["msg"] == f"would transfer leadership from {first} to the most caught-up healthy voter"
    assert leader(cluster) == first
    run = module("keyval_leader", args, workdir)
    assert run.status == "CHANGED" and run.result["previous_leader"] == first, run.stdout
    assert leader(cluster) == run.result["leader"] != first
    again = module("keyval_leader", args, workdir)
    assert again.status == "SUCCESS" and not again.changed and again.result["msg"] == f"{run.result['leader']} already leads"


def test_transfer_to_a_non_voter_is_refused(cluster, workdir):
    run = module("keyval_leader", {"endpoints": [cluster.endpoint(1)], "to": "node9"}, workdir)
    assert run.failed and not run.changed and run.result["msg"].startswith("node9 is not a voter (voters: node1, node2, node3")


def test_no_reachable_cluster_fails_with_kvctl_message_and_exit_3(workdir):
    nowhere = f"127.0.0.1:{free_base_port()}"
    common = {"kvctl_path": KVCTL, "endpoints": [nowhere], "timeout": 2}
    calls = [("keyval_info", {}), ("keyval_member", {"id": "node4", "address": "127.0.0.1:7004"}),
             ("keyval_member", {"id": "node4", "state": "absent"}), ("keyval_leader", {"to": "node1"})]
    tasks = []
    for n, (name, args) in enumerate(calls):
        tasks.append({"name": name, f"keyval.cluster.{name}": {**common, **args}, "register": f"r{n}", "ignore_errors": True})
        tasks.append({"name": f"{name} failed as kvctl did", "ansible.builtin.assert": {"that": [
            f"r{n} is failed", f"r{n} is not changed", f"r{n}.rc == 3", f"r{n}.error_code == 'unreachable'",
            f"r{n}.msg.startswith('no KeyVal node answered at {nowhere} within ')"]}})
    proc = playbook(write_play(workdir, tasks), workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert recap(proc.stdout)["ignored"] == len(calls)
