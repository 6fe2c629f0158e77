"""`keyval recover --force-new-cluster` on a real segment data dir, without processes."""
import random

import pytest
from click.testing import CliRunner

from keyval.cli import cli
from keyval.datadir import DataDirLock
from keyval.errors import KeyvalError
from keyval.plugin_api.loading import build_plugin_manager, choose_storage
from keyval.raft import (
    Entry,
    EntryType,
    HardState,
    Membership,
    RaftConfig,
    RaftCore,
    Role,
    bootstrap_state,
)
from keyval.ops.recover import force_new_cluster, record_node_id

ADDRESSES = {"n1": "127.0.0.1:7001", "n2": "127.0.0.1:7002", "n3": "127.0.0.1:7003", "n4": "127.0.0.1:7004"}


def open_segment(data_dir):
    return choose_storage(build_plugin_manager(), "segment").factory(str(data_dir), {})


def three_voters(learners=()) -> Membership:
    members = {"n1", "n2", "n3", *learners}
    return Membership(voters=frozenset({"n1", "n2", "n3"}), learners=frozenset(learners),
                      addresses=tuple(sorted((n, ADDRESSES[n]) for n in members)), cluster_id="abc123")


@pytest.fixture
def data_dir(tmp_path):
    """n2's data: bootstrap config, writes, a learner added at index 10, commit at 15 of 20."""
    path = tmp_path / "n2"
    storage = open_segment(path)
    _, entries = bootstrap_state(three_voters())
    entries += [Entry(term=2, index=i, data=b"write %d" % i) for i in range(2, 10)]
    entries.append(Entry(term=2, index=10, type=EntryType.CONFIG, data=three_voters(["n4"]).encode()))
    entries += [Entry(term=2, index=i, data=b"write %d" % i) for i in range(11, 21)]
    storage.append(entries)
    storage.sync()
    storage.set_hard_state(HardState(term=4, vote="n1", commit=15))
    storage.close()
    record_node_id(str(path), "n2")
    return path


def test_the_node_becomes_the_only_voter_keeping_every_entry(data_dir):
    recovery = force_new_cluster(str(data_dir), open_segment)
    assert (recovery.node, recovery.index, recovery.term, recovery.previous_commit) == ("n2", 21, 5, 15)
    assert recovery.old == three_voters(["n4"])
    assert recovery.new == Membership(voters=frozenset({"n2"}), addresses=(("n2", ADDRESSES["n2"]),),
                                      cluster_id="abc123")
    storage = open_segment(data_dir)
    try:
        hard_state, _ = storage.initial_state()
        assert hard_state == HardState(term=5, vote="", commit=21)
        assert [e.data for e in storage.entries(2, 21)][-1] == b"write 20"  # nothing lost
        config = storage.entries(21, 22)[0]
        assert config.type is EntryType.CONFIG and config.term == 5
        # The core sees a one-voter cluster and elects itself without anyone else.
        core = RaftCore(RaftConfig(id="n2"), storage, random.Random(1))
        assert core.membership.voters == {"n2"} and core.log.committed == 21
        for _ in range(40):
            core.tick()
        assert core.role is Role.LEADER
    finally:
        storage.close()
    text = "\n".join(recovery.describe())
    assert "voters were n1, n2, n3 (learners: n4); now n2 alone is the voter" in text
    assert "entries 16..20 were not known to be committed" in text


def test_refused_while_the_node_runs(data_dir):
    lock = DataDirLock(str(data_dir))
    lock.acquire()
    try:
        with pytest.raises(KeyvalError, match="in use by another keyval process.*stop that node first"):
            force_new_cluster(str(data_dir), open_segment)
    finally:
        lock.release()


def test_which_node_it_is(data_dir):
    (data_dir / "NODE_ID").unlink()
    with pytest.raises(KeyvalError, match=r"pass --id \(one of n1, n2, n3, n4\)"):
        force_new_cluster(str(data_dir), open_segment)
    with pytest.raises(KeyvalError, match="n9 is not a member"):
        force_new_cluster(str(data_dir), open_segment, "n9")
    assert force_new_cluster(str(data_dir), open_segment, "n3").new.voters == {"n3"}


def test_the_command(data_dir, tmp_path):
    result = CliRunner().invoke(cli, ["recover", "--data-dir", str(data_dir), "--force-new-cluster"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("recovered n2: voters were n1, n2, n3 (learners: n4); now n2 alone")
    assert "index 21, term 5 (was term 4), committed; cluster id abc123 kept" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(cli, ["recover", "--data-dir", str(empty), "--force-new-cluster"])
    assert result.exit_code == 1 and "holds no Raft data" in result.output
    result = CliRunner().invoke(cli, ["recover", "--data-dir", str(data_dir), "--force-new-cluster",
                                      "--storage", "nosuch"])
    assert result.exit_code == 1 and "unknown storage backend 'nosuch'" in result.output


def test_a_dry_run_writes_nothing(data_dir):
    result = CliRunner().invoke(cli, ["recover", "--data-dir", str(data_dir), "--force-new-cluster", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("n2 holds entries up to index 20 (last term 2, commit 15)")
    assert "dry run: nothing written" in result.output
    storage = open_segment(data_dir)
    try:
        assert storage.last_index() == 20 and storage.initial_state()[0] == HardState(term=4, vote="n1", commit=15)
    finally:
        storage.close()
