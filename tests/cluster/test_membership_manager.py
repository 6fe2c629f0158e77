"""MembershipManager: the pure membership policy, on hand-made leader views."""
from __future__ import annotations

import pytest

from keyval.cluster import LEARNER, VOTER, Member, MembershipManager, MembershipRefused
from keyval.cluster.view import describe_change
from keyval.raft import Membership


def voter(node: str, match: int = 1000, contact: float | None = 0.1, **kw) -> Member:
    return Member(node, VOTER, match, contact, peer_address=f"127.0.0.1:70{node[-1]}0", **kw)


def learner(node: str, match: int, contact: float | None = 0.1, **kw) -> Member:
    return Member(node, LEARNER, match, contact, peer_address=f"127.0.0.1:70{node[-1]}0", **kw)


def cluster(*extra: Member, voters: int = 3, **kw) -> MembershipManager:
    members = [voter("node1", contact=0.0, is_leader=True)] + [voter(f"node{n}") for n in range(2, voters + 1)]
    return MembershipManager(members + list(extra), **kw)


def refused(call, *args, **kw) -> str:
    with pytest.raises(MembershipRefused) as info:
        call(*args, **kw)
    return str(info.value)


def test_the_guide_signature_and_the_leaders_last_index():
    mm = MembershipManager([voter("node1", 500, 0.0, is_leader=True), learner("node4", 450)], 100)
    assert mm.catchup_threshold == 100 and mm.last_index == 500
    assert mm.voters == ["node1"] and mm.learners == ["node4"] and mm.leader == "node1" and mm.quorum == 1
    assert MembershipManager([]).catchup_threshold == 100  # the default


def test_members_may_be_interface_member_objects():
    doc = {"id": "node4", "peer_address": "h:1", "client_address": None, "type": "Learner", "is_leader": False,
           "healthy": True, "match_index": 990, "lag": 10, "last_contact": 0.2, "bytes_replicated": 5,
           "caught_up": True}
    mm = MembershipManager([voter("node1", is_leader=True), doc], 100)
    assert mm.members["node4"] == Member("node4", LEARNER, 990, 0.2, False, "h:1", 5)
    assert mm.caught_up("node4")


@pytest.mark.parametrize("match,threshold,caught_up", [
    (900, 100, True), (899, 100, False), (1000, 0, True), (999, 0, False), (0, 10_000, False),
])
def test_caught_up_means_within_the_threshold_of_the_leaders_last_index(match, threshold, caught_up):
    mm = cluster(learner("node4", match), catchup_threshold=threshold)
    assert mm.lag("node4") == 1000 - match
    assert mm.caught_up("node4") is caught_up  # match 0: the leader has not found its log yet


def test_the_threshold_per_call_and_per_member():
    mm = cluster(learner("node4", 950), learner("node5", 950, catchup_threshold=10), catchup_threshold=100)
    assert mm.caught_up("node4") and not mm.caught_up("node4", threshold=10)
    assert not mm.caught_up("node5") and mm.caught_up("node5", threshold=50)


def test_auto_promotion_picks_caught_up_healthy_learners_unless_switched_off():
    mm = cluster(learner("node4", 990), learner("node5", 100), learner("node6", 995, contact=30.0),
                 learner("node7", 999, auto_promote=False))
    assert mm.promotion_candidates() == ["node4"]
    assert cluster(learner("node4", 990), auto_promote=False).promotion_candidates() == []
    assert cluster(learner("node4", 990, auto_promote=True), auto_promote=False).promotion_candidates() == ["node4"]


def test_promote_refuses_a_learner_that_has_not_caught_up_saying_how_far_behind():
    mm = cluster(learner("node4", 400), learner("node5", 0, contact=None))
    assert "node4: it has not caught up, 600 entries behind the leader (match index 400 of 1000; caught up " \
           "means within 100)" in refused(mm.check_promote, "node4")
    message = refused(mm.check_promote, "node5")
    assert "1000 entries behind" in message and "the leader has not reached it (is it running at" in message
    assert mm.check_promote("node4", threshold=600) is None  # a looser threshold for this call


def test_promote_is_safe_to_repeat_and_needs_a_member():
    mm = cluster(learner("node4", 999))
    assert mm.check_promote("node4") is None
    assert mm.check_promote("node2") == "node2 is already a voter"
    assert "add it as a learner first" in refused(mm.check_promote, "node9")


def test_promote_refuses_a_caught_up_learner_the_leader_lost_touch_with():
    assert "last heard from it 9.0s ago" in refused(cluster(learner("node4", 999, contact=9.0)).check_promote, "node4")


def test_remove_a_learner_always():
    mm = cluster(learner("node4", 0, contact=None), voters=1)
    assert mm.check_remove("node4") is None


def test_remove_refuses_the_last_voter():
    mm = cluster(voters=1)
    assert refused(mm.check_remove, "node1", force=True) == \
        "cannot remove node1: it is the last voting member of the cluster"


def test_remove_refuses_to_go_below_the_minimum():
    mm = cluster(voters=3, min_voters=3)
    assert refused(mm.check_remove, "node3") == (
        "cannot remove node3: the cluster would have 2 voter(s), below the configured minimum of 3 (min_voters)")
    assert cluster(voters=4, min_voters=3).check_remove("node4") is None


def test_remove_refuses_to_leave_the_remaining_voters_without_a_healthy_quorum():
    members = [voter("node1", contact=0.0, is_leader=True), voter("node2", contact=None), voter("node3")]
    mm = MembershipManager(members)
    # Removing node3 leaves node1 and node2, and node2 is down: no quorum of 2.
    assert "only 1 are healthy (node2 not), and they need 2 for a quorum" in refused(mm.check_remove, "node3")
    # Removing the dead node2 leaves node1 and node3, both healthy.
    assert mm.check_remove("node2") is None


def test_remove_the_leader_needs_a_transfer_first_or_force():
    mm = cluster()
    message = refused(mm.check_remove, "node1")
    assert "it is the leader; transfer leadership first (kvctl cluster transfer node2)" in message
    assert "--force" in message
    assert mm.check_remove("node1", force=True) is None
    # Nobody healthy to take over: the quorum check already says so.
    lonely = MembershipManager([voter("node1", contact=0.0, is_leader=True), voter("node2", contact=None)])
    assert "only 0 are healthy (node2 not)" in refused(lonely.check_remove, "node1", force=True)


def test_remove_needs_a_member():
    assert "node9: it is not a member of the cluster (members: node1, node2, node3)" in \
        refused(cluster().check_remove, "node9")


def test_transfer_checks():
    mm = cluster(learner("node4", 1000), voters=3)
    assert mm.check_transfer("node2") is None
    assert mm.check_transfer("node1") == "node1 is already the leader"
    assert "it is a learner; only a voter can become leader" in refused(mm.check_transfer, "node4")
    sick = MembershipManager([voter("node1", contact=0.0, is_leader=True), voter("node2", contact=5.0),
                              voter("node3", match=10)])
    assert "node2: it is not healthy; the leader last heard from it 5.0s ago" in refused(sick.check_transfer, "node2")
    assert "node3: it is 990 entries behind the leader (more than 100)" in refused(sick.check_transfer, "node3")


def test_the_best_transfer_target_is_the_closest_healthy_voter():
    mm = MembershipManager([voter("node1", contact=0.0, is_leader=True), voter("node2", 900),
                            voter("node3", 990), voter("node4", 1000, contact=None), learner("node5", 1000)])
    assert mm.best_transfer_target() == "node3"
    assert mm.best_transfer_target(exclude=["node3"]) == "node2"


def test_add_is_idempotent_for_the_same_address_and_refuses_another():
    mm = cluster(learner("node4", 0))
    assert mm.check_add("node5", "127.0.0.1:7050") is None
    assert mm.check_add("node4", "127.0.0.1:7040") == "node4 is already a learner at 127.0.0.1:7040"
    assert "already a member at 127.0.0.1:7040" in refused(mm.check_add, "node4", "127.0.0.1:9999")
    assert "member node2 already uses that address" in refused(mm.check_add, "node9", "127.0.0.1:7020")


def test_health_names_each_issue():
    members = [
        voter("node1", 10_000, 0.0, is_leader=True),
        voter("node2", 10_000),
        voter("node3", 5_000),  # lagging
        voter("node4", 10_000, contact=None),  # unreachable
        voter("node5", 10_000, contact=12.0),  # unreachable
        learner("node6", 2_000, stalled_for=30.0),  # stuck
        learner("node7", 0, contact=None),  # never reached
        learner("node8", 3_000, stalled_for=1.0),  # catching up: fine
    ]
    health = MembershipManager(members).health(max_lag=1000, stuck_after=10)
    assert health["healthy"] is False and health["leader"] == "node1"
    assert health["quorum_available"] is True and health["healthy_members"] == 5 and health["total_members"] == 8
    assert health["issues"] == [
        "Follower node3 is lagging: 5000 entries behind the leader (threshold 1000)",
        "Member node4 is unreachable: the leader has not reached it (is it running at 127.0.0.1:7040?)",
        "Member node5 is unreachable: the leader last heard from it 12.0s ago",
        "Learner node6 is stuck: 8000 entries behind, no replication progress for 30s",
        "Learner node7 is stuck: the leader has not reached it (is it running at 127.0.0.1:7070?)",
    ]


def test_health_names_a_reachable_voter_that_is_stuck_and_its_rejections():
    members = [
        voter("node1", 10_042, 0.0, is_leader=True),
        voter("node2", 10_000, stalled_for=12.3, append_rejections=310, last_rejection=0.1),  # lost its log
        voter("node3", 10_000, stalled_for=9.9),  # not yet
        voter("node4", 10_000, stalled_for=0.0),  # slow, but it just moved
        voter("node5", 10_042, stalled_for=None),  # nothing to send it
        voter("node6", 10_000, contact=None, stalled_for=60.0),  # unreachable says more than stuck
        learner("node7", 9_000, stalled_for=11.0, append_rejections=2, last_rejection=40.0),  # rejections before the stall
    ]
    health = MembershipManager(members).health(max_lag=5_000, stuck_after=10)
    assert health["healthy"] is False and health["stuck"] == ["node2", "node7"]
    assert health["issues"] == [
        "Member node2 is stuck: 42 entries behind, no replication progress for 12s (rejected 310 appends, "
        "the last 0.1s ago)",
        "Member node6 is unreachable: the leader has not reached it (is it running at 127.0.0.1:7060?)",
        "Learner node7 is stuck: 1042 entries behind, no replication progress for 11s",
    ]
    # A lower threshold catches node3 as well; a member object (kvctl's JSON) says the same.
    assert MembershipManager(members).health(stuck_after=5)["stuck"] == ["node2", "node3", "node7"]
    doc = {"id": "node2", "type": "Voter", "match_index": 10_000, "last_contact": 0.1, "stalled_for": 12.3,
           "append_rejections": 310, "last_rejection": 0.1}
    mm = MembershipManager([members[0], doc])
    assert mm.stuck("node2", 10) == health["issues"][0]


def test_health_reports_a_lost_quorum():
    members = [voter("node1", contact=0.0, is_leader=True), voter("node2", contact=None), voter("node3", contact=7.0)]
    health = MembershipManager(members).health()
    assert health["quorum_available"] is False
    assert health["issues"][0] == "Quorum lost: only 1 of 3 voters are healthy (a quorum needs 2)"
    assert MembershipManager([voter("node1", contact=0.0, is_leader=True)]).health()["healthy"] is True


def test_describe_change_names_what_a_pending_configuration_does():
    before = Membership(frozenset({"node1", "node2"}), frozenset({"node4"}), (("node5", "h:5"),))
    assert describe_change(before, Membership(frozenset({"node1", "node2", "node4"}))) == "promoting node4 to voter"
    assert describe_change(before, Membership(before.voters, before.learners | {"node5"}, before.addresses)) == \
        "adding node5 (h:5) as a learner"
    assert describe_change(before, Membership(frozenset({"node1"}), frozenset({"node4"}))) == "removing node2"


def test_a_manager_built_from_members_json_applies_its_own_threshold(new_cluster):
    """`cluster members --json` objects carry `catchup_threshold` only when it was set for
    that learner; the effective value is `effective_catchup_threshold`, which is no override."""
    import json

    from kvctl_harness import ok

    c = new_cluster(3)
    objects = json.loads(ok(c.kvctl("cluster", "members", "--json")).stdout)
    assert all("catchup_threshold" not in m and m["effective_catchup_threshold"] == 100 for m in objects), objects
    mm = MembershipManager(objects, 7)
    assert {mm.threshold_for(m["id"]) for m in objects} == {7}
    # An explicit per-member value still overrides.
    objects[1]["catchup_threshold"] = 3
    assert MembershipManager(objects, 7).threshold_for(objects[1]["id"]) == 3
