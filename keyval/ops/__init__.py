"""What an operator runs on a cluster beyond reads and writes.

``admin`` is the table of named operations kvctl asks a node for (membership in
``keyval.cluster`` and ``maintenance`` here add to it); ``maintenance`` serves snapshots,
compaction, backups and restores; ``backup`` is the archive format ``kvctl backup`` writes;
``recover`` the offline ``keyval recover`` for a cluster that lost its quorum for good.
"""
