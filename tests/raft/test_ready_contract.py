"""The Ready contract's order is enforced: one Ready out at a time, advanced before the next."""
import pytest

from keyval.raft import InvariantViolation

from .harness import Cluster


def test_ready_twice_without_advance_raises_and_advance_unblocks_it():
    c = Cluster(3)
    c.elect("n1")
    leader = c.core("n1")
    _, index = leader.propose(b"x")
    rd = leader.ready()
    assert rd.entries and rd.entries[-1].index == index
    # A second Ready now would hand out entry `index` again, to be appended twice.
    with pytest.raises(InvariantViolation, match="before advance"):
        leader.ready()
    storage = c.nodes["n1"].storage
    storage.append(rd.entries)
    if rd.hard_state:
        storage.set_hard_state(rd.hard_state)
    leader.advance(rd)
    leader.ready()  # the next one is fine once the last was advanced


def test_advance_of_a_ready_not_handed_out_raises():
    c = Cluster(3)
    c.elect("n1")
    leader, other = c.core("n1"), c.core("n2")
    leader.propose(b"x")
    rd = leader.ready()
    with pytest.raises(InvariantViolation, match="not the one"):
        other.advance(rd)  # n2 never handed this Ready out
    leader.advance(rd)
    with pytest.raises(InvariantViolation, match="not the one"):
        leader.advance(rd)  # advanced already
