"""Fuzzing the readers a stranger or a bad disk reaches (segment log, hard state, snapshots,
backup archives, the node config file): any bytes in, only KeyVal's own errors out.

The ``keyval-fuzz`` hypothesis profile makes a run reproducible (``derandomize``: the same
examples every time, no example database) and sized for CI; the tests take it with
``@settings(settings.get_profile("keyval-fuzz"))`` rather than it being loaded for the whole
session, so other folders' hypothesis tests keep their own settings. For a long run set
``KEYVAL_FUZZ_EXAMPLES`` (examples per test), e.g.
``KEYVAL_FUZZ_EXAMPLES=20000 timeout 3h .venv/bin/python -m pytest tests/fuzz -q``.

Each reader call is bounded in time and memory (``fuzz_mutations.within``): a reader that
loops fails with Hang, one that believes a huge length field with MemoryError — bugs the
test reports — instead of taking the machine's memory.
"""
from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("KEYVAL_FUZZ_EXAMPLES", "300"))

settings.register_profile(
    "keyval-fuzz",
    derandomize=True,
    deadline=None,
    database=None,
    max_examples=EXAMPLES,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

