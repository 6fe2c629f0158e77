"""Offline recovery when a cluster lost its quorum for good:
``keyval recover --data-dir DIR --force-new-cluster``.

Run on the stopped node with the most complete data. It rewrites the membership so that this
node alone is the voter, keeping every entry and snapshot it holds: one CONFIG entry is
appended after the last entry, in a term above any the node has seen, and the hard state
records it as committed (with everything before it). On its next start the node is a
single-voter cluster: it elects itself and serves. The other members are then added back
as learners with empty data dirs.

What it costs: entries this node held but had not seen committed become committed (the
lost voters can no longer say otherwise), and entries the lost voters committed that never
reached this node are gone. That is why it is an explicit, offline operator action.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from keyval.datadir import DataDirLock
from keyval.errors import ConfigError, KeyvalError
from keyval.raft import NONE, Entry, EntryType, HardState, Membership
from keyval.wire_bounds import MAX_STORED_INT, MAX_WIRE_INT

#: The node id is kept in the data dir so that an offline tool knows whose data it is.
NODE_ID_FILE = "NODE_ID"


def record_node_id(data_dir: str, node_id: str) -> None:
    path = Path(data_dir) / NODE_ID_FILE
    try:
        if path.read_text().strip() == node_id:
            return
    except OSError:
        pass
    tmp = path.with_name(NODE_ID_FILE + ".tmp")
    tmp.write_text(node_id + "\n")
    os.replace(tmp, path)


def recorded_node_id(data_dir: str) -> str | None:
    try:
        return (Path(data_dir) / NODE_ID_FILE).read_text().strip() or None
    except (OSError, UnicodeDecodeError):  # unreadable: the caller asks for --id
        return None


@dataclass(frozen=True)
class Recovery:
    node: str
    old: Membership
    new: Membership
    #: index and term of the new configuration entry
    index: int
    term: int
    previous_term: int
    #: term of the last entry before recovery (to compare survivors)
    last_term: int
    #: what the node knew committed before; entries after it up to ``index`` became committed
    previous_commit: int
    #: nothing was written: what recovery would do
    dry_run: bool = False

    def describe(self) -> list[str]:
        old_learners = ", ".join(sorted(self.old.learners)) or "none"
        if self.dry_run:
            return [f"{self.node} holds entries up to index {self.index - 1} (last term {self.last_term}, "
                    f"commit {self.previous_commit}); voters {', '.join(sorted(self.old.voters))}, "
                    f"learners {old_learners}",
                    "dry run: nothing written; recover the survivor with the highest last term, then index"]
        lines = [
            f"recovered {self.node}: voters were {', '.join(sorted(self.old.voters))} (learners: {old_learners}); "
            f"now {self.node} alone is the voter",
            f"wrote a configuration entry at index {self.index}, term {self.term} (was term {self.previous_term}), "
            f"committed; cluster id {self.old.cluster_id or '(none)'} kept",
        ]
        if self.previous_commit < self.index - 1:
            lines.append(f"entries {self.previous_commit + 1}..{self.index - 1} were not known to be committed; "
                         f"they are kept and are now committed")
        if self.node in self.old.learners:
            lines.append(f"{self.node} was a learner: it may lack the last entries the lost voters had")
        if self.term >= MAX_WIRE_INT or self.index >= MAX_WIRE_INT:
            lines.append(f"warning: term or index is at or above 2**62, more than peers accept: {self.node} "
                         f"serves alone, but no member can be added back (see keyval/wire_bounds.py)")
        lines.append(f"next: start {self.node} as usual (it elects itself), then add the other nodes back "
                     f"as learners with EMPTY data dirs: kvctl cluster add ID ADDR")
        return lines


def force_new_cluster(data_dir: str, open_storage, node_id: str | None = None, dry_run: bool = False) -> Recovery:
    """Make the node whose data is in ``data_dir`` the only voter. ``open_storage(data_dir)``
    opens its storage backend. Refuses (KeyvalError) while a node runs on the data dir.
    ``dry_run``: only say what it would do."""
    lock = DataDirLock(data_dir)
    try:
        lock.acquire()
    except ConfigError as exc:
        raise KeyvalError(f"{exc}; recovery works offline: stop that node first") from None
    try:
        storage = open_storage(data_dir)
        try:
            return _rewrite(storage, data_dir, node_id or recorded_node_id(data_dir), dry_run)
        finally:
            storage.close()
    finally:
        lock.release()


def _rewrite(storage, data_dir: str, node_id: str | None, dry_run: bool) -> Recovery:
    hard_state, snap = storage.initial_state()
    last = storage.last_index()
    if hard_state.term == 0 and snap.index == 0 and last == 0:
        raise KeyvalError(f"data dir {data_dir!r} holds no Raft data (wrong --data-dir or --storage?)")
    watermark, _term = storage.durable_watermark()
    held = max(last, snap.index)
    if watermark > held:
        # A live node re-fetches such entries from its leader; a recovered one would have
        # none to ask, and a new cluster would be born without writes it acknowledged.
        raise KeyvalError(f"data dir {data_dir!r} lost entries {held + 1}..{watermark} to disk damage: recovering "
                          f"from it would drop them; recover from the node whose log is most complete, or "
                          f"restore a backup")
    old = _current_membership(storage, snap.membership)
    if not old.voters:
        raise KeyvalError(f"data dir {data_dir!r} holds no cluster configuration")
    if node_id is None:
        raise KeyvalError(f"cannot tell which node data dir {data_dir!r} belongs to; pass --id "
                          f"(one of {', '.join(sorted(old.members))})")
    if node_id not in old.members:
        raise KeyvalError(f"{node_id} is not a member in this data dir's configuration "
                          f"(voters: {', '.join(sorted(old.voters))}); check --id and --data-dir")
    address = old.address_of(node_id)
    new = Membership(voters=frozenset({node_id}), addresses=((node_id, address),) if address else (),
                     cluster_id=old.cluster_id)
    # A term above any this node saw: no entry of the lost cluster can share (index, term)
    # with the new configuration.
    last_term = storage.term(last)
    term = max(hard_state.term, last_term) + 1
    index = last + 1
    if max(term, index) > MAX_STORED_INT:
        # Nothing a node accepts gets here (keyval/wire_bounds.py): the files were damaged
        # in a way their checksums did not catch, or written by a KeyVal without the bound.
        raise KeyvalError(f"data dir {data_dir!r} holds term {max(hard_state.term, last_term)} and last index "
                          f"{last}: a new entry would not fit in storage (limit 2**63-1); restore this node "
                          f"from a backup or recover another survivor")
    commit = max(hard_state.commit, snap.index)
    if dry_run:
        return Recovery(node_id, old, new, index, term, hard_state.term, last_term, commit, dry_run=True)
    storage.append([Entry(term=term, index=index, type=EntryType.CONFIG, data=new.encode())])
    storage.sync()
    # After the entry is durable: a backend never records a commit beyond what it holds.
    storage.set_hard_state(HardState(term=term, vote=NONE, commit=index))
    storage.sync()
    return Recovery(node_id, old, new, index, term, hard_state.term, last_term, commit)


def _current_membership(storage, membership: Membership) -> Membership:
    """The configuration in force: the last one in the log, else the snapshot's."""
    indexes = storage.config_indexes()
    if not indexes:
        return membership
    (entry,) = storage.entries(indexes[-1], indexes[-1] + 1)
    try:
        return Membership.decode(entry.data)
    except ValueError as exc:
        raise KeyvalError(f"the configuration entry at index {entry.index} is damaged ({exc}); "
                          f"restore this node from a backup or recover another survivor") from None
