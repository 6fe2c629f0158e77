"""The base root filesystem the test hosts boot: Debian bookworm, built once and cached.

`debootstrap --variant=minbase` with the packages the hosts need, then prepared for booting as
several hosts at once (see /work/shared/notes/test-hosts.md): no machine id, hostname or SSH
host keys (each host gets its own), root login by key only, systemd-networkd and the apt timers
off (addresses are set from outside; the hosts are offline), ssh enabled.

The cache directory holds one `<hash>/rootfs` per recipe; the hash covers everything below that
shapes the result, so changing the recipe builds a new one beside the old. Builds are serialized
with a lock file, and a half-built tree never has the final name.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

SUITE = "bookworm"
PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "openssh-server", "python3", "python3-venv",
    "python3-apt", "python3-packaging", "iproute2", "procps",
)
MASKED_UNITS = (
    "systemd-networkd.service", "systemd-networkd.socket", "systemd-networkd-wait-online.service",
    "apt-daily.timer", "apt-daily-upgrade.timer", "systemd-timesyncd.service",
)
SSHD_CONFIG = "PermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\n"
DEFAULT_MIRROR = "http://deb.debian.org/debian"


class RootfsError(Exception):
    """Building the base root filesystem failed (the message says which step)."""


def recipe_hash() -> str:
    """A short hash of everything that shapes the built tree."""
    recipe = {"suite": SUITE, "packages": PACKAGES, "masked": MASKED_UNITS, "sshd": SSHD_CONFIG,
              "prepare": 2}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def apt_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The Debian mirror this machine's apt already uses (deb822 `.sources` or one-line lists)."""
    files = sorted(sources.glob("sources.list.d/*.sources")) + [sources / "sources.list"]
    files += sorted(sources.glob("sources.list.d/*.list"))
    for f in files:
        text = f.read_text() if f.is_file() else ""
        for m in re.finditer(r"^URIs:\s*(\S+)|^deb\s+(?:\[[^]]*\]\s+)?(\S+)", text, re.M):
            uri = (m.group(1) or m.group(2)).rstrip("/")
            if uri.endswith("/debian"):
                return uri
    return DEFAULT_MIRROR


def ensure_rootfs(cache_dir: Path, mirror: str | None = None, log=print) -> Path:
    """Return the cached base rootfs, building it first if this recipe has none yet."""
    final = cache_dir / recipe_hash() / "rootfs"
    if (final / "etc/os-release").exists():
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be building the same recipe
        if (final / "etc/os-release").exists():
            return final
        building = final.parent / "rootfs.building"
        _unmount_under(building)  # a killed debootstrap leaves its /proc and /sys mounted
        shutil.rmtree(building, ignore_errors=True)
        building.parent.mkdir(parents=True, exist_ok=True)
        mirror = mirror or apt_mirror()
        log(f"testhosts: building the base rootfs {final} from {mirror} (about 1-2 minutes)")
        started = time.monotonic()
        _run(["debootstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES),
              SUITE, str(building), mirror], "debootstrap")
        _prepare(building)
        building.rename(final)
        log(f"testhosts: base rootfs built in {time.monotonic() - started:.0f} s")
    return final


def _prepare(root: Path) -> None:
    (root / "etc/machine-id").write_text("")
    (root / "etc/hostname").unlink(missing_ok=True)
    (root / "etc/resolv.conf").unlink(missing_ok=True)
    (root / "etc/resolv.conf").write_text("")  # offline hosts: no resolver to wait for
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/ssh/sshd_config.d/keyval-testhosts.conf").write_text(SSHD_CONFIG)
    _run(["systemctl", f"--root={root}", "mask", *MASKED_UNITS], "masking units")
    _run(["systemctl", f"--root={root}", "enable", "ssh.service"], "enabling ssh")
    _run(["chroot", str(root), "apt-get", "clean"], "apt-get clean")
    shutil.rmtree(root / "var/lib/apt/lists", ignore_errors=True)
    (root / "var/lib/apt/lists/partial").mkdir(parents=True)


def _unmount_under(path: Path) -> None:
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f if line.split()[4].startswith(f"{path}/")]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


def _run(cmd: list[str], step: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RootfsError(f"{step} failed (exit {proc.returncode}): {last[0]}")
