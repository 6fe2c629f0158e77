"""KeyVal's pytest plugin: failing conformance checks show the values they compared.

pytest rewrites ``assert`` statements (to report ``assert 58 >= 60`` with both sides) only
in test modules, conftest files and plugins. The conformance checks live in this package,
imported by the test module that subclasses them, so they are registered for rewriting
here, before any test module imports them. pytest loads this module by itself once KeyVal
is installed, through the ``pytest11`` entry point named ``keyval`` (``-p no:keyval`` turns
it off; ``-p keyval.testing.pytest_plugin`` loads it where entry points are not used).
"""
import pytest

#: The modules whose asserts are the checks; registering must come before their import.
CHECK_MODULES = (
    "keyval.testing.storage_conformance",
    "keyval.testing.storage_common",
    "keyval.testing.storage_log_checks",
    "keyval.testing.storage_snapshot_checks",
    "keyval.testing.storage_config_checks",
    "keyval.testing.storage_concurrency_checks",
    "keyval.testing.storage_durability_checks",
    "keyval.testing.storage_damage_checks",
    "keyval.testing.storage_power_checks",
    "keyval.testing.crash",
    "keyval.testing.power_loss",
    "keyval.testing.transport_conformance",
)

pytest.register_assert_rewrite(*CHECK_MODULES)
