"""Fixtures: real clusters (kvctl local up) with a background writer, always taken down."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The kvctl tests' harness (clusters in their own dir and port block, always taken down).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "kvctl"))

from kvctl_harness import Cluster, free_base_port, take_down  # noqa: E402


@pytest.fixture
def new_cluster(tmp_path):
    """``new_cluster(nodes=3)``: a local cluster; every node process is gone afterwards."""
    started: list[Cluster] = []

    def start(nodes: int = 3) -> Cluster:
        started.append(Cluster(tmp_path, free_base_port(), nodes))
        return started[-1].up()

    yield start
    for cluster in started:
        take_down(cluster)
