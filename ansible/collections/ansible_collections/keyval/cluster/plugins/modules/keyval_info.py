#!/usr/bin/python
# -*- coding: utf-8 -*-
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: keyval_info
short_description: The state of a KeyVal cluster (leader, term, members, health, lag)
version_added: 0.1.0
description:
  - Runs C(kvctl cluster info --json) and C(kvctl cluster health --json) and returns what they
    report. Changes nothing.
  - An unhealthy cluster is not a failure; look at RV(healthy) and RV(issues).
    Fails only when kvctl cannot tell, for example when no member answers (rc 3).
extends_documentation_fragment: keyval.cluster.kvctl
options:
  timeout:
    description: Seconds for both kvctl calls together.
    type: float
    default: 10
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
author: KeyVal developers
"""

EXAMPLES = r"""
- name: Read the cluster's state
  keyval.cluster.keyval_info:
    endpoints: ["node1.example.org:8001", "node2.example.org:8001"]
  register: keyval

- name: Stop unless the cluster is healthy
  ansible.builtin.assert:
    that: keyval.healthy
    fail_msg: "{{ keyval.issues | join('; ') }}"

- name: Show each member's lag
  ansible.builtin.debug:
    var: keyval.lag
"""

RETURN = r"""
cluster_id:
  description: The cluster's id.
  returned: success
  type: str
  sample: 6891f4fb26c068d3
leader:
  description: The leader's node id, or null while there is none.
  returned: success
  type: str
  sample: node2
term:
  description: The current Raft term.
  returned: success
  type: int
  sample: 4
commit_index:
  description: The leader's commit index.
  returned: success
  type: int
quorum:
  description: Voters needed for a quorum.
  returned: success
  type: int
  sample: 2
voters:
  description: Ids of the voting members.
  returned: success
  type: list
  elements: str
  sample: [node1, node2, node3]
learners:
  description: Ids of the non-voting members.
  returned: success
  type: list
  elements: str
  sample: [node4]
healthy:
  description: Whether kvctl cluster health found nothing wrong.
  returned: success
  type: bool
quorum_available:
  description: Whether enough healthy voters form a quorum.
  returned: success
  type: bool
issues:
  description: Every problem kvctl cluster health found, one sentence each.
  returned: success
  type: list
  elements: str
  sample: ["Member node3 is unreachable: the leader last heard from it 3.4s ago"]
lag:
  description: Each member's lag, in log entries behind the leader.
  returned: success
  type: dict
  sample: {node1: 0, node2: 0, node3: 12}
versions:
  description: >-
    Each member's KeyVal version as the cluster reports it (the C(version) field of
    C(kvctl cluster members --json)), or null for a member that reports none (release 0.1.0
    reports no version). A mixed cluster shows two versions here during a rolling upgrade.
  returned: success
  type: dict
  sample: {node1: 0.2.0, node2: 0.2.0, node3: null}
members:
  description: >-
    Each member as kvctl reports it (id, peer_address, client_address, type, is_leader,
    healthy, match_index, lag, last_contact, caught_up, version where reported, ...).
  returned: success
  type: list
  elements: dict
health:
  description: The whole document of kvctl cluster health --json.
  returned: success
  type: dict
info:
  description: The whole document of kvctl cluster info --json.
  returned: success
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.keyval.cluster.plugins.module_utils.kvctl import Kvctl, common_argument_spec


def main():
    module = AnsibleModule(argument_spec=common_argument_spec(timeout=10), supports_check_mode=True)
    kvctl = Kvctl(module)
    info = kvctl.info()
    rc, health = kvctl.try_run("cluster", "health")
    if rc not in (0, 1) or "healthy" not in health:  # exit 1 with a report: unhealthy, not failed
        kvctl.fail_with(rc, health, ("cluster", "health"))
    members = info.get("members", [])
    module.exit_json(
        changed=False,
        cluster_id=info.get("cluster_id"),
        leader=info.get("leader"),
        term=info.get("term"),
        commit_index=info.get("commit_index"),
        quorum=info.get("quorum"),
        voters=info.get("voters", []),
        learners=info.get("learners", []),
        healthy=health["healthy"],
        quorum_available=health.get("quorum_available"),
        issues=health.get("issues", []),
        lag=dict((m["id"], m.get("lag")) for m in members),
        versions=dict((m["id"], m.get("version")) for m in members),
        members=members,
        health=health,
        info=info,
    )


if __name__ == "__main__":
    main()
