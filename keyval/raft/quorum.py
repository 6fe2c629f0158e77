"""Majority arithmetic, in one place: every count of votes, acknowledgements or replicas in
KeyVal (the core, the membership manager, ``kvctl cluster health``) asks these functions,
so no two parts can disagree on what a quorum of an even-sized cluster is."""
from __future__ import annotations

from typing import Iterable


def majority(voters: int) -> int:
    """How many of ``voters`` make a quorum: more than half (1 of 1, 2 of 3, 3 of 4, 3 of 5)."""
    return voters // 2 + 1


def quorum_index(matches: Iterable[int]) -> int:
    """The highest index that a majority holds, given the index each voter holds (one each)."""
    held = sorted(matches, reverse=True)
    if not held:
        raise ValueError("no voters: nothing is held by a majority")
    return held[majority(len(held)) - 1]
