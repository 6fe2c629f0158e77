"""Event hooks on a real `keyval serve`: a plugin that raises neither silences the others nor
stops the node, and its failure is logged once per hook, not once per event."""
from __future__ import annotations

import json
import textwrap

from .procs import LocalCluster

# Two third-party plugins, installed as real distributions (found through entry points).
RECORDER = """
    import json, os
    import keyval

    def _record(event, **fields):
        with open(os.environ["KEYVAL_TEST_EVENTS"], "a") as f:
            f.write(json.dumps({"event": event, **fields}) + "\\n")

    @keyval.hookimpl
    def keyval_node_started(node_id, config):
        _record("started", node_id=node_id)

    @keyval.hookimpl
    def keyval_role_changed(node_id, term, role, leader):
        _record("role", node_id=node_id, term=term, role=role, leader=leader)

    @keyval.hookimpl
    def keyval_membership_changed(node_id, term, membership):
        _record("membership", node_id=node_id, voters=sorted(membership.voters))

    @keyval.hookimpl
    def keyval_node_stopping(node_id):
        _record("stopping", node_id=node_id)
"""

EXPLODER = """
    import keyval

    @keyval.hookimpl
    def keyval_node_started(node_id, config):
        raise RuntimeError("exploder: started")

    @keyval.hookimpl
    def keyval_role_changed(node_id, term, role, leader):
        raise RuntimeError("exploder: role " + role)

    @keyval.hookimpl
    def keyval_membership_changed(node_id, term, membership):
        raise RuntimeError("exploder: membership")

    @keyval.hookimpl
    def keyval_node_stopping(node_id):
        raise RuntimeError("exploder: stopping")
"""


def install(site, name: str, module: str, source: str) -> None:
    """A distribution ``name`` 1.0 whose module registers under ``keyval.storage``."""
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[keyval.storage]\n{module} = {module}\n")
    (site / f"{module}.py").write_text(textwrap.dedent(source))


def events(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_raising_plugin_is_contained_and_logged_once(tmp_path, monkeypatch):
    site = tmp_path / "site"
    install(site, "exploder-keyval", "exploder_events", EXPLODER)
    install(site, "recorder-keyval", "recorder_events", RECORDER)
    record = tmp_path / "events.jsonl"
    monkeypatch.setenv("PYTHONPATH", str(site))  # the `keyval serve` child inherits it
    monkeypatch.setenv("KEYVAL_TEST_EVENTS", str(record))
    cluster = LocalCluster(tmp_path, size=1)
    try:
        cluster.start()
        cluster.wait_for_leader()
        with cluster.client() as client:
            client.put("k", "v")
            assert client.get("k") == b"v"
        node = cluster.nodes["n1"]
        assert node.running
        assert node.stop() == 0
    finally:
        cluster.stop_all()

    seen = events(record)
    kinds = [e["event"] for e in seen]
    assert kinds[0] == "started" and kinds[-1] == "stopping", kinds
    assert {"node_id": "n1", "voters": ["n1"], "event": "membership"} in seen
    roles = [e["role"] for e in seen if e["event"] == "role"]
    assert roles[-1] == "leader" and len(roles) >= 2, roles  # the exploder failed each time

    log = cluster.nodes["n1"].log()
    failures = [line for line in log.splitlines() if "exploder" in line and "failed in" in line]
    hooks = sorted(line.split("failed in ")[1].split(":")[0] for line in failures)
    assert hooks == ["keyval_membership_changed", "keyval_node_started", "keyval_node_stopping",
                     "keyval_role_changed"], log
    assert "plugin 'exploder_events' (package exploder-keyval 1.0) failed in keyval_role_changed: " \
           "RuntimeError: exploder: role " in log
    assert "Traceback" not in log

