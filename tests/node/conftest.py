import pytest

from .procs import LocalCluster


@pytest.fixture
def cluster(tmp_path):
    """Three real `keyval serve` processes on loopback (two spare nodes to add)."""
    c = LocalCluster(tmp_path)
    c.start()
    yield c
    c.stop_all()
