"""Fixtures: clusters of real `keyval serve` processes, always taken down afterwards."""
from __future__ import annotations

import pytest

from kvctl_harness import Cluster, free_base_port, take_down


@pytest.fixture
def new_cluster(tmp_path):
    """Start a cluster: ``new_cluster()`` or ``new_cluster(nodes=N)``; taken down afterwards."""
    started: list[Cluster] = []

    def start(nodes: int = 3) -> Cluster:
        started.append(Cluster(tmp_path, free_base_port(), nodes))
        return started[-1].up()

    yield start
    for cluster in started:
        take_down(cluster)


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory):
    """One 3-node cluster for the tests that only read and write keys."""
    cluster = Cluster(tmp_path_factory.mktemp("kvctl"), free_base_port(), 3)
    try:
        yield cluster.up()
    finally:
        take_down(cluster)
