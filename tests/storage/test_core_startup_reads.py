"""The core opens over a long segment log without reading it: only its configuration entries.

At startup the core needs the configuration in force at the commit index and every
configuration entry above it (``RaftCore.__init__``, ``Storage.config_indexes``). These tests
count the entries it reads through a thin wrapper around a real segment store, and open a
data dir written by release 0.2.0 — the code before ``config_indexes`` existed, extracted
with ``git archive`` and run from source — to check that it gives the same membership.
"""
from __future__ import annotations

import io
import json
import random
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from keyval.raft import RaftCore
from keyval.raft.config import RaftConfig
from keyval.raft.types import Membership
from keyval_plugins.storage.segment.storage import SegmentStorage

# Release 0.2.0 as it stood before config_indexes: named by commit, like tests/node's 0.1.0.
RELEASE_0_2_0 = "fee4ad01b460b2d68e08563d541c202b043e1a1f"
REPO = Path(__file__).resolve().parents[2]
LAST = 20_000

# Runs as is under either tree: writes a long log through SegmentStorage with configuration
# entries at 1 (bootstrap), 9000 and 19990, a truncated one at 19995 and a snapshot at 5000;
# then opens it again and prints what the core of that tree makes of it.
WRITER = """
import json, random, sys
from keyval_plugins.storage.segment.storage import SegmentStorage
from keyval.raft import RaftCore
from keyval.raft.config import RaftConfig
from keyval.raft.types import Entry, EntryType, HardState, Membership

def members(*voters):
    return Membership(frozenset(voters), cluster_id="c1")

def write(data_dir, last):
    configs = {1: members("n1", "n2", "n3"), 9000: members("n1", "n2", "n3", "n4"),
               19990: members("n1", "n2", "n4"), 19995: members("n1")}
    store = SegmentStorage(data_dir)
    def entry(i, term):
        if i in configs:
            return Entry(term, i, EntryType.CONFIG, configs[i].encode())
        return Entry(term, i, EntryType.NORMAL, b"v%d" % i)
    for lo in range(1, last + 1, 1000):
        store.append([entry(i, 1) for i in range(lo, min(lo + 1000, last + 1))])
    store.sync()
    store.create_snapshot(5000, configs[1], b"state at 5000")
    store.compact(5000)
    # A new leader's entries replace 19992.. : the configuration at 19995 is gone again.
    store.append([Entry(2, i, EntryType.NORMAL, b"w") for i in range(19992, last + 1)])
    store.set_hard_state(HardState(2, "n1", 19000))
    store.close()

def core_view(data_dir):
    store = SegmentStorage(data_dir)
    core = RaftCore(RaftConfig("n1"), store, random.Random(1))
    view = {"latest": core.membership.encode().decode(),
            "committed": core._committed_membership().encode().decode()}
    store.close()
    return view

if __name__ == "__main__":
    write(sys.argv[1], int(sys.argv[2]))
    print(json.dumps(core_view(sys.argv[1])))
"""


class CountingStorage:
    """A real storage, forwarded, counting the entries the core reads from it."""

    def __init__(self, inner) -> None:
        self._inner = inner
        self.read: list[int] = []

    def entries(self, lo, hi, max_bytes=None):
        got = self._inner.entries(lo, hi, max_bytes)
        self.read += [e.index for e in got]
        return got

    def __getattr__(self, name):
        return getattr(self._inner, name)


def members(*voters: str) -> Membership:
    return Membership(frozenset(voters), cluster_id="c1")


def write_with_this_tree(data_dir: Path) -> None:
    namespace: dict = {"__name__": "writer"}
    exec(WRITER, namespace)  # noqa: S102 - the same writer the 0.2.0 tree runs
    namespace["write"](str(data_dir), LAST)


def open_core(data_dir: Path) -> tuple[RaftCore, CountingStorage]:
    store = CountingStorage(SegmentStorage(str(data_dir)))
    return RaftCore(RaftConfig("n1"), store, random.Random(1)), store


def test_opening_a_long_log_reads_only_the_configurations_it_needs(tmp_path):
    write_with_this_tree(tmp_path)
    core, store = open_core(tmp_path)
    try:
        # 9000 is the newest configuration at or below commit 19000; 1 is older (and
        # compacted away besides); 19990 is above the commit; 19995 was truncated.
        assert store.read == [9000, 19990]
        assert core.membership == members("n1", "n2", "n4")
        assert core._committed_membership() == members("n1", "n2", "n3", "n4")
        assert core.status().last_index == LAST
    finally:
        store.close()


def test_a_truncation_after_a_partial_load_goes_back_to_the_committed_configuration(tmp_path):
    from keyval.raft import messages as m
    from keyval.raft.types import Entry

    write_with_this_tree(tmp_path)
    core, store = open_core(tmp_path)
    try:
        # A leader of term 3 whose log diverges from ours after 19500: the uncommitted
        # configuration at 19990 goes, and the one loaded from 9000 is in force again.
        core.step(m.AppendEntries(3, "n2", "n1", 19500, 1, (Entry(3, 19501, data=b"x"),), 19000))
        assert core.membership == members("n1", "n2", "n3", "n4")
    finally:
        store.close()


@pytest.fixture(scope="module")
def release_tree(tmp_path_factory) -> Path:
    """The 0.2.0 source tree. Missing git or the commit fails the test: it must not vanish."""
    git = shutil.which("git")
    if git is None:
        pytest.fail(f"this test needs `git` to extract {RELEASE_0_2_0} (release 0.2.0)")
    archive = subprocess.run([git, "-C", str(REPO), "archive", "--format=tar", RELEASE_0_2_0, "keyval", "plugins"],
                             capture_output=True)
    if archive.returncode != 0:
        pytest.fail(f"commit {RELEASE_0_2_0} (release 0.2.0) is not in {REPO}: {archive.stderr.decode()}")
    tree = tmp_path_factory.mktemp("keyval-0.2.0")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(tree, filter="data")
    assert '__version__ = "0.2.0"' in (tree / "keyval" / "__init__.py").read_text()
    assert "config_indexes" not in (tree / "plugins" / "storage" / "segment" / "storage.py").read_text()
    # WRITER imports keyval_plugins; 0.2.0's built-ins were the top-level plugins/. Without
    # this link it would write with this tree's segment storage (found through the install).
    (tree / "keyval_plugins").symlink_to("plugins", target_is_directory=True)
    return tree


def test_a_data_dir_written_by_0_2_0_opens_with_the_same_membership(tmp_path, release_tree):
    data_dir = tmp_path / "data"
    done = subprocess.run([sys.executable, "-c", WRITER, str(data_dir), str(LAST)], cwd=release_tree,
                          env={"PYTHONPATH": str(release_tree), "PATH": ""}, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    old_view = json.loads(done.stdout)  # what 0.2.0's core, reading the whole log, found
    core, store = open_core(data_dir)
    try:
        assert core.membership == Membership.decode(old_view["latest"].encode()) == members("n1", "n2", "n4")
        assert core._committed_membership() == Membership.decode(old_view["committed"].encode())
        assert store.read == [9000, 19990]
    finally:
        store.close()
