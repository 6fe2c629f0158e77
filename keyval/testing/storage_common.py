"""What the storage checks share: entries that name themselves, and a membership to store."""
from __future__ import annotations

from keyval.raft.storage import StorageError
from keyval.raft.types import Entry, Membership

MEMBERS = Membership(frozenset({"n1", "n2", "n3"}), frozenset({"n4"}), (("n1", "127.0.0.1:7001"),), "cluster-1")
OTHER_MEMBERS = Membership(frozenset({"n1"}), cluster_id="cluster-1")
#: What a bad index may raise: the contract names the error for reads, not for writes.
BAD_INDEX = (ValueError, StorageError)


def entry(index: int, term: int = 1, size: int = 8) -> Entry:
    """An entry whose data says which (index, term) it is, so a mixed-up read shows."""
    label = f"{index}/{term};".encode()
    return Entry(term=term, index=index, data=(label * (size // len(label) + 1))[:size] if size else b"")


def run(lo: int, hi: int, term: int = 1, size: int = 8) -> list[Entry]:
    """Entries ``lo..hi`` inclusive, all of ``term``."""
    return [entry(i, term, size) for i in range(lo, hi + 1)]


def chunks_of(data: bytes, size: int = 1000):
    return (data[i : i + size] for i in range(0, len(data), size))



def assert_as_declared(entries, where: str) -> None:
    """Every field of every entry has the type ``Entry`` declares. An ``int`` type compares
    equal to ``EntryType.NORMAL`` and a ``memoryview`` to the bytes it shows, so equality
    alone lets them through; the core tests ``entry.type is EntryType.CONFIG`` and hands data
    on as bytes (encoders, the state machine), so they break a node later, far from here."""
    for e in entries:
        got = (type(e.term).__name__, type(e.index).__name__, type(e.type).__name__, type(e.data).__name__)
        assert got == ("int", "int", "EntryType", "bytes"), (
            f"{where}: entry {e.index} has (term, index, type, data) of types {got}, "
            f"not (int, int, EntryType, bytes)")
