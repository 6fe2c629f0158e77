"""keyval-sqlite: a KeyVal storage plugin that keeps the Raft log in one SQLite file."""
