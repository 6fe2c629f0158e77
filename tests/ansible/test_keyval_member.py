"""keyval_member run through ansible against a real cluster: add, promote, remove, re-run.

The tests share one cluster and run in file order: node4 is added and removed, node5 waits to
catch up and is promoted, node6 stays a learner until asked to become a voter."""
from __future__ import annotations

import threading
import time

from ansible_harness import KVCTL, module, playbook, recap, write_play
from kvctl_harness import ok

import json


def members(cluster) -> dict[str, dict]:
    return {m["id"]: m for m in json.loads(ok(cluster.kvctl("cluster", "members", "--json")).stdout)}


def member(cluster, node: str, state: str, workdir, **kw):
    n = int(node.removeprefix("node"))
    args = {"endpoints": [cluster.endpoint(i) for i in (1, 2, 3)], "id": node,
            "address": f"127.0.0.1:{cluster.base_port + n}", "state": state}
    args.update(kw.pop("args", {}))
    return module("keyval_member", args, workdir, **kw)


def test_present_check_mode_changes_nothing_and_says_what_it_would_do(cluster, workdir):
    ok(cluster.kvctl("local", "start", "node4"))
    run = member(cluster, "node4", "present", workdir, check=True, diff=True)
    assert run.status == "CHANGED", run.stdout
    assert run.result["msg"] == f"would run: cluster add node4 127.0.0.1:{cluster.base_port + 4}"
    assert f'+        "node4": "127.0.0.1:{cluster.base_port + 4}"' in run.stdout  # --diff: learners gain node4
    assert "node4" not in members(cluster)


def test_present_adds_then_reports_no_change(cluster, workdir):
    run = member(cluster, "node4", "present", workdir, diff=True)
    assert run.status == "CHANGED" and run.result["msg"].startswith("added node4"), run.stdout
    assert "node4" in members(cluster)
    again = member(cluster, "node4", "present", workdir)
    assert again.status == "SUCCESS" and not again.changed, again.stdout
    assert again.result["msg"] in ("node4 is already a learner", "node4 is already a voter")


def test_absent_removes_then_reports_no_change(cluster, workdir):
    check = member(cluster, "node4", "absent", workdir, check=True)
    assert check.changed and check.result["msg"] == "would run: cluster remove node4", check.stdout
    assert "node4" in members(cluster)
    run = member(cluster, "node4", "absent", workdir, diff=True)
    assert run.status == "CHANGED" and run.result["msg"].startswith("removed node4"), run.stdout
    assert f'-        "node4": "127.0.0.1:{cluster.base_port + 4}"' in run.stdout
    assert "node4" not in members(cluster)
    again = member(cluster, "node4", "absent", workdir)
    assert again.status == "SUCCESS" and not again.changed and again.result["msg"] == "node4 is not a member"


def test_voter_waits_for_catch_up_then_promotes(cluster, workdir):
    # node5 is not running yet: it is added but cannot catch up, so the task times out, saying so.
    run = member(cluster, "node5", "voter", workdir, args={"timeout": 3})
    assert run.failed and run.changed, run.stdout
    assert run.result["msg"].startswith("node5 has not caught up within 3s"), run.result["msg"]
    assert members(cluster)["node5"]["type"] == "Learner"
    # Now the task waits: node5 starts while it runs, catches up and becomes a voter.
    waiting = threading.Thread(target=lambda: runs.append(member(cluster, "node5", "voter", workdir)))
    runs: list = []
    waiting.start()
    time.sleep(3)
    assert waiting.is_alive() and members(cluster)["node5"]["type"] == "Learner"
    ok(cluster.kvctl("local", "start", "node5"))
    waiting.join(timeout=90)
    run = runs[0]
    assert run.status == "CHANGED" and run.result["member"]["type"] == "Voter", run.stdout
    assert members(cluster)["node5"]["type"] == "Voter"
    again = member(cluster, "node5", "voter", workdir)
    assert not again.changed and again.result["msg"] == "node5 is already a voter", again.stdout


def test_learner_is_not_promoted_until_asked(cluster, workdir):
    ok(cluster.kvctl("local", "start", "node6"))
    run = member(cluster, "node6", "learner", workdir, args={"wait_caught_up": True})
    assert run.status == "CHANGED" and run.result["member"]["caught_up"], run.stdout
    assert run.result["actions"] == [f"cluster add --no-auto-promote node6 127.0.0.1:{cluster.base_port + 6}"]
    time.sleep(1.5)  # caught up, yet auto-promotion leaves it alone
    assert members(cluster)["node6"]["type"] == "Learner"
    assert not member(cluster, "node6", "present", workdir).changed  # present accepts a learner
    check = member(cluster, "node6", "voter", workdir, check=True)
    assert check.changed and check.result["actions"] == ["cluster promote node6"], check.stdout
    assert members(cluster)["node6"]["type"] == "Learner"
    run = member(cluster, "node6", "voter", workdir)
    assert run.status == "CHANGED" and "promoted node6 to voter" in run.result["msg"], run.stdout
    assert members(cluster)["node6"]["type"] == "Voter"


def test_refusals_change_nothing(cluster, workdir):
    """Bad input, checked in one playbook (each task must fail, change nothing and say why),
    run once for real and once with --check."""
    before = members(cluster)
    common = {"kvctl_path": KVCTL, "endpoints": [cluster.endpoint(1)]}
    cases = [
        ({"id": "bad id!", "address": "127.0.0.1:1"},
         "id: 'bad id!' is not a valid node id (letters, digits, '.', '_', '-')"),
        ({"id": "node7", "address": "nowhere"}, "address: expected HOST:PORT, got 'nowhere'"),
        ({"id": "node7", "address": "127.0.0.1:99999"}, "address: expected HOST:PORT, got '127.0.0.1:99999'"),
        ({"id": "node7"}, "address is required to add node7 (it is not a member)"),
        ({"id": "node1", "address": "127.0.0.1:1"},
         "node1 is already a member at 127.0.0.1:%d, not 127.0.0.1:1; remove it first (state: absent) to add it"
         " at another address" % (cluster.base_port + 1)),
        ({"id": "node1", "state": "learner"},
         "node1 is a voter and KeyVal cannot demote a voter; remove it and add it again as a learner"),
        ({"id": "node7", "state": "bogus"}, "value of state must be one of: present, absent, voter, learner, got: bogus"),
    ]
    tasks = []
    for n, (args, message) in enumerate(cases):
        tasks.append({"name": f"case {n}", "keyval.cluster.keyval_member": {**common, **args},
                      "register": f"r{n}", "ignore_errors": True})
        tasks.append({"name": f"check case {n}", "ansible.builtin.assert": {
            "that": [f"r{n} is failed", f"r{n} is not changed", f"r{n}.msg == {message!r}"]}})
    play = write_play(workdir, tasks)
    for options in ((), ("--check",)):
        proc = playbook(play, workdir, *options)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert recap(proc.stdout) | {"ok": 0} == {"ok": 0, "changed": 0, "unreachable": 0, "failed": 0,
                                                   "skipped": 0, "rescued": 0, "ignored": len(cases)}
    assert members(cluster).keys() == before.keys()
