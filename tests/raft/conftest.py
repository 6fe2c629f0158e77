"""Prints the trace of every Cluster a failing scenario built."""
import pytest

from . import harness


@pytest.fixture(autouse=True)
def _fresh_cluster_registry():
    harness.CLUSTERS.clear()
    yield
    harness.CLUSTERS.clear()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        for n, cluster in enumerate(harness.CLUSTERS, 1):
            report.sections.append((f"raft trace (cluster {n}, last 400 lines)", cluster.format_trace(last=400)))
