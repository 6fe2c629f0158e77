"""Fixtures for the test-host suites: a HostSet from molecule/hosts/testhosts.py.

Hosts need root and a kernel with network namespaces, overlayfs and cgroup2; without those the
tests skip with the reason, except in CI (CI=true), where a skip would hide a broken job, so they
fail. Missing packages always fail: scripts/setup-hosts installs them.
"""

import fcntl
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "molecule" / "hosts"))

import testhosts  # noqa: E402

STATE_ROOT = Path("/var/lib/keyval-testhosts")


def require_hosts() -> None:
    """Skip or fail (see the module docstring) when this machine cannot run test hosts."""
    try:
        testhosts.preflight()
    except testhosts.TestHostsError as e:
        if e.kind in ("root", "kernel") and os.environ.get("CI", "").lower() != "true":
            pytest.skip(f"test hosts unavailable: {e}")
        pytest.fail(f"test hosts unavailable: {e}", pytrace=False)


@pytest.fixture(scope="module")
def hostset():
    """Three booted hosts kvt1..kvt3 on 10.77.0.0/24, destroyed afterwards.

    Runs of this suite on one machine share the set's names, so they take turns (a lock file);
    each run starts by clearing whatever a killed run left.
    """
    require_hosts()
    STATE_ROOT.mkdir(parents=True, exist_ok=True)
    with open(STATE_ROOT / "kvt.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        hs = testhosts.HostSet("kvt", "10.77.0.0/24", 3, state_root=STATE_ROOT)
        try:
            hs.create()
            yield hs
        finally:
            hs.destroy()
