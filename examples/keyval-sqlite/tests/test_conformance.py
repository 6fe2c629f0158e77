"""keyval-sqlite against KeyVal's storage conformance suite: every promise of the contract."""
import os
import sqlite3

from keyval.testing.storage_conformance import StorageConformance


class TestSqliteConformance(StorageConformance):
    backend = "sqlite"  # found through the entry point, as a node would find it
    snapshot_retention = 2

    def corrupt_newest_snapshot(self, data_dir):
        # Damage the stored bytes behind the plugin's back; its checksum must catch it.
        db = sqlite3.connect(os.path.join(data_dir, "keyval.sqlite3"))
        with db:
            db.execute("UPDATE snapshots SET data = CAST(upper(data) AS BLOB) WHERE rowid = "
                       "(SELECT rowid FROM snapshots ORDER BY idx DESC, term DESC LIMIT 1)")
        db.close()

    def corrupt_log(self, data_dir):
        # A bad block: one page in the middle of the database file turned to garbage.
        path = os.path.join(data_dir, "keyval.sqlite3")
        page = 4096  # SQLite's default page size
        middle = os.path.getsize(path) // page // 2 * page
        with open(path, "r+b") as f:
            f.seek(middle)
            f.write(b"\xa5" * page)
