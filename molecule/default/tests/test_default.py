"""Testinfra checks of molecule's verify step, run on every host of the scenario's inventory:
the keyval_node role's files, its service, and the cluster site.yml made of the hosts."""
import json
import os

import pytest
import testinfra
import yaml

VERSION = "0.2.0"
HOSTS = ["kvm1", "kvm2", "kvm3"]


def other_host(name):
    """Another host of the scenario (molecule's inventory directory holds the test hosts')."""
    inventory = os.path.dirname(os.environ["MOLECULE_INVENTORY_FILE"])
    return testinfra.get_host(f"ansible://{name}", ansible_inventory=inventory)


def endpoint(host):
    """The node's client address, as the role wrote it into its config."""
    return yaml.safe_load(host.file("/etc/keyval/node.yaml").content_string)["client_addr"]


def kvctl_json(host, *args, endpoints):
    result = host.run("kvctl --json --endpoints %s " + " ".join(["%s"] * len(args)), endpoints, *args)
    assert result.rc == 0, f"kvctl {' '.join(args)} on {host.backend.host}: rc {result.rc}: {result.stdout}{result.stderr}"
    return json.loads(result.stdout)


def test_service_is_enabled_running_and_runs_as_keyval(host):
    service = host.service("keyval")
    assert service.is_enabled
    assert service.is_running
    pid = host.check_output("systemctl show -p MainPID --value keyval")
    assert pid != "0"
    assert host.file(f"/proc/{pid}").user == "keyval"  # /proc/PID belongs to the process's user


def test_unit_is_hardened_and_passes_systemd_analyze_verify(host):
    unit = host.file("/etc/systemd/system/keyval.service").content_string
    for line in ("Restart=on-failure", "NoNewPrivileges=yes", "ProtectSystem=strict",
                 "ReadWritePaths=/var/lib/keyval", "User=keyval"):
        assert line in unit
    assert host.run("systemd-analyze verify /etc/systemd/system/keyval.service").rc == 0


@pytest.mark.parametrize("path, user, group, mode", [
    ("/etc/keyval/cluster.secret", "keyval", "keyval", 0o600),
    ("/var/lib/keyval", "keyval", "keyval", 0o700),
    ("/etc/keyval/node.yaml", "root", "keyval", 0o640),
    ("/etc/keyval", "root", "keyval", 0o750),
])
def test_file_owners_and_modes(host, path, user, group, mode):
    f = host.file(path)
    assert f.exists
    assert (f.user, f.group, f.mode) == (user, group, mode)


def test_pinned_version_in_its_own_venv_behind_current(host):
    current = host.file("/opt/keyval/current")
    assert current.is_symlink and current.linked_to == f"/opt/keyval/{VERSION}"
    assert host.check_output("/opt/keyval/current/bin/keyval --version") == f"keyval {VERSION}"
    assert host.run("keyval serve --check-config --config /etc/keyval/node.yaml").rc == 0


def test_same_secret_on_every_host(host):
    digests = {h: other_host(h).check_output("sha256sum /etc/keyval/cluster.secret").split()[0] for h in HOSTS}
    assert len(set(digests.values())) == 1, digests


def test_cluster_health_three_healthy_voters_one_leader(host):
    health = kvctl_json(host, "cluster", "health", endpoints=endpoint(host))
    assert health["healthy"], health["issues"]
    assert (health["voters"], health["healthy_voters"], health["total_members"]) == (3, 3, 3)
    assert health["leader"] in HOSTS
    info = kvctl_json(host, "cluster", "info", endpoints=endpoint(host))
    assert sorted(info["voters"]) == HOSTS and info["learners"] == []
    assert [m["id"] for m in info["members"] if m["is_leader"]] == [health["leader"]]
    # healthy: the leader heard from each member lately, and each message says its release
    assert {(m["id"], m["version"]) for m in info["members"]} == {(h, VERSION) for h in HOSTS}
    [own] = kvctl_json(host, "status", endpoints=endpoint(host))
    assert own["version"] == VERSION


def test_a_key_put_through_this_host_reads_back_through_another(host):
    me = host.backend.host
    other = other_host(HOSTS[(HOSTS.index(me) + 1) % len(HOSTS)])
    key, value = f"verify-{me}", f"written-through-{me}"
    kvctl_json(host, "put", key, value, endpoints=endpoint(host))
    got = kvctl_json(other, "get", key, endpoints=endpoint(other))
    assert got["value"] == value
