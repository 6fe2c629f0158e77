"""The one place majority arithmetic lives (keyval.raft.quorum)."""
import pytest

from keyval.raft import Membership
from keyval.raft.quorum import majority, quorum_index


def test_majority_is_more_than_half():
    assert [majority(n) for n in range(1, 8)] == [1, 2, 2, 3, 3, 4, 4]


def test_quorum_index_is_what_a_majority_holds():
    assert quorum_index([7]) == 7
    assert quorum_index([5, 9, 7]) == 7  # 9 and 7 hold 7
    assert quorum_index([5, 9, 7, 8]) == 7  # 3 of 4 needed: 9, 8, 7
    assert quorum_index([1, 1, 9, 9, 9]) == 9
    with pytest.raises(ValueError):
        quorum_index([])


def test_membership_quorum_uses_it():
    assert Membership(voters=frozenset({"a", "b", "c", "d"})).quorum == majority(4) == 3
