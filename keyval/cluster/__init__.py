"""Cluster membership: the policy (``MembershipManager``) and, in
``keyval.cluster.operations``, the operations a leader carries out for kvctl.

Importing this package loads only the pure policy, so kvctl can use it without the runtime.
"""
from keyval.cluster.membership import (
    DEFAULT_CATCHUP_THRESHOLD,
    LEARNER,
    VOTER,
    Member,
    MembershipManager,
    MembershipRefused,
)

__all__ = ["DEFAULT_CATCHUP_THRESHOLD", "LEARNER", "VOTER", "Member", "MembershipManager", "MembershipRefused"]
