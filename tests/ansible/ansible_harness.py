"""Running the keyval.cluster modules for real: `ansible` ad-hoc (and `ansible-playbook`) on
localhost with a local connection, against real `keyval serve` processes."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = ROOT / "ansible"
BIN = Path(sys.executable).parent  # the venv's ansible, ansible-playbook and kvctl
KVCTL = str(BIN / "kvctl")
RESULT = re.compile(r"^localhost \| (SUCCESS|CHANGED|FAILED!|UNREACHABLE!) => ", re.M)


@dataclass
class Run:
    rc: int  # ansible's exit code
    status: str  # SUCCESS, CHANGED or FAILED!
    result: dict  # the module's result as ansible printed it
    stdout: str
    stderr: str

    @property
    def failed(self) -> bool:
        return self.status == "FAILED!"

    @property
    def changed(self) -> bool:
        return bool(self.result.get("changed"))


def environment(workdir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "KVCTL_"))}
    env.update(ANSIBLE_CONFIG=str(ANSIBLE_DIR / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
               ANSIBLE_LOCAL_TEMP=str(workdir / "ansible-tmp"), ANSIBLE_REMOTE_TEMP=str(workdir / "ansible-tmp"))
    env.update(extra or {})
    return env


def module(name: str, args: dict, workdir: Path, *, check: bool = False, diff: bool = False,
           kvctl: str | None = KVCTL, env: dict[str, str] | None = None, timeout: float = 120) -> Run:
    """Run keyval.cluster.NAME once through `ansible localhost -m`; its parsed result."""
    if kvctl is not None:
        args = {"kvctl_path": kvctl, **args}
    argv = [str(BIN / "ansible"), "localhost", "-c", "local", "-m", f"keyval.cluster.{name}", "-a", json.dumps(args)]
    argv += ["--check"] * check + ["--diff"] * diff
    proc = subprocess.run(argv, cwd=workdir, env=environment(workdir, env), capture_output=True, text=True,
                          timeout=timeout)
    found = RESULT.search(proc.stdout)
    assert found, f"no result from ansible (exit {proc.returncode})\n{proc.stdout}\n{proc.stderr}"
    result, _ = json.JSONDecoder().raw_decode(proc.stdout, found.end())
    return Run(proc.returncode, found.group(1), result, proc.stdout, proc.stderr)


def write_play(workdir: Path, tasks: list[dict], name: str = "play.yml") -> Path:
    """A one-play playbook on localhost (JSON is YAML)."""
    path = workdir / name
    path.write_text(json.dumps([{"name": "keyval modules", "hosts": "localhost", "gather_facts": False,
                                 "tasks": tasks}], indent=2))
    return path


def playbook(path: Path, workdir: Path, *options: str, timeout: float = 180) -> subprocess.CompletedProcess:
    argv = [str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", "-e",
            f"ansible_python_interpreter={sys.executable}", str(path), *options]
    return subprocess.run(argv, cwd=workdir, env=environment(workdir), capture_output=True, text=True,
                          timeout=timeout)


def recap(output: str) -> dict[str, int]:
    """The PLAY RECAP counts for localhost: {'ok': 2, 'changed': 1, ...}."""
    line = re.search(r"^localhost\s+:\s+(.*)$", output, re.M)
    assert line, output
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line.group(1))}
