"""Testinfra checks after replace-node.yml -e old=kvr2 -e new=kvr4 (kvr2 powered off), run on
kvr1, kvr3 and kvr4 (molecule.yml: kvr2 stays off)."""
import json
from pathlib import Path

import yaml

VOTERS = ["kvr1", "kvr3", "kvr4"]
OLD = "kvr2"


def kvctl_json(host, *args):
    endpoint = yaml.safe_load(host.file("/etc/keyval/node.yaml").content_string)["client_addr"]
    result = host.run("kvctl --json --endpoints %s " + " ".join(["%s"] * len(args)), endpoint, *args)
    assert result.rc == 0, f"kvctl {' '.join(args)} on {host.backend.host}: rc {result.rc}: {result.stdout}{result.stderr}"
    return json.loads(result.stdout)


def test_service_runs_enabled(host):
    service = host.service("keyval")
    assert service.is_enabled and service.is_running


def test_new_node_is_a_voter_and_old_node_is_gone(host):
    info = kvctl_json(host, "cluster", "info")
    assert sorted(info["voters"]) == VOTERS and info["learners"] == []
    assert OLD not in [m["id"] for m in info["members"]]


def test_three_healthy_voters_one_leader(host):
    health = kvctl_json(host, "cluster", "health")
    assert health["healthy"], health["issues"]
    assert (health["voters"], health["healthy_voters"], health["total_members"]) == (3, 3, 3)
    assert health["leader"] in VOTERS


def test_new_node_joined_without_a_bootstrap_list(host):
    if host.backend.host == "kvr4":
        assert "bootstrap" not in yaml.safe_load(host.file("/etc/keyval/node.yaml").content_string)


def test_old_node_data_dir_kept():
    # kvr2 is powered off: read its disk (the overlay's upper layer) on the controller
    data = Path("/var/lib/keyval-testhosts/kvr") / OLD / "upper/var/lib/keyval"
    assert data.is_dir() and any(data.iterdir()), f"{data} is gone or empty"
