"""keyval-sqlite against KeyVal's storage conformance suite: every promise of the contract."""
from keyval.testing.storage_conformance import StorageConformance


class TestSqliteConformance(StorageConformance):
    backend = "sqlite"  # found through the entry point, as a node would find it
    snapshot_retention = 2
