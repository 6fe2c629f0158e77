"""The guide's shell scripts, as written, on a real cluster under writes: the monitor script
and the rolling upgrade (with jq; the upgrade itself simulated by restarting the node)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cluster_harness import Writer, members
from kvctl_harness import ok

# In CI a missing jq is a setup failure (scripts/setup installs it), not a reason to skip.
pytestmark = pytest.mark.skipif(shutil.which("jq") is None and not os.environ.get("CI"), reason="the guide's scripts need jq")

GUIDE = Path(__file__).resolve().parents[3] / "shared" / "spec" / "operations-guide.md"

MONITOR = """#!/bin/bash
# monitor-cluster.sh

while true; do
  echo "=== Cluster Health ==="
  kvctl cluster health

  echo -e "\\n=== Cluster Members ==="
  kvctl cluster members

  echo -e "\\n=== Leader ==="
  kvctl cluster leader

  sleep 30
done
"""

ROLLING_UPGRADE = """#!/bin/bash
# rolling-upgrade.sh

NODES=("node1" "node2" "node3")

for node in "${NODES[@]}"; do
  echo "Upgrading $node..."

  # Transfer leadership if this is the leader
  leader=$(kvctl cluster leader --json | jq -r '.id')
  if [ "$leader" == "$node" ]; then
    # Find another node to transfer to
    target=$(kvctl cluster members --json | jq -r '.[0].id | select(. != "'$node'")')
    kvctl cluster transfer $target
    sleep 5
  fi

  # Remove node
  kvctl cluster remove $node

  # Upgrade the node (external process)
  upgrade-node $node

  # Add back as learner
  address=$(get-node-address $node)
  kvctl cluster add $node $address

  # Wait for promotion
  while ! kvctl cluster member $node --json | jq -e '.type == "Voter"' > /dev/null; do
    sleep 2
  done

  echo "$node upgraded and promoted"
  sleep 10
done

echo "Rolling upgrade complete!"
"""

# Stand-ins for what the guide leaves to the operator.
TOOLS = {
    # The upgrade, simulated: the removed node stops by itself; start it again, with its data.
    "upgrade-node": """#!/bin/sh
while kvctl local status --json | jq -e --arg n "$1" '.[] | select(.id == $n) | .running' >/dev/null; do
  /bin/sleep 0.2
done
kvctl local start "$1" >/dev/null
""",
    "get-node-address": """#!/bin/sh
kvctl local status --json | jq -r --arg n "$1" '.[] | select(.id == $n) | .peer_address'
""",
    # The scripts' pauses, shortened so the test stays quick.
    "sleep": "#!/bin/sh\nexec /bin/sleep 0.2\n",
}


def guide_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", GUIDE.read_text(), re.S) if GUIDE.exists() else []


@pytest.mark.skipif(not GUIDE.exists(), reason="the operations guide (shared/spec) is not beside the repo")
def test_the_scripts_here_are_the_guides():
    blocks = guide_blocks()
    assert MONITOR in blocks and ROLLING_UPGRADE in blocks


def tools(tmp_path: Path, overrides: dict[str, str]) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in {**TOOLS, **overrides}.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "KVCTL_ENDPOINTS"}
    # kvctl from this Python's environment, then the stand-ins in front of everything.
    env["PATH"] = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def run_script(c, tmp_path: Path, name: str, text: str, overrides: dict[str, str], timeout: float):
    script = tmp_path / name
    script.write_text(text)
    return subprocess.run(["bash", str(script)], cwd=c.cwd, env=tools(tmp_path, overrides), capture_output=True,
                          text=True, timeout=timeout)


def test_monitor_and_rolling_upgrade_scripts(new_cluster, tmp_path):
    c = new_cluster()
    with Writer([c.endpoint(n) for n in range(1, 4)]) as writer:
        # One round of the monitor: its `sleep 30` ends the script here.
        monitor = run_script(c, tmp_path, "monitor-cluster.sh", MONITOR, {"sleep": "#!/bin/sh\nkill -TERM $PPID\n"}, 60)
        out = monitor.stdout
        assert "=== Cluster Health ===\nStatus:          Healthy\n" in out, monitor.stderr
        assert "=== Cluster Members ===\nID " in out and "=== Leader ===\nLeader:" in out
        assert monitor.stderr == ""

        upgrade = run_script(c, tmp_path, "rolling-upgrade.sh", ROLLING_UPGRADE, {}, 180)
        assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
        for node in ("node1", "node2", "node3"):
            assert f"Upgrading {node}...\n" in upgrade.stdout and f"{node} upgraded and promoted\n" in upgrade.stdout
        assert upgrade.stdout.endswith("Rolling upgrade complete!\n"), upgrade.stdout
        assert upgrade.stderr == "", upgrade.stderr
        final = members(c)
        assert sorted(final) == ["node1", "node2", "node3"]
        assert all(m["type"] == "Voter" and m["healthy"] for m in final.values())
        assert ok(c.kvctl("cluster", "health")).returncode == 0
        assert writer.check() > 0
