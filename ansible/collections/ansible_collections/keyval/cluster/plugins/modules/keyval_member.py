#!/usr/bin/python
# -*- coding: utf-8 -*-
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: keyval_member
short_description: Add, promote or remove a member of a KeyVal cluster
version_added: 0.1.0
description:
  - Reads the membership with C(kvctl cluster info --json), then runs only the kvctl commands
    needed (C(cluster add), C(cluster promote), C(cluster remove)). Safe to re-run; reports
    changed only when it changed the membership.
  - A new member always joins as a learner first; the node must already run with the
    cluster's secret.
extends_documentation_fragment: keyval.cluster.kvctl
options:
  id:
    description: The member's node id.
    type: str
    required: true
  address:
    description:
      - The member's peer (Raft) address, C(HOST:PORT).
      - Needed to add a node that is not a member. A member at another address is refused
        (remove it first).
    type: str
  state:
    description:
      - V(present) adds the node as a learner if it is missing; the leader's auto-promotion
        may make it a voter later, and either is accepted.
      - V(voter) adds it if needed, waits until it has caught up and promotes it.
      - V(learner) adds it with auto-promotion off (C(--no-auto-promote)). A voter is never
        demoted (KeyVal cannot), the task fails instead.
      - V(absent) removes it (C(kvctl cluster remove)).
    type: str
    choices: [present, absent, voter, learner]
    default: present
  wait_caught_up:
    description:
      - With V(present) or V(learner), wait until the member has caught up with the leader.
      - V(voter) always waits (promotion needs it).
    type: bool
    default: false
  force:
    description: With V(absent), remove the leader too (kvctl moves leadership away first).
    type: bool
    default: false
  timeout:
    description: Seconds the task may take, waiting for catch-up included.
    type: float
    default: 60
attributes:
  check_mode:
    support: full
    details: Reads the membership and says what it would do; runs no command that changes it.
  diff_mode:
    support: full
    details: Voters and learners (with their peer addresses) before and after.
author: KeyVal developers
"""

EXAMPLES = r"""
- name: Join node4 as a learner (auto-promotion makes it a voter once caught up)
  keyval.cluster.keyval_member:
    id: node4
    address: node4.example.org:7001
    endpoints: ["node1.example.org:8001"]

- name: Join node4 and make it a voter before going on
  keyval.cluster.keyval_member:
    id: node4
    address: node4.example.org:7001
    state: voter
    timeout: 300

- name: Keep node5 a learner (for example a read replica in another site)
  keyval.cluster.keyval_member:
    id: node5
    address: node5.example.org:7001
    state: learner
    wait_caught_up: true

- name: Remove node2
  keyval.cluster.keyval_member:
    id: node2
    state: absent
"""

RETURN = r"""
member:
  description: The member as kvctl reports it after the task, or null when it is not a member.
  returned: success
  type: dict
  sample: {id: node4, type: Voter, peer_address: "node4.example.org:7001", lag: 0, caught_up: true}
actions:
  description:
    - The kvctl commands planned (in check mode, that would run), in order.
    - The leader's auto-promotion may promote a member before the module's own C(cluster promote).
  returned: always
  type: list
  elements: str
  sample: ["cluster add node4 node4.example.org:7001", "cluster promote node4"]
voters:
  description: Voter ids after the task (as they would be, in check mode).
  returned: success
  type: list
  elements: str
learners:
  description: Learner ids after the task (as they would be, in check mode).
  returned: success
  type: list
  elements: str
msg:
  description: What the task did, or would do.
  returned: always
  type: str
  sample: added node4 (node4.example.org:7001) as a learner; promoted node4 to voter
"""

import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.keyval.cluster.plugins.module_utils.kvctl import (
    Kvctl, bad_address, bad_node_id, common_argument_spec, find_member, membership)


def plan(params, member):
    """The kvctl commands needed to bring ``member`` (None: not a member) to params['state']."""
    node, address, state = params["id"], params["address"], params["state"]
    if state == "absent":
        return [["cluster", "remove"] + (["--force"] if params["force"] else []) + ["--", node]] if member else []
    steps = []
    if member is None:
        steps.append(["cluster", "add"] + (["--no-auto-promote"] if state == "learner" else []) + ["--", node, address])
    if state == "voter" and (member is None or member["type"] != "Voter"):
        steps.append(["cluster", "promote", "--", node])
    return steps


def shown(step):
    return " ".join(word for word in step if word != "--")


def predicted(before, params, steps):
    """Membership as it would be after ``steps`` (check mode's --diff)."""
    after = {"voters": dict(before["voters"]), "learners": dict(before["learners"])}
    node = params["id"]
    for step in steps:
        if step[1] == "remove":
            after["voters"].pop(node, None)
            after["learners"].pop(node, None)
        elif step[1] == "add":
            after["learners"][node] = params["address"]
        elif step[1] == "promote":
            after["voters"][node] = after["learners"].pop(node, None)
    return after


def refuse_early(module, params, member):
    """Fail, changing nothing, on input kvctl or the cluster would refuse."""
    node, address, state = params["id"], params["address"], params["state"]
    problem = None
    if state != "absent":
        if member is None and not address:
            problem = "address is required to add %s (it is not a member)" % node
        elif member is not None and address and member.get("peer_address") != address:
            problem = ("%s is already a member at %s, not %s; remove it first (state: absent) to add it"
                       " at another address" % (node, member.get("peer_address"), address))
        elif member is not None and state == "learner" and member["type"] == "Voter":
            problem = "%s is a voter and KeyVal cannot demote a voter; remove it and add it again as a learner" % node
    if problem:
        module.fail_json(msg=problem, changed=False)


def wait_until(kvctl, node, want_voter, messages):
    """Wait until ``node`` has caught up (and, if ``want_voter``, promote it); its member document."""
    last_refusal = None
    while True:
        member = kvctl.member(node)
        if member is None:
            kvctl.fail("%s is no longer a member of the cluster" % node)
        if member["type"] == "Voter" or (member.get("caught_up") and not want_voter):
            return member
        if member.get("caught_up"):
            rc, document = kvctl.try_run("cluster", "promote", "--", node)
            if rc == 0:
                kvctl.changed = kvctl.changed or bool(document.get("changed"))
                messages.append(document.get("message", "promoted %s" % node))
                continue
            if rc == 1 and kvctl.member(node) and kvctl.member(node)["type"] == "Voter":
                continue  # auto-promotion got there first
            if rc != 1:  # usage or unreachable: no point waiting
                kvctl.fail_with(rc, document, ("cluster", "promote", node))
            last_refusal = document.get("error", {}).get("message")  # e.g. a change in progress
        if kvctl.remaining() <= 0.5:
            why = "; last refusal: %s" % last_refusal if last_refusal else ""
            kvctl.fail("%s has not caught up within %gs (lag %s entries, healthy %s)%s; is it running with the"
                       " cluster's secret? raise timeout to wait longer"
                       % (node, kvctl.params["timeout"], member.get("lag"), member.get("healthy"), why),
                       member=member)
        time.sleep(0.5)


def already(node, member):
    return "%s is already a %s" % (node, member["type"].lower()) if member else "%s is not a member" % node


def main():
    argument_spec = common_argument_spec(timeout=60)
    argument_spec.update(
        id=dict(type="str", required=True),
        address=dict(type="str"),
        state=dict(type="str", default="present", choices=["present", "absent", "voter", "learner"]),
        wait_caught_up=dict(type="bool", default=False),
        force=dict(type="bool", default=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    node = params["id"]
    bad = bad_node_id(node) or (params["address"] is not None and bad_address(params["address"]))
    if bad:  # before anything is run
        module.fail_json(msg=bad, changed=False)

    kvctl = Kvctl(module)
    info = kvctl.info()
    before = membership(info)
    member = find_member(info, node)
    refuse_early(module, params, member)
    steps = plan(params, member)
    actions = [shown(step) for step in steps]

    if module.check_mode:
        after = predicted(before, params, steps)
        msg = ("would run: " + "; ".join(actions)) if steps else already(node, member)
        if steps and params["state"] == "voter":
            msg += " (once it has caught up)"
        module.exit_json(changed=bool(steps), msg=msg, actions=actions, member=member,
                         voters=sorted(after["voters"]), learners=sorted(after["learners"]),
                         diff=dict(before=before, after=after))

    messages = []
    for step in (s for s in steps if s[1] != "promote"):  # promotion waits for catch-up, below
        document = kvctl.run(*step)
        kvctl.changed = kvctl.changed or bool(document.get("changed"))
        messages.append(document.get("message", shown(step)))
    if params["state"] != "absent" and (params["wait_caught_up"] or params["state"] == "voter"):
        wait_until(kvctl, node, params["state"] == "voter", messages)

    info = kvctl.info() if steps else info
    after = membership(info)
    # A learner the leader auto-promoted while the task waited did change during the task.
    kvctl.changed = kvctl.changed or before != after
    module.exit_json(changed=kvctl.changed, msg="; ".join(messages) or already(node, find_member(info, node)),
                     actions=actions, member=find_member(info, node),
                     voters=info.get("voters", []), learners=info.get("learners", []),
                     diff=dict(before=before, after=after))


if __name__ == "__main__":
    main()
