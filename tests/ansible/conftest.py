"""Fixtures: one real local cluster (kvctl local up) shared by the module tests, always taken down."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("ansible", reason="ansible-core is not installed (pip install -e '.[ops]')")

# The kvctl tests' harness (clusters in their own dir and port block, always taken down).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "kvctl"))

from kvctl_harness import Cluster, free_base_port, take_down  # noqa: E402


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """A 3-node cluster; nodes 4-6 are free for the membership tests to start and add."""
    c = Cluster(tmp_path_factory.mktemp("ansible-cluster"), free_base_port(), 3)
    try:
        yield c.up()
    finally:
        take_down(c)


@pytest.fixture
def workdir(tmp_path):
    """Where ansible runs: a directory with no .keyval, so kvctl only finds what it is told."""
    return tmp_path
