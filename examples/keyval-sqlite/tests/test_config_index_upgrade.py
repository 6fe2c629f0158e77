"""A database written before the ``log_config`` index existed still answers config_indexes."""
import os
import sqlite3

from keyval.raft.types import Entry, EntryType, Membership
from keyval_sqlite.storage import SqliteStorage


def test_a_database_without_the_config_index_gets_it_on_open(tmp_path):
    store = SqliteStorage(str(tmp_path))
    members = Membership(frozenset({"n1"})).encode()
    store.append([Entry(1, i, EntryType.CONFIG if i in (1, 7) else EntryType.NORMAL, members) for i in range(1, 11)])
    store.close()
    path = os.path.join(tmp_path, "keyval.sqlite3")
    db = sqlite3.connect(path)
    db.execute("DROP INDEX log_config")  # as the schema of keyval-sqlite 0.1.0 left it
    db.commit()
    db.close()

    store = SqliteStorage(str(tmp_path))
    try:
        assert store.config_indexes() == [1, 7]
        plan = store._db.execute("EXPLAIN QUERY PLAN SELECT idx FROM log WHERE type = 1 AND idx > 0 ORDER BY idx")
        assert "log_config" in " ".join(str(row) for row in plan)
    finally:
        store.close()
