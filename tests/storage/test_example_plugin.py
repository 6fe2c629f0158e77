"""The worked example, examples/keyval-sqlite, treated like any third-party plugin: installed
with pip, found by `keyval plugins`, passing the conformance suite, and running a real node."""
from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "keyval-sqlite"
BIN = Path(sys.executable).parent


def installed_from_this_checkout() -> bool:
    # Asked in a fresh interpreter: this one may have cached metadata from before an install.
    probe = ("import importlib.metadata as m, keyval_sqlite; m.distribution('keyval-sqlite'); "
             "print(keyval_sqlite.__file__)")
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd="/")
    return found.returncode == 0 and Path(found.stdout.strip()).resolve().is_relative_to(EXAMPLE)


@pytest.fixture(scope="session")
def sqlite_plugin() -> Path:
    """examples/keyval-sqlite pip-installed (editable) into the venv running the tests."""
    if not installed_from_this_checkout():
        pip = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-e", str(EXAMPLE)],
                             capture_output=True, text=True, timeout=600)
        if pip.returncode != 0:
            pytest.fail(f"pip install -e {EXAMPLE} failed:\n{pip.stdout[-2000:]}{pip.stderr[-2000:]}")
    assert installed_from_this_checkout()
    return EXAMPLE


# In docs/plugins.md a file is shown as **`keyval-sqlite/PATH`** (maybe "(excerpt: ...)")
# followed by a fenced code block.
DOC_BLOCK = re.compile(r"^\*\*`keyval-sqlite/([^`]+)`\*\*( \(excerpt[^)]*\))?\n\n```\w*\n(.*?)^```$", re.M | re.S)


def test_the_guide_shows_the_example_line_for_line():
    blocks = DOC_BLOCK.findall((ROOT / "docs" / "plugins.md").read_text())
    shown = {path for path, _, _ in blocks}
    assert {"pyproject.toml", "keyval_sqlite/plugin.py", "tests/test_conformance.py",
            "keyval_sqlite/storage.py"} <= shown
    for path, excerpt, code in blocks:
        source = (EXAMPLE / path).read_text()
        if excerpt:
            assert code in source, f"docs/plugins.md shows lines of {path} that are not in the example"
        else:
            assert code == source, f"docs/plugins.md shows {path} differently from the example"


def test_keyval_plugins_lists_sqlite_from_its_package(sqlite_plugin):
    listed = subprocess.run([str(BIN / "keyval"), "plugins", "--json"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    doc = json.loads(listed.stdout)
    rows = [r for r in doc["plugins"] if r["kind"] == "storage" and r["name"] == "sqlite"]
    assert len(rows) == 1, doc
    assert rows[0]["package"] == "keyval-sqlite" and rows[0]["version"] == "0.1.0"
    assert not [f for f in doc["failures"] if "keyval-sqlite" in f]


def test_the_example_passes_the_conformance_suite(sqlite_plugin):
    ran = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=sqlite_plugin,
                         capture_output=True, text=True, timeout=600)
    summary = ran.stdout.strip().splitlines()[-1] if ran.stdout.strip() else ran.stderr
    assert ran.returncode == 0, ran.stdout[-4000:] + ran.stderr[-2000:]
    # Every check ran: the example is persistent and can damage its own snapshots.
    assert re.fullmatch(r"\d+ passed in [\d.]+s", summary), summary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    def __init__(self, data_dir: Path) -> None:
        self.peer, self.client = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        self.data_dir = data_dir
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.log = open(self.data_dir.parent / "node.log", "ab")
        self.proc = subprocess.Popen(
            [str(BIN / "keyval"), "serve", "--id", "n1", "--peer-addr", self.peer, "--client-addr", self.client,
             "--data-dir", str(self.data_dir), "--bootstrap", f"n1={self.peer}", "--storage", "sqlite"],
            stdout=self.log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def kvctl(self, *args: str, retry_for: float = 20.0) -> subprocess.CompletedProcess:
        """Run kvctl against this node, retrying while no leader answers yet (exit 3)."""
        deadline = time.monotonic() + retry_for
        while True:
            done = subprocess.run([str(BIN / "kvctl"), "--endpoints", self.client, "--timeout", "3", *args],
                                  capture_output=True, text=True, timeout=60)
            if done.returncode != 3 or time.monotonic() > deadline:
                return done
            assert self.proc.poll() is None, (self.data_dir.parent / "node.log").read_text()
            time.sleep(0.2)


def test_a_real_node_runs_on_sqlite_and_keeps_its_data(sqlite_plugin, tmp_path):
    node = Node(tmp_path / "data")
    node.start()
    try:
        put = node.kvctl("put", "greeting", "hello from sqlite")
        assert put.returncode == 0, put.stderr + (tmp_path / "node.log").read_text()
    finally:
        node.stop()
    assert node.proc.returncode == 0, (tmp_path / "node.log").read_text()
    assert (tmp_path / "data" / "keyval.sqlite3").exists()
    node.start()  # same data dir: the value must come back from the SQLite log
    try:
        got = node.kvctl("get", "greeting")
        assert (got.returncode, got.stdout.strip()) == (0, "hello from sqlite"), got.stderr
    finally:
        node.stop()
