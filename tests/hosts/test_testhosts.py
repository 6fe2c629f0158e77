"""The test hosts themselves: boot, SSH, partitions, crash and restart, clean stop, teardown.

Real containers, real namespaces, real SSH (nothing mocked). Tests run in file order against one
module-scoped set; each leaves the set healed and all hosts running for the next.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import testhosts

pytestmark = pytest.mark.hosts

NAMES = ["kvt1", "kvt2", "kvt3"]


def test_each_host_boots_systemd_and_answers_ssh_with_its_name_and_address(hostset):
    for h in hostset.hosts:
        out = hostset.ssh(h.name, "systemctl is-system-running; hostname; ip -4 -o addr show dev eth0")
        state, hostname, addr = out.stdout.splitlines()
        assert state in ("running", "degraded"), out
        assert hostname == h.name
        assert f" {h.ip}/24 " in addr
    assert [h.ip for h in hostset.hosts] == ["10.77.0.11", "10.77.0.12", "10.77.0.13"]


def test_hosts_reach_each_other_and_nothing_outside_the_subnet(hostset):
    assert hostset.can_reach("kvt1", "kvt2") and hostset.can_reach("kvt3", "kvt1")
    out = hostset.ssh("kvt1", "ip route get 1.1.1.1")
    assert out.returncode != 0 and "unreachable" in out.stderr


def test_partition_cuts_two_hosts_apart_while_the_third_reaches_both_then_heal(hostset):
    hostset.partition("kvt1", "kvt2")
    try:
        assert not hostset.can_reach("kvt1", "kvt2")
        assert not hostset.can_reach("kvt2", "kvt1")
        assert hostset.can_reach("kvt3", "kvt1") and hostset.can_reach("kvt3", "kvt2")
        assert hostset.can_reach("kvt1", "kvt3") and hostset.can_reach("kvt2", "kvt3")
    finally:
        hostset.heal()
    assert hostset.can_reach("kvt1", "kvt2") and hostset.can_reach("kvt2", "kvt1")


def test_isolate_cuts_a_host_off_from_everyone_then_heal(hostset):
    hostset.isolate("kvt3")
    try:
        assert not hostset.can_reach("kvt1", "kvt3")
        assert hostset.ssh("kvt3", "true", timeout=10).returncode != 0  # the controller too
    finally:
        hostset.heal()
    assert hostset.can_reach("kvt1", "kvt3")


def test_a_crashed_host_restarts_with_what_it_wrote_before_the_crash(hostset):
    boot_id = "cat /proc/sys/kernel/random/boot_id"
    before = hostset.ssh("kvt2", f"echo survived > /root/marker && sync && {boot_id}").stdout
    hostset.crash("kvt2")
    assert not hostset.running("kvt2")
    assert hostset.ssh("kvt2", "true", timeout=10).returncode != 0
    hostset.start("kvt2")
    out = hostset.ssh("kvt2", f"cat /root/marker; {boot_id}").stdout.split()
    assert out[0] == "survived" and out[1] != before.strip()


def test_stop_is_a_clean_poweroff_and_start_boots_again(hostset):
    hostset.stop("kvt3")
    assert not hostset.running("kvt3")
    console = (hostset.dir / "kvt3" / "console.log").read_text(errors="replace")
    assert "Powering off." in console
    hostset.restart("kvt3")  # already stopped: just starts
    assert hostset.ssh("kvt3", "systemctl is-system-running").stdout.strip() in ("running", "degraded")


def test_teardown_leaves_nothing_and_is_idempotent(hostset):
    hostset.destroy()
    assert_nothing_left(hostset)
    hostset.destroy()
    assert_nothing_left(hostset)


def test_teardown_clears_what_a_killed_run_left(hostset):
    """`up` killed mid-boot leaves namespaces, mounts, cgroups and booting hosts; destroy clears them."""
    cli = Path(testhosts.__file__)
    args = [sys.executable, str(cli), "--prefix", "kvt", "--subnet", "10.77.0.0/24"]
    proc = subprocess.Popen([*args, "up"], stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not hostset.running("kvt3") and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert hostset.leftovers(), "the killed run should have left something to clean"
    subprocess.run([*args, "down"], check=True)
    assert_nothing_left(hostset)


def assert_nothing_left(hs):
    assert hs.leftovers() == []
    assert not [n for n in os.listdir("/run/netns") if n.startswith("kvt")] if os.path.isdir("/run/netns") else True
    assert str(hs.dir) not in Path("/proc/self/mountinfo").read_text()
    assert subprocess.run(["ip", "link", "show", hs.bridge], capture_output=True).returncode != 0
    nspawns = subprocess.run(["pgrep", "-f", f"systemd-nspawn .*{hs.dir}"], capture_output=True, text=True)
    assert nspawns.stdout == ""
