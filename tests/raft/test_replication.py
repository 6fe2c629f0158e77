"""Replication: repairing a diverged log, and catching up through a chunked snapshot."""
from keyval.raft import ChangeKind, ConfigChange, ReadState
from keyval.raft import messages as m

from .harness import FOLLOWER, LEADER, PRE_CANDIDATE, Cluster


def test_diverged_old_leader_is_repaired_with_fast_backtracking():
    c = Cluster(5)
    c.elect("n1")
    c.replicate("n1", "a", "b", "c")  # committed at 3..5, term 2

    # n1 is cut off and keeps accepting proposals no one will ever see: 6..10 at term 2.
    c.isolate("n1")
    for k in range(1, 6):
        c.propose("n1", f"lost{k}")
    c.stabilize()
    assert c.log("n1")[-1] == (10, 2)

    # The other four elect a leader of term 3, which writes 6..8...
    others = ["n2", "n3", "n4", "n5"]
    c.tick_until(lambda: c.leader() in others, ids=others)
    l3 = c.leader()
    assert c.term(l3) == 3
    c.replicate(l3, "y1", "y2")
    # ...and hands over to a leader of term 4, which writes 9..12.
    l4 = next(n for n in others if n != l3)
    c.transfer(l3, l4)
    c.stabilize()
    assert c.leader() == l4 and c.term(l4) == 4
    c.replicate(l4, "z1", "z2", "z3")
    expected = [(1, 1), (2, 2), (3, 2), (4, 2), (5, 2), (6, 3), (7, 3), (8, 3), (9, 4), (10, 4), (11, 4), (12, 4)]
    assert c.log(l4) == expected

    # n1 comes back: its suffix 6..10 (term 2) conflicts with 6..12 (terms 3 and 4).
    c.heal()
    c.tick(n=5)
    assert c.role("n1") is FOLLOWER and c.status("n1").leader == l4
    # It was truncated and replaced: every log is now the same.
    for n in c.ids():
        assert c.log(n) == expected, n
        assert c.applied(n) == ["a", "b", "c", "y1", "y2", "z1", "z2", "z3"], n
    # Fast backtracking: n1's hint (last index of a term <= the probed term) let the leader
    # skip the whole divergent term in one round trip, instead of one rejection per entry.
    rejections = c.sent_messages(m.AppendResponse, frm="n1", to=l4, where=lambda r: r.reject)
    assert 1 <= len(rejections) <= 2
    assert (rejections[0].hint_index, rejections[0].hint_term) == (8, 2)


def test_far_behind_follower_is_found_in_one_probe():
    c = Cluster(3)
    c.elect("n1")
    # n3 misses 40 entries while the others go on.
    c.isolate("n3")
    c.replicate("n1", *[f"k{i}" for i in range(40)])
    c.heal()
    c.tick(n=3)
    assert c.applied("n3") == c.applied("n1")
    # The leader had optimistically sent everything; the first rejection tells it where
    # n3's log ends, and the next append fills the whole gap.
    rejections = c.sent_messages(m.AppendResponse, frm="n3", where=lambda r: r.reject)
    assert len(rejections) == 1
    assert rejections[0].hint_index == 2


def _snapshot_cluster(chunk=64):
    """n1 leads a 3-node cluster with 30 commands applied, then compacts its log at 31."""
    c = Cluster(3, snapshot_chunk_size=chunk)
    c.elect("n1")
    c.replicate("n1", "a")
    return c


def test_lagging_follower_catches_up_through_a_chunked_snapshot():
    c = _snapshot_cluster()
    # n3 is down while 30 commands are committed; then n1 compacts its log away.
    c.crash("n3")
    c.replicate("n1", *[f"key{i:02d}=value{i:02d}" for i in range(30)])
    snap = c.compact("n1")
    assert snap.meta.index == 33 and c.node("n1").storage.first_index() == 34
    assert len(snap.data) > 3 * 64

    # n3 comes back with only index 3; what it needs is no longer in the leader's log.
    c.restart("n3")
    c.tick_until(lambda: c.applied("n3") == c.applied("n1"))
    chunks = c.sent_messages(m.InstallSnapshot, frm="n1", to="n3")
    assert len(chunks) > 1
    assert [ch.offset for ch in chunks] == list(range(0, len(snap.data) + 1, 64))[: len(chunks)]
    assert chunks[-1].done and not any(ch.done for ch in chunks[:-1])
    assert b"".join(ch.data for ch in chunks) == snap.data
    assert c.node("n3").snapshots_restored == 1
    assert c.node("n3").storage.snapshot.meta.index == 33

    # After the snapshot, plain appends continue.
    c.replicate("n1", "after")
    assert c.applied("n3") == c.applied("n1") == c.applied("n2")
    assert c.applied("n3")[-1] == "after"
    last = c.sent_messages(m.AppendEntries, frm="n1", to="n3", where=lambda a: a.entries)[-1]
    assert last.prev_index >= 33
    assert c.log("n3") == c.log("n1")


def test_appends_resume_right_after_a_snapshot_install():
    c = _snapshot_cluster()
    c.crash("n3")
    c.replicate("n1", *[f"key{i:02d}" for i in range(10)])
    c.compact("n1")
    c.restart("n3")
    c.tick_until(lambda: c.node("n3").snapshots_restored == 1)
    # No more ticks: a new command must reach n3 as it reaches n2.
    c.replicate("n1", "after")
    assert c.applied("n3") == c.applied("n2")


def test_new_learner_gets_a_snapshot_and_a_lost_chunk_is_sent_again():
    c = _snapshot_cluster()
    c.replicate("n1", *[f"key{i:02d}=value{i:02d}" for i in range(30)])
    c.compact("n1")
    snap_index = c.node("n1").storage.snapshot.meta.index

    # A brand-new process joins as a learner; its log is empty, the leader's is compacted.
    c.add_node("n4")
    c.propose_change("n1", ConfigChange(ChangeKind.ADD_LEARNER, "n4"))
    # The first chunk gets through; the second is lost on the way.
    c.hold(m.InstallSnapshot, to="n4", where=lambda s: s.offset > 0)
    c.stabilize()
    (second,) = c.pending(m.InstallSnapshot, to="n4")
    assert second.offset == 64
    c.drop(m.InstallSnapshot, to="n4")
    c.release()

    # The leader notices no progress on its heartbeats and resends the lost chunk.
    c.tick_until(lambda: c.applied("n4") == c.applied("n1"))
    resent = c.sent_messages(m.InstallSnapshot, to="n4", where=lambda s: s.offset == 64)
    assert len(resent) == 2
    assert c.node("n4").snapshots_restored == 1
    assert c.node("n4").storage.snapshot.meta.index == snap_index
    assert c.log("n4") == c.log("n1")
    assert c.membership("n4").learners == {"n4"}
    assert c.role("n1") is LEADER and c.term("n1") == 2


def test_flow_control_caps_appends_in_flight_to_a_silent_follower():
    c = Cluster(3, max_inflight=4)
    c.elect("n1")
    c.isolate("n3")
    start = len(c.sent)
    for i in range(20):
        c.replicate("n1", f"k{i}")  # one command at a time: twenty separate appends
    to_n3 = [a for a in c.sent[start:] if isinstance(a, m.AppendEntries) and a.to == "n3" and a.entries]
    to_n2 = [a for a in c.sent[start:] if isinstance(a, m.AppendEntries) and a.to == "n2" and a.entries]
    # n2 answers, so it gets all twenty; n3 does not, so only four go out before n1 waits.
    assert len(to_n2) == 20 and len(to_n3) == 4
    c.heal()
    c.tick_until(lambda: c.applied("n3") == c.applied("n1"))
    assert len(c.applied("n3")) == 20


def test_snapshot_replaced_while_being_sent():
    c = _snapshot_cluster()
    c.crash("n3")
    c.replicate("n1", *[f"key{i:02d}=value{i:02d}" for i in range(30)])
    first = c.compact("n1")
    # n3 comes back and starts receiving the snapshot; the third chunk is held up...
    c.restart("n3")
    c.hold(m.InstallSnapshot, to="n3", where=lambda s: s.offset >= 128)
    c.tick_until(lambda: c.pending(m.InstallSnapshot, to="n3"))
    # ...while the leader moves on and replaces its snapshot with a newer one.
    c.replicate("n1", *[f"more{i:02d}" for i in range(10)])
    second = c.compact("n1")
    assert second.meta.index > first.meta.index
    c.release()
    c.tick_until(lambda: c.applied("n3") == c.applied("n1"))
    # n3 ends up with the newer snapshot, sent from offset 0 again.
    assert c.node("n3").storage.snapshot.meta.index == second.meta.index
    assert c.node("n3").snapshots_restored == 1
    newer = c.sent_messages(m.InstallSnapshot, to="n3", where=lambda s: s.meta.index == second.meta.index)
    assert newer[0].offset == 0 and newer[-1].done
    assert b"".join(s.data for s in newer) == second.data


def test_follower_crashing_mid_snapshot_starts_over_and_restarts_from_its_own_snapshot():
    c = _snapshot_cluster()
    c.crash("n3")
    c.replicate("n1", *[f"key{i:02d}=value{i:02d}" for i in range(30)])
    snap = c.compact("n1")
    c.restart("n3")
    # Three chunks in, n3 crashes: the partial snapshot lived only in memory.
    c.hold(m.InstallSnapshot, to="n3", where=lambda s: s.offset >= 192)
    c.tick_until(lambda: c.pending(m.InstallSnapshot, to="n3"))
    c.crash("n3")
    c.release()
    c.stabilize()
    c.restart("n3")
    # The leader's next chunk is refused (n3 expects offset 0) and it starts over.
    c.tick_until(lambda: c.applied("n3") == c.applied("n1"))
    assert c.sent_messages(m.SnapshotResponse, frm="n3", where=lambda r: r.reject and r.offset == 0)
    assert len(c.sent_messages(m.InstallSnapshot, to="n3", where=lambda s: s.offset == 0)) == 2
    assert c.node("n3").storage.snapshot == snap

    # n3 now restarts from its own snapshot plus the entries after it.
    c.replicate("n1", "x")
    c.crash("n3")
    c.restart("n3")
    c.stabilize()
    assert c.applied("n3") == c.applied("n1") and c.applied("n3")[-1] == "x"
    assert c.status("n3").commit == c.commit("n1")


def test_figure_8_an_old_term_entry_is_not_committed_by_counting_replicas():
    """Raft paper, figure 8: a leader may not commit an entry of an earlier term just
    because a majority holds it; a later leader may still overwrite it."""
    c = Cluster(5, max_entries_per_msg=1)
    c.elect("n1")
    c.replicate("n1", "a")  # index 3, everywhere

    # (a) n1 (term 2) writes X at index 4; only n2 gets it before n1 crashes.
    c.propose("n1", "X")
    c.process("n1")
    c.drop(m.AppendEntries, frm="n1", to=["n3", "n4", "n5"])
    c.stabilize()
    c.crash("n1")

    # (b) With n2 cut off, n3..n5 elect W (term 3); W's no-op takes index 4 but goes nowhere.
    c.isolate("n2")
    c.hold(m.AppendEntries, frm=["n3", "n4", "n5"])
    c.tick_until(lambda: c.leader() in ("n3", "n4", "n5"), ids=["n3", "n4", "n5"])
    w = c.leader()
    assert c.log(w)[-1] == (4, 3)
    c.crash(w)
    c.drop(frm=w)
    c.release()
    rest = [n for n in ("n3", "n4", "n5") if n != w]

    # (c) n1 is back, n2 reconnected: one of them wins term 4 and copies X (term 2) to the
    # others, so a majority holds X. Its own no-op (index 5) is held up on the way.
    c.restart("n1")
    c.heal()
    c.hold(m.AppendEntries, where=lambda a: any(e.index >= 5 for e in a.entries) and (4, 2) in c.log(a.to))
    c.tick_until(lambda: c.leader() in ("n1", "n2"))
    lead = c.leader()
    c.stabilize()
    holders = [n for n in ("n1", "n2", *rest) if (4, 2) in c.log(n)]
    assert len(holders) == 4  # X is on four of five nodes...
    assert c.commit(lead) == 3  # ...and still not committed: it is not of the leader's term
    assert all("X" not in c.applied(n) for n in c.live())

    # (d) Right: the leader crashes, and W, whose last entry has the higher term, wins and
    # overwrites X everywhere.
    c.crash(lead)
    c.drop(frm=lead)
    c.release()
    other = "n2" if lead == "n1" else "n1"
    c.isolate(other)
    c.restart(w)
    c.tick_until(lambda: c.leader() == w, ids=[w, *rest])
    c.heal()
    c.restart(lead)
    c.tick(n=5)
    c.replicate(w, "after")
    for n in c.ids():
        assert (4, 3) in c.log(n) and (4, 2) not in c.log(n), n
        assert c.applied(n) == ["a", "after"], n


def test_duplicated_and_reordered_messages_are_harmless():
    c = Cluster(3)
    c.elect("n1")
    # Three pipelined appends, then the network duplicates them and delivers them backwards.
    for k in range(1, 4):
        c.propose("n1", f"x{k}")
        c.process("n1")
    c.duplicate()
    c.reverse()
    c.deliver()
    # Same for whatever comes back: responses, duplicated, reversed.
    for _ in range(3):
        c.duplicate()
        c.reverse()
        c.deliver()
    c.stabilize()
    for n in c.ids():
        assert c.log(n) == [(1, 1), (2, 2), (3, 2), (4, 2), (5, 2)], n
        assert c.applied(n) == ["x1", "x2", "x3"], n
    assert c.leader() == "n1" and c.term("n1") == 2


def test_a_duplicated_vote_or_read_acknowledgement_counts_once():
    c = Cluster(5)
    # n1 needs three pre-votes out of five; n2's, delivered three times, is still one.
    c.campaign("n1")
    c.deliver(m.RequestVote, to="n2")
    c.duplicate(m.VoteResponse)
    c.duplicate(m.VoteResponse)
    c.deliver(m.VoteResponse)
    assert c.role("n1") is PRE_CANDIDATE
    c.stabilize()
    assert c.leader() == "n1"
    # Same for a read: n2's acknowledgement twice plus n1's own is not a quorum of five.
    c.read_index("n1", b"r")
    c.process("n1")
    c.deliver(m.Heartbeat, to="n2")
    c.duplicate(m.HeartbeatResponse)
    c.deliver(m.HeartbeatResponse)
    assert c.read_states("n1") == []
    c.stabilize()
    assert c.read_states("n1") == [ReadState(b"r", 2)]


def test_core_asks_for_snapshots_and_a_transfer_target_catches_up_through_one():
    c = Cluster(3, snapshot_threshold=10, snapshot_chunk_size=128)
    c.elect("n1")
    c.crash("n3")
    c.replicate("n1", *[f"k{i:02d}" for i in range(25)])
    # Every node is asked to snapshot as its applied log grows, and compacts its log.
    snap = c.node("n1").storage.snapshot
    assert snap.meta.index >= 20 and c.node("n1").storage.first_index() == snap.meta.index + 1
    assert c.node("n2").storage.snapshot.meta.index >= 20

    # n3 comes back and is immediately asked to take over: n1 must first send it the
    # snapshot, then the entries after it, and only then TimeoutNow.
    c.restart("n3")
    c.tick()
    c.transfer("n1", "n3")
    c.stabilize()
    c.tick_until(lambda: c.leader() == "n3", limit=20)
    assert c.sent_messages(m.InstallSnapshot, to="n3")
    assert c.sent_messages(m.TimeoutNow, to="n3")
    assert c.term("n3") == 3
    c.replicate("n3", "after")
    assert c.applied("n1") == c.applied("n2") == c.applied("n3")
    assert c.applied("n3")[-1] == "after" and len(c.applied("n3")) == 26


def test_has_ready_reports_a_snapshot_request():
    c = Cluster(3, snapshot_threshold=10)
    c.elect("n1")
    # n2 applies 25 commands in one batch, crossing the threshold; then all is quiet.
    c.replicate("n1", *[f"k{i:02d}" for i in range(25)])
    # The snapshot request must come out now, not at whatever Ready happens next.
    assert c.node("n2").storage.snapshot.meta.index >= 20
    core = c.core("n2")
    assert core.has_ready() == (not core.ready().is_empty())


def test_a_leader_sends_before_its_own_fsync_but_counts_its_copy_only_once_durable():
    # The leader may send appends while its own write runs (Ready.send_before_persist),
    # which halves commit latency — but then its copy must not count until it is durable,
    # or one follower's ack would "commit" an entry held durably by a single node.
    c = Cluster(3)
    c.elect("n1")
    leader = c.core("n1")
    _, index = leader.propose(b"x")
    rd = leader.ready()
    assert rd.send_before_persist and rd.entries and rd.entries[-1].index == index
    for msg in rd.messages:  # sent first: n1 has persisted nothing yet
        if msg.to == "n2":
            c.core("n2").step(msg)
    follower = c.core("n2").ready()
    c.nodes["n2"].storage.append(follower.entries)
    if follower.hard_state:
        c.nodes["n2"].storage.set_hard_state(follower.hard_state)
    c.core("n2").advance(follower)
    for msg in follower.messages:
        if msg.to == "n1":
            leader.step(msg)
    assert leader.log.committed < index  # n2's copy alone is not a quorum
    # n1's write completes: now n1 + n2 hold it durably, and it commits.
    c.nodes["n1"].storage.append(rd.entries)
    if rd.hard_state:
        c.nodes["n1"].storage.set_hard_state(rd.hard_state)
    leader.advance(rd)
    assert leader.log.committed == index

