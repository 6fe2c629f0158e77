"""Test tooling KeyVal ships with itself (e.g. the linearizability checker).

Nothing here is imported by the server; it is used by the test suites and by
Jepsen-style harnesses that exercise real clusters.
"""
