#!/usr/bin/python
# -*- coding: utf-8 -*-
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: keyval_leader
short_description: Move a KeyVal cluster's leadership to a node, or away from one
version_added: 0.1.0
description:
  - Reads the leader with C(kvctl cluster info --json) and runs C(kvctl cluster transfer) only
    when leadership has to move. Changed only if leadership moved.
  - Use O(away_from) before restarting or removing a node, O(to) to put the leader somewhere.
extends_documentation_fragment: keyval.cluster.kvctl
options:
  to:
    description: The voter that should lead. Nothing is done if it already leads.
    type: str
  away_from:
    description:
      - The node that should not lead. If it leads, leadership goes to the most caught-up
        healthy voter; otherwise nothing is done.
    type: str
  timeout:
    description: Seconds the task may take, the transfer included.
    type: float
    default: 30
attributes:
  check_mode:
    support: full
    details: Says whether leadership would move; moves nothing.
  diff_mode:
    support: full
    details: The leader before and after.
author: KeyVal developers
"""

EXAMPLES = r"""
- name: Move leadership off this host before restarting it
  keyval.cluster.keyval_leader:
    away_from: "{{ keyval_node_id | default(inventory_hostname) }}"
    endpoints: ["node1.example.org:8001", "node2.example.org:8001"]

- name: Make node3 the leader
  keyval.cluster.keyval_leader:
    to: node3
"""

RETURN = r"""
leader:
  description: The leader after the task (in check mode, the one it would be, or null if kvctl picks it).
  returned: success
  type: str
  sample: node3
previous_leader:
  description: The leader before the task.
  returned: success
  type: str
  sample: node2
term:
  description: The term after the task.
  returned: success
  type: int
msg:
  description: What the task did, or would do.
  returned: always
  type: str
  sample: leadership transferred from node2 to node3 in 0.04s (term 3)
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.keyval.cluster.plugins.module_utils.kvctl import Kvctl, bad_node_id, common_argument_spec


def main():
    argument_spec = common_argument_spec(timeout=30)
    argument_spec.update(to=dict(type="str"), away_from=dict(type="str"))
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           mutually_exclusive=[("to", "away_from")], required_one_of=[("to", "away_from")])
    to, away_from = module.params["to"], module.params["away_from"]
    bad = bad_node_id(to, "to") if to is not None else bad_node_id(away_from, "away_from")
    if bad:
        module.fail_json(msg=bad, changed=False)

    kvctl = Kvctl(module)
    info = kvctl.info()
    leader, voters = info.get("leader"), info.get("voters", [])
    if leader is None:
        kvctl.fail("the cluster has no leader right now (is a quorum of voters up?); nothing was transferred")
    if to is not None and to not in voters:
        kvctl.fail("%s is not a voter (voters: %s); only a voter can lead" % (to, ", ".join(voters)))
    if (to is not None and leader == to) or (away_from is not None and leader != away_from):
        module.exit_json(changed=False, leader=leader, previous_leader=leader, term=info.get("term"),
                         msg="%s already leads" % leader, diff=dict(before={"leader": leader}, after={"leader": leader}))
    if away_from is not None and len(voters) < 2:
        kvctl.fail("%s is the only voter; there is no other voter to lead" % away_from)

    if module.check_mode:
        target = to or "the most caught-up healthy voter"
        module.exit_json(changed=True, leader=to, previous_leader=leader, term=info.get("term"),
                         msg="would transfer leadership from %s to %s" % (leader, target),
                         diff=dict(before={"leader": leader}, after={"leader": to or "(another voter)"}))

    document = kvctl.run("cluster", "transfer", *(["--", to] if to else []))
    kvctl.changed = bool(document.get("changed"))
    module.exit_json(changed=kvctl.changed, leader=document.get("leader"), previous_leader=leader,
                     term=document.get("term"), msg=document.get("message", ""),
                     diff=dict(before={"leader": leader}, after={"leader": document.get("leader")}))


if __name__ == "__main__":
    main()
