"""Testinfra checks of the rolling-upgrade scenario's verify step, on every host: the node runs
this tree's version behind /opt/keyval/current, the cluster reports that version for every
member, and it is healthy with every host a voter."""
import json
import os
import re

import yaml

PROJECT = os.environ["MOLECULE_PROJECT_DIRECTORY"]
with open(os.path.join(PROJECT, "pyproject.toml")) as f:
    VERSION = re.search(r'(?m)^version = "([^"]+)"', f.read()).group(1)


def endpoint(host):
    return yaml.safe_load(host.file("/etc/keyval/node.yaml").content_string)["client_addr"]


def kvctl_json(host, *args):
    result = host.run("kvctl --json --endpoints %s " + " ".join(["%s"] * len(args)), endpoint(host), *args)
    assert result.rc == 0, f"kvctl {' '.join(args)} on {host.backend.host}: rc {result.rc}: {result.stdout}{result.stderr}"
    return json.loads(result.stdout)


def test_current_points_at_the_new_version(host):
    current = host.file("/opt/keyval/current")
    assert current.is_symlink and current.linked_to == f"/opt/keyval/{VERSION}"
    assert host.check_output("/opt/keyval/current/bin/keyval --version") == f"keyval {VERSION}"


def test_members_report_the_new_version(host):
    members = kvctl_json(host, "cluster", "members")
    assert {m["id"]: m.get("version") for m in members} == {m["id"]: VERSION for m in members}


def test_cluster_healthy_every_host_a_voter(host):
    health = kvctl_json(host, "cluster", "health")
    assert health["healthy"], health["issues"]
    info = kvctl_json(host, "cluster", "info")
    assert info["learners"] == [] and len(info["voters"]) == health["voters"] == health["healthy_voters"]
