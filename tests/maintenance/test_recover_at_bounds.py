"""`keyval recover --force-new-cluster` on data dirs at the codec's bound and on damaged ones:
it works on anything a node accepted, and anything else is one line, never a traceback."""
import shutil

import pytest
from click.testing import CliRunner

from keyval.cli import cli
from keyval.plugin_api.loading import build_plugin_manager, choose_storage
from keyval.raft import Entry, EntryType, HardState, Membership, Snapshot, SnapshotMeta
from keyval.ops.recover import record_node_id
from keyval.wire_bounds import MAX_WIRE_INT as B
from keyval_plugins.storage.segment import hardstate

MEMBERS = Membership(frozenset({"n1", "n2", "n3"}), addresses=(("n2", "127.0.0.1:7002"),), cluster_id="abc")


def open_segment(data_dir):
    return choose_storage(build_plugin_manager(), "segment").factory(str(data_dir), {})


def append(data_dir, *entries):
    storage = open_segment(data_dir)
    storage.append(list(entries))
    storage.sync()
    storage.close()


@pytest.fixture
def at_bound(tmp_path):
    """n2's data as a node leaves it after accepting the largest term and index peers may
    send: a snapshot, then entries up to index 2**62-1 in term 2**62-1."""
    path = tmp_path / "n2"
    storage = open_segment(path)
    storage.apply_snapshot(Snapshot(SnapshotMeta(B - 4, B - 3, MEMBERS), b""))
    storage.append([Entry(B - 2, B - 3, EntryType.NORMAL, b"x"), Entry(B - 1, B - 2, EntryType.CONFIG, MEMBERS.encode()),
                    Entry(B - 1, B - 1, EntryType.NORMAL, b"y")])
    storage.sync()
    storage.set_hard_state(HardState(B - 1, "n1", B - 2))
    storage.sync()
    storage.close()
    record_node_id(str(path), "n2")
    return path


def recover(data_dir):
    return CliRunner().invoke(cli, ["recover", "--data-dir", str(data_dir), "--force-new-cluster"])


def test_recover_works_at_the_bound(at_bound):
    result = recover(at_bound)
    assert result.exit_code == 0, result.output
    assert "now n2 alone is the voter" in result.output
    assert "warning: term or index is at or above 2**62" in result.output
    storage = open_segment(at_bound)
    try:
        hard_state, _ = storage.initial_state()
        assert hard_state == HardState(B, "", B)
        (config,) = storage.entries(B, B + 1)
        assert config.type is EntryType.CONFIG and config.term == B
        assert Membership.decode(config.data).voters == {"n2"}
        assert [e.data for e in storage.entries(B - 3, B)][::2] == [b"x", b"y"]
    finally:
        storage.close()
    # ... and a second recovery of the recovered dir still fits in storage.
    assert recover(at_bound).exit_code == 0


def _hard_state_term(path, term):
    (path / "hardstate").write_bytes(hardstate.encode(HardState(term, "n1", 5)))


DAMAGE = {
    "garbage hard state": lambda p: (p / "hardstate").write_bytes(b"\x00garbage!"),
    "short hard state": lambda p: (p / "hardstate").write_bytes((p / "hardstate").read_bytes()[:20]),
    "hard state term 2**63-1": lambda p: _hard_state_term(p, 2**63 - 1),
    "hard state term 2**64-1": lambda p: _hard_state_term(p, 2**64 - 1),
    "entry term 2**63-1": lambda p: append(p, Entry(2**63 - 1, B, EntryType.NORMAL, b"z")),
    "CONFIG entry that is not JSON": lambda p: append(p, Entry(B - 1, B, EntryType.CONFIG, b"junk")),
    "CONFIG entry that is a JSON list": lambda p: append(p, Entry(B - 1, B, EntryType.CONFIG, b"[1]")),
    "snapshot file damaged": lambda p: [f.write_bytes(b"7 bytes") for f in (p / "snapshots").iterdir()],
    "segment renamed": lambda p: [f.rename(f.with_name("00000000000000000001.seg")) for f in (p / "log").iterdir()],
    "NODE_ID not text, no --id": lambda p: (p / "NODE_ID").write_bytes(b"\xff\xfe"),
    "log is a file": lambda p: (shutil.rmtree(p / "log"), (p / "log").write_text("x")),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_data_dir_is_one_line(at_bound, damage):
    DAMAGE[damage](at_bound)
    result = recover(at_bound)
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)  # not an exception escaping the command
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(("keyval recover: ", "cli recover: ")), result.output
    assert "Traceback" not in result.output
