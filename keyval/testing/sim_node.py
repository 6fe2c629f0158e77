"""One simulated server: a RaftCore over its MemoryStorage, plus the key-value state machine.

The storage is the disk: it survives a crash. The core and the key-value map are memory: a
crash drops them, and a restart rebuilds both from the storage alone — the core from the
persisted log and hard state, the map from the storage snapshot plus the committed entries
the new core hands out again (it starts with ``applied = 0``, i.e. at the snapshot).
"""
from __future__ import annotations

import json

from keyval.raft import Entry, EntryType, HardState, Membership, MemoryStorage, RaftCore, Ready, Snapshot

from .sim_checks import SafetyViolation


def encode_command(op: str, key: str, value: str | None, client: int, seq: int) -> bytes:
    doc = {"op": op, "key": key, "value": value, "client": client, "seq": seq}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def decode_command(data: bytes) -> dict:
    return json.loads(data)


class SimNode:
    def __init__(self, node_id: str, storage: MemoryStorage) -> None:
        self.id = node_id
        self.storage = storage
        self.core: RaftCore | None = None
        self.incarnation = 0
        #: permanently stopped (removed from the cluster); never restarted
        self.stopped = False
        #: set by the fault injector: (point in the Ready pipeline, expiry time)
        self.crash_point: tuple[str, int] | None = None
        #: the last term in which this node, as leader, advanced its commit index
        self.leader_commits = 0
        #: a commit-only hard state written without fsync: lost if the node crashes first
        self.unsynced_hard_state: HardState | None = None
        #: the Ready whose fsync is running (no new Ready until it advances)
        self.in_flight: Ready | None = None
        self.tick_interval = 10
        # The state machine, as of ``applied``.
        self.kv: dict[str, str] = {}
        self.applied = 0
        self.applied_term = 0
        #: the configuration in force at ``applied`` (what a snapshot at ``applied`` records)
        self.membership = Membership()

    @property
    def alive(self) -> bool:
        return self.core is not None

    def start(self, core: RaftCore) -> None:
        """(Re)start from the storage: the map comes back from the snapshot."""
        self.core = core
        self.incarnation += 1
        snap = self.storage.snapshot
        self.kv, self.applied, self.applied_term = {}, 0, 0
        self.membership = Membership()
        if snap.meta.index > 0:
            self._load_snapshot(snap)

    def crash(self) -> None:
        self.core = None
        self.unsynced_hard_state = None
        self.in_flight = None
        self.crash_point = None
        self.kv = {}
        self.applied = 0
        self.applied_term = 0
        self.membership = Membership()

    # -- the state machine ---------------------------------------------------------------
    def apply_entry(self, entry: Entry) -> None:
        if entry.index != self.applied + 1:
            raise SafetyViolation(
                f"{self.id}: committed entry {entry.index} handed out after applied index {self.applied} "
                "(committed entries must be contiguous)"
            )
        if entry.type is EntryType.CONFIG:
            self.membership = Membership.decode(entry.data)
        elif entry.data:
            cmd = decode_command(entry.data)
            if cmd["op"] == "put":
                self.kv[cmd["key"]] = cmd["value"]
            elif cmd["op"] == "delete":
                self.kv.pop(cmd["key"], None)
        self.applied = entry.index
        self.applied_term = entry.term

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        if snapshot.meta.index <= self.applied:
            raise SafetyViolation(
                f"{self.id}: snapshot at {snapshot.meta.index} handed out for applying, but the state "
                f"machine has already applied {self.applied}"
            )
        self._load_snapshot(snapshot)

    def _load_snapshot(self, snapshot: Snapshot) -> None:
        meta = snapshot.meta
        try:
            doc = json.loads(snapshot.data)
        except ValueError as exc:
            raise SafetyViolation(
                f"{self.id}: snapshot @{meta.index}/t{meta.term} data is corrupt ({exc}): {snapshot.data[:80]!r}"
            ) from None
        if (doc.get("index"), doc.get("term")) != (meta.index, meta.term):
            raise SafetyViolation(
                f"{self.id}: snapshot data was taken at {doc.get('index')}/t{doc.get('term')} but its "
                f"metadata says {meta.index}/t{meta.term}"
            )
        self.kv = dict(doc["kv"])
        self.applied = meta.index
        self.applied_term = meta.term
        self.membership = meta.membership

    def snapshot_data(self) -> bytes:
        doc = {"index": self.applied, "term": self.applied_term, "kv": self.kv}
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    def kv_digest(self) -> str:
        return json.dumps(self.kv, sort_keys=True, separators=(",", ":"))
