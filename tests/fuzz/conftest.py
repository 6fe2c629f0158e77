"""Fuzzing the readers a stranger or a bad disk reaches (segment log, hard state, snapshots,
backup archives, the node config file): any bytes in, only KeyVal's own errors out.

The ``keyval-fuzz`` hypothesis profile makes a run reproducible (``derandomize``: the same
examples every time, no example database) and sized for CI; the tests take it with
``@settings(settings.get_profile("keyval-fuzz"))`` rather than it being loaded for the whole
session, so other folders' hypothesis tests keep their own settings. For a long run set
``KEYVAL_FUZZ_EXAMPLES`` (examples per test), e.g.
``KEYVAL_FUZZ_EXAMPLES=20000 timeout 3h .venv/bin/python -m pytest tests/fuzz -q``.

While a fuzz test runs, the process may not map more than ``ADDRESS_SPACE_MARGIN`` beyond
what it had when the test started: a reader that believes a huge length field fails with
MemoryError — a bug the test reports — instead of taking the machine's memory.
"""
from __future__ import annotations

import os
import resource

import pytest
from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("KEYVAL_FUZZ_EXAMPLES", "300"))
ADDRESS_SPACE_MARGIN = 1 << 30

settings.register_profile(
    "keyval-fuzz",
    derandomize=True,
    deadline=None,
    database=None,
    max_examples=EXAMPLES,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _mapped_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


@pytest.fixture(autouse=True)
def bounded_address_space():
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _mapped_bytes() + ADDRESS_SPACE_MARGIN
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
