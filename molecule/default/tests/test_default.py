"""Testinfra checks molecule's verify step runs on every host of the scenario's inventory."""


def test_sshd_is_running_and_enabled(host):
    ssh = host.service("ssh")
    assert ssh.is_running
    assert ssh.is_enabled


def test_systemd_booted_the_host(host):
    state = host.run("systemctl is-system-running").stdout.strip()
    assert state in ("running", "degraded")
