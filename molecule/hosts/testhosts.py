"""Test hosts for KeyVal's Ansible tests: systemd-nspawn containers booting Debian on a bridge.

Why this shape: one stdlib-only file that molecule's create.yml/destroy.yml run as a command
(`python3 molecule/hosts/testhosts.py --prefix kvm up`) and pytest suites import
(tests/hosts/conftest.py puts this directory on sys.path). It is deliberately not a package
`molecule.hosts` run with `python -m`: a `molecule/__init__.py` would shadow the molecule tool
itself whenever Python starts in the repository root. The base root filesystem lives in
rootfs.py; everything is configured through HostSet's arguments (no module-level state).

A HostSet named by `prefix` has hosts `<prefix>1..<prefix>N`, each with its own overlay over the
cached base rootfs (state_root/prefix/NAME, survives restarts), its own network namespace with a
veth into the set's bridge (controller .1, hosts .11, .12, ...; no default route, and FORWARD
drops anything leaving the bridge), its own cgroup (state kept in the kernel: a host runs iff its
cgroup is populated), SSH by a key made per set. Recipe and traps: shared/notes/test-hosts.md.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from rootfs import RootfsError, ensure_rootfs

CGROUP_DIR = "keyval-testhosts"
NSPAWN_PROPAGATE = Path("/run/systemd/nspawn/propagate")
CHAIN = "KVTH"  # iptables chain inside each host's namespace that holds partitions
SSH_OPTIONS = {"User": "root", "IdentitiesOnly": "yes", "StrictHostKeyChecking": "yes",
               "ServerAliveInterval": "3", "ServerAliveCountMax": "3", "LogLevel": "ERROR"}


class TestHostsError(Exception):
    """A test-host operation failed; the message is one line saying which and why."""

    __test__ = False  # not a pytest test class

    def __init__(self, message: str, kind: str = "failed"):
        super().__init__(message)
        self.kind = kind  # "root" or "kernel": this machine cannot run hosts; "tools": setup-hosts


@dataclass(frozen=True)
class Host:
    name: str
    ip: str
    veth: str  # controller-side end in the bridge


class HostSet:
    def __init__(self, prefix: str = "kvt", subnet: str = "10.77.0.0/24", count: int = 3,
                 bridge: str | None = None, state_root: Path = Path("/var/lib/keyval-testhosts"),
                 cache_dir: Path = Path("/var/cache/keyval-testhosts"), mirror: str | None = None,
                 log=lambda msg: print(msg, file=sys.stderr)):
        if not re.fullmatch(r"[a-z]([a-z0-9-]{0,6}[a-z])?", prefix):
            raise TestHostsError(f"prefix {prefix!r}: 1-8 of a-z0-9-, starting and ending with a letter")
        net = ipaddress.ip_network(subnet)
        if not 1 <= count <= min(50, net.num_addresses - 12):
            raise TestHostsError(f"{count} hosts do not fit in {subnet} (hosts are .11 upwards)")
        self.prefix, self.prefixlen, self.log = prefix, net.prefixlen, log
        self.controller_ip = str(net[1])
        self.hosts = [Host(f"{prefix}{i}", str(net[10 + i]), f"{prefix}{i}-v") for i in range(1, count + 1)]
        self.bridge = bridge or f"{prefix}-br"
        self.dir = Path(state_root) / prefix
        self.cache_dir, self.mirror = Path(cache_dir), mirror
        self.key = self.dir / "id_ed25519"
        self.inventory = self.dir / "inventory.yml"
        self.ssh_config = self.dir / "ssh_config"
        self.known_hosts = self.dir / "known_hosts"
        self.fw_tag = f"keyval-testhosts:{prefix}"

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise TestHostsError(f"no host {name!r} in set {self.prefix} ({', '.join(h.name for h in self.hosts)})")

    # --- whole set -------------------------------------------------------------------------

    def create(self, timeout: float = 120, inventory_copy: Path | None = None) -> None:
        """Clear any leftovers of this set, then bring every host up with SSH answering."""
        preflight()
        base = ensure_rootfs(self.cache_dir, self.mirror, self.log)
        self.destroy()
        started = time.monotonic()
        self.dir.mkdir(parents=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"testhosts-{self.prefix}", "-f", str(self.key)])
        self._network_up()
        for h in self.hosts:
            self._make_disk(h, base)
        self._write_client_files(inventory_copy)
        for h in self.hosts:
            self.start(h.name, wait=False)
        self.wait_ready([h.name for h in self.hosts], timeout)
        self.log(f"testhosts: {len(self.hosts)} hosts up in {time.monotonic() - started:.1f} s "
                 f"(inventory {self.inventory})")

    def destroy(self) -> None:
        """Remove everything of this set, also what a killed run left behind. Idempotent."""
        for cg in self._cgroups():
            _kill_cgroup(cg)
        for pidfile in self.dir.glob("*/pid"):
            _kill_nspawn(pidfile, signal.SIGKILL)
        for root in cgroup_roots():
            base = root / CGROUP_DIR / self.prefix
            if base.is_dir():
                for d in sorted(base.rglob("*/"), key=lambda p: -len(p.parts)) + [base, base.parent]:
                    _rmdir(d)  # base.parent only goes when no other set uses it
        for mnt in sorted(self._mounts(), key=len, reverse=True):
            if run(["umount", mnt], check=False).returncode != 0:
                run(["umount", "-l", mnt], check=False)
        for ns in self._netns():
            run(["ip", "netns", "delete", ns], check=False)
        for link in self._links():
            run(["ip", "link", "delete", link], check=False)
        for rule in self._fw_rules():
            run(["iptables", "-D", *shlex.split(rule)[1:]], check=False)
        for h in self.hosts:
            shutil.rmtree(NSPAWN_PROPAGATE / h.name, ignore_errors=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def leftovers(self) -> list[str]:
        """What of this set still exists on the machine (empty after destroy)."""
        found = [f"cgroup {c}" for c in self._cgroups(all_roots=True)]
        found += [f"mount {m}" for m in self._mounts()] + [f"netns {n}" for n in self._netns()]
        found += [f"link {link}" for link in self._links()] + [f"iptables {r}" for r in self._fw_rules()]
        return found + ([f"dir {self.dir}"] if self.dir.exists() else [])

    # --- one host --------------------------------------------------------------------------

    def start(self, name: str, wait: bool = True, timeout: float = 60) -> None:
        h = self.host(name)
        if self.running(name):
            return
        cgroups = [root / CGROUP_DIR / self.prefix / name for root in cgroup_roots()]
        for cg in cgroups:
            cg.mkdir(parents=True, exist_ok=True)
            for d in sorted(cg.rglob("*/"), key=lambda p: -len(p.parts)):
                _rmdir(d)  # empty cgroups a previous boot's systemd left
        # /run is no tmpfs on this kind of machine: nspawn refuses to clear the propagation
        # directory an earlier boot of this host left there, and would not start.
        shutil.rmtree(NSPAWN_PROPAGATE / name, ignore_errors=True)
        join = " && ".join(f"echo $$ > {shlex.quote(str(cg / 'cgroup.procs'))}" for cg in cgroups)
        nspawn = ["systemd-nspawn", "-q", "-b", "-D", str(self.dir / name / "root"), "-M", name,
                  f"--hostname={name}", "--register=no", "--keep-unit",
                  f"--network-namespace-path=/run/netns/{name}", "--console=read-only",
                  "--link-journal=no", "--resolv-conf=off", "--timezone=off",
                  "--kill-signal=SIGRTMIN+4"]  # SIGTERM to nspawn = poweroff (default: halt)
        with open(self.dir / name / "console.log", "ab") as console:
            proc = subprocess.Popen(["sh", "-c", f"{join} && exec {shlex.join(nspawn)}"],
                                    stdin=subprocess.DEVNULL, stdout=console, stderr=console,
                                    start_new_session=True)
        (self.dir / name / "pid").write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + 10
        while not self.running(name) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)  # until the wrapper shell has joined the host's cgroups
        if wait:
            self.wait_ready([h.name], timeout)

    def stop(self, name: str, timeout: float = 30) -> None:
        """Clean poweroff: SIGTERM to systemd-nspawn makes the host's systemd shut down."""
        self.host(name)
        if not self.running(name):
            return
        _kill_nspawn(self.dir / name / "pid", signal.SIGTERM)
        if not self._wait_stopped(name, timeout):
            self.crash(name)
            raise TestHostsError(f"{name} did not power off within {timeout:.0f} s; killed it")

    def crash(self, name: str) -> None:
        """Kill every process of the host at once (cgroup.kill), like pulling its power."""
        self.host(name)
        for cg in self._cgroups(names=[name]):
            _kill_cgroup(cg)
        if not self._wait_stopped(name, 10):
            raise TestHostsError(f"{name}: processes survived cgroup.kill")

    def restart(self, name: str, clean: bool = True, timeout: float = 60) -> None:
        self.stop(name) if clean else self.crash(name)
        self.start(name, timeout=timeout)

    def running(self, name: str) -> bool:
        cg = cgroup_roots()[-1] / CGROUP_DIR / self.prefix / name
        return _populated(cg)

    def wait_ready(self, names: list[str], timeout: float = 60) -> None:
        """Wait until each host answers SSH and systemd has finished booting."""
        deadline = time.monotonic() + timeout
        for name in names:
            while True:
                if not self.running(name):
                    raise TestHostsError(f"{name} is not running: {self._console_tail(name)}")
                probe = self.ssh(name, "systemctl is-system-running --wait", timeout=max(1, deadline - time.monotonic()))
                if probe.stdout.strip() in ("running", "degraded"):
                    break
                if time.monotonic() > deadline:
                    raise TestHostsError(f"{name} not ready after {timeout:.0f} s: {probe.stderr.strip() or probe.stdout.strip()}")
                time.sleep(0.5)

    # --- network faults --------------------------------------------------------------------

    def partition(self, a: str, b: str) -> None:
        """Drop all traffic between hosts a and b (iptables in both namespaces); others unaffected."""
        ha, hb = self.host(a), self.host(b)
        for src, dst in ((ha, hb), (hb, ha)):
            for direction in ("-s", "-d"):
                run(["ip", "netns", "exec", src.name, "iptables", "-A", CHAIN, direction, dst.ip, "-j", "DROP"])

    def isolate(self, name: str) -> None:
        """Cut the host off from everyone: its veth in the bridge goes down."""
        run(["ip", "link", "set", self.host(name).veth, "down"])

    def heal(self) -> None:
        for h in self.hosts:
            run(["ip", "netns", "exec", h.name, "iptables", "-F", CHAIN])
            run(["ip", "link", "set", h.veth, "up"])

    def ssh(self, name: str, command: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a shell command on a host (ssh -n: never touches our stdin; see the notes)."""
        self.host(name)
        argv = ["ssh", "-n", "-F", str(self.ssh_config), "-o", "ConnectTimeout=3", name, command]
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(argv, 255, "", f"ssh {name}: no answer in {timeout:.0f} s")

    def can_reach(self, src: str, dst: str, port: int = 22) -> bool:
        """Whether src opens a TCP connection to dst's address within 2 s."""
        code = f"import socket; socket.create_connection(('{self.host(dst).ip}', {port}), 2)"
        return self.ssh(src, f"python3 -c {shlex.quote(code)}").returncode == 0

    # --- internals -------------------------------------------------------------------------

    def _network_up(self) -> None:
        run(["ip", "link", "add", self.bridge, "type", "bridge"])
        run(["ip", "addr", "add", f"{self.controller_ip}/{self.prefixlen}", "dev", self.bridge])
        run(["ip", "link", "set", self.bridge, "up"])
        for rule in (["-i", self.bridge, "!", "-o", self.bridge], ["-o", self.bridge, "!", "-i", self.bridge]):
            run(["iptables", "-I", "FORWARD", *rule, "-m", "comment", "--comment", self.fw_tag, "-j", "DROP"])
        for h in self.hosts:
            run(["ip", "netns", "add", h.name])
            run(["ip", "link", "add", h.veth, "type", "veth", "peer", "name", "eth0", "netns", h.name])
            run(["ip", "link", "set", h.veth, "master", self.bridge, "up"])
            run(["ip", "-n", h.name, "addr", "add", f"{h.ip}/{self.prefixlen}", "dev", "eth0"])
            run(["ip", "-n", h.name, "link", "set", "eth0", "up"])
            run(["ip", "-n", h.name, "link", "set", "lo", "up"])
            for cmd in (["-N", CHAIN], ["-A", "INPUT", "-j", CHAIN], ["-A", "OUTPUT", "-j", CHAIN]):
                run(["ip", "netns", "exec", h.name, "iptables", *cmd])

    def _make_disk(self, h: Host, base: Path) -> None:
        d = self.dir / h.name
        for sub in ("upper", "work", "root"):
            (d / sub).mkdir(parents=True)
        run(["mount", "-t", "overlay", "overlay", "-o",
             f"lowerdir={base},upperdir={d / 'upper'},workdir={d / 'work'}", str(d / "root")])
        root = d / "root"
        (root / "etc/hostname").write_text(f"{h.name}\n")
        (root / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
        hosts = "".join(f"{x.ip}\t{x.name}\n" for x in self.hosts)
        (root / "etc/hosts").write_text(f"127.0.0.1\tlocalhost\n{self.controller_ip}\tcontroller\n{hosts}")
        ssh_dir = root / "root/.ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        (ssh_dir / "authorized_keys").write_text(self.key.with_suffix(".pub").read_text())
        (ssh_dir / "authorized_keys").chmod(0o600)
        hostkey = root / "etc/ssh/ssh_host_ed25519_key"
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{h.name}", "-f", str(hostkey)])
        (root / "etc/ssh/sshd_config.d/keyval-testhosts-hostkey.conf").write_text(
            "HostKey /etc/ssh/ssh_host_ed25519_key\n")
        pub = hostkey.with_suffix(".pub").read_text().split()
        with open(self.known_hosts, "a") as kh:
            kh.write(f"{h.name},{h.ip} {pub[0]} {pub[1]}\n")

    def _write_client_files(self, inventory_copy: Path | None) -> None:
        opts = {**SSH_OPTIONS, "IdentityFile": str(self.key), "UserKnownHostsFile": str(self.known_hosts)}
        blocks = [f"Host {h.name}\n  HostName {h.ip}\n" + "".join(f"  {k} {v}\n" for k, v in opts.items())
                  for h in self.hosts]
        self.ssh_config.write_text("".join(blocks))
        args = " ".join(f"-o {k}={v}" for k, v in opts.items() if k not in ("User", "IdentityFile", "LogLevel"))
        hosts = "".join(f"        {h.name}:\n          ansible_host: {h.ip}\n" for h in self.hosts)
        text = (f"# Host set {self.prefix}, written by molecule/hosts/testhosts.py; gone after its destroy.\n"
                f"all:\n  children:\n    keyval:\n      hosts:\n{hosts}      vars:\n"
                f"        ansible_user: root\n        ansible_ssh_private_key_file: {self.key}\n"
                f"        ansible_ssh_common_args: \"{args}\"\n"
                f"        ansible_python_interpreter: /usr/bin/python3\n")
        self.inventory.write_text(text)
        if inventory_copy:
            Path(inventory_copy).parent.mkdir(parents=True, exist_ok=True)
            Path(inventory_copy).write_text(text)

    def _wait_stopped(self, name: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.running(name):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        _kill_nspawn(self.dir / name / "pid", 0)  # reap it if it was our child
        return True

    def _console_tail(self, name: str) -> str:
        log = self.dir / name / "console.log"
        lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
        return lines[-1] if lines else "no console output"

    def _cgroups(self, names: list[str] | None = None, all_roots: bool = False) -> list[Path]:
        roots = cgroup_roots() if all_roots else cgroup_roots()[-1:]
        found = []
        for root in roots:
            base = root / CGROUP_DIR / self.prefix
            if names is None:
                found += sorted(p for p in base.glob("*") if p.is_dir()) + ([base] if base.is_dir() else [])
            else:
                found += [base / n for n in names if (base / n).is_dir()]
        return found

    def _mounts(self) -> list[str]:
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4] for line in f]
        return [p for p in points if p.startswith(f"{self.dir}/")]

    def _netns(self) -> list[str]:
        names = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
        return sorted(n for n in names if re.fullmatch(rf"{re.escape(self.prefix)}\d+", n))

    def _links(self) -> list[str]:
        out = run(["ip", "-o", "link", "show"]).stdout
        names = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]
        pattern = rf"{re.escape(self.prefix)}\d+-v|{re.escape(self.bridge)}"
        return [n for n in names if re.fullmatch(pattern, n)]

    def _fw_rules(self) -> list[str]:
        out = run(["iptables", "-S", "FORWARD"], check=False).stdout
        return [line for line in out.splitlines() if self.fw_tag in line]


# --- machine-level helpers -----------------------------------------------------------------

def preflight() -> None:
    """Raise TestHostsError saying what is missing when this machine cannot run test hosts."""
    if os.geteuid() != 0:
        raise TestHostsError("test hosts need root (network namespaces, mounts, cgroups)", "root")
    missing = [t for t in ("debootstrap", "systemd-nspawn", "ip", "iptables", "ssh", "ssh-keygen")
               if not shutil.which(t)]
    if missing:
        raise TestHostsError(f"missing tools: {' '.join(missing)} (run scripts/setup-hosts)", "tools")
    if not Path("/proc/self/ns/net").exists():
        raise TestHostsError("the kernel has no network namespaces", "kernel")
    if "overlay" not in Path("/proc/filesystems").read_text():
        raise TestHostsError("the kernel has no overlayfs", "kernel")
    cgroup_roots()


def cgroup_roots() -> list[Path]:
    """Cgroup hierarchies a host needs its own cgroup in; the cgroup2 one is last."""
    with open("/proc/self/mounts") as f:
        mounts = {fields[1]: (fields[2], fields[3]) for fields in (line.split() for line in f)}
    if mounts.get("/sys/fs/cgroup", ("",))[0] == "cgroup2":
        return [Path("/sys/fs/cgroup")]
    roots = [Path(p) for p, (fs, opts) in mounts.items() if fs == "cgroup" and "name=systemd" in opts]
    roots += [Path(p) for p, (fs, _) in mounts.items() if fs == "cgroup2"]
    if not roots or not roots[-1].exists() or mounts.get(str(roots[-1]), ("",))[0] != "cgroup2":
        raise TestHostsError("no cgroup2 hierarchy mounted (needed to track and kill hosts)", "kernel")
    return roots


def run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        err = (proc.stderr or proc.stdout).strip().splitlines()
        raise TestHostsError(f"{shlex.join(argv)}: {err[-1] if err else f'exit {proc.returncode}'}")
    return proc


def _populated(cg: Path) -> bool:
    try:
        return "populated 1" in (cg / "cgroup.events").read_text()
    except FileNotFoundError:
        return False


def _kill_cgroup(cg: Path) -> None:
    if (cg / "cgroup.kill").exists():
        (cg / "cgroup.kill").write_text("1")
    else:  # kernels before 5.14: kill what is listed until nothing is left
        for procs in cg.rglob("cgroup.procs"):
            for pid in procs.read_text().split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
    deadline = time.monotonic() + 10
    while _populated(cg) and time.monotonic() < deadline:
        time.sleep(0.05)


def _kill_nspawn(pidfile: Path, sig: int) -> None:
    """Reap the systemd-nspawn a pid file names if it was our child; signal it if still running."""
    try:
        pid = int(pidfile.read_text())
    except (FileNotFoundError, ValueError):
        return
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        if sig and b"systemd-nspawn" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, sig)
    except (FileNotFoundError, ProcessLookupError):
        pass


def _rmdir(d: Path) -> None:
    try:
        d.rmdir()
    except OSError:
        pass


# --- command line --------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="testhosts.py", description="KeyVal's systemd-nspawn test hosts.")
    p.add_argument("--prefix", default="kvt", help="host names PREFIX1..N; also names the set (default kvt)")
    p.add_argument("--subnet", default="10.77.0.0/24", help="the set's bridge subnet (default 10.77.0.0/24)")
    p.add_argument("--count", type=int, default=3, help="number of hosts (default 3)")
    p.add_argument("--state-root", type=Path, default=Path("/var/lib/keyval-testhosts"))
    p.add_argument("--cache-dir", type=Path, default=Path("/var/cache/keyval-testhosts"))
    p.add_argument("--mirror", help="Debian mirror for debootstrap (default: the one apt uses)")
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="destroy leftovers, then create and boot all hosts")
    up.add_argument("--inventory", type=Path, help="also write the Ansible inventory here")
    for cmd in ("down", "status", "heal", "rootfs"):
        sub.add_parser(cmd)
    for cmd in ("start", "stop", "crash", "restart", "isolate"):
        sub.add_parser(cmd).add_argument("name")
    part = sub.add_parser("partition")
    part.add_argument("a")
    part.add_argument("b")
    args = p.parse_args(argv)
    hs = HostSet(args.prefix, args.subnet, args.count, state_root=args.state_root,
                 cache_dir=args.cache_dir, mirror=args.mirror)
    try:
        if args.cmd == "up":
            hs.create(inventory_copy=args.inventory)
        elif args.cmd == "down":
            hs.destroy()
        elif args.cmd == "rootfs":
            print(ensure_rootfs(args.cache_dir, args.mirror))
        elif args.cmd == "status":
            if not hs.dir.exists():
                print("\n".join(f"leftover: {x}" for x in hs.leftovers()) or "not created")
            for h in hs.hosts if hs.dir.exists() else []:
                print(f"{h.name}\t{h.ip}\t{'running' if hs.running(h.name) else 'stopped'}")
        elif args.cmd == "heal":
            hs.heal()
        elif args.cmd == "partition":
            hs.partition(args.a, args.b)
        else:
            getattr(hs, args.cmd)(args.name)
    except (TestHostsError, RootfsError) as e:
        print(f"testhosts: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
