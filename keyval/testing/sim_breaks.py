"""Deliberate bugs (``--break NAME``) that the simulator must catch.

Each is a patch applied to one running node's *instances* — its RaftCore, or its runtime's
Ready driver, request layer or state machine — on every start and restart, from the outside,
so the sources stay clean. They exist to show the checks have teeth.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from keyval.raft import NONE, RaftCore, ReadState
from keyval.raft import messages as m
from keyval.runtime.node import Node


def commit_old_term(core: RaftCore, fired: Counter) -> None:
    """The leader commits by counting replicas whatever the entry's term (Figure 8 of the
    Raft paper): an entry of an earlier term may be committed, then overwritten."""
    log = core.log

    def maybe_commit(index: int, term: int) -> bool:
        entry_term = log.term_or_none(index)
        if index > log.committed and entry_term is not None:  # no "== term"
            if entry_term != term:
                fired["break-fired"] += 1
            log.commit_to(index)
            return True
        return False

    log.maybe_commit = maybe_commit


def double_vote(core: RaftCore, fired: Counter) -> None:
    """A node grants its vote to any up-to-date candidate, even after voting for another
    candidate in the same term."""
    honest = core._handle_vote_request

    def handle_vote_request(msg: m.RequestVote) -> None:
        voted_other = core.vote not in (NONE, msg.frm)
        if msg.pre_vote or not voted_other or not core.log.is_up_to_date(msg.last_index, msg.last_term):
            honest(msg)
            return
        fired["break-fired"] += 1
        core._send(m.VoteResponse(msg.term, core.id, msg.frm, granted=True))
        core.election_elapsed = 0
        core.vote = msg.frm

    core._handle_vote_request = handle_vote_request


def read_without_quorum(core: RaftCore, fired: Counter) -> None:
    """ReadIndex answered at once from the leader's commit index, without the heartbeat
    round that proves it still leads: a deposed leader serves stale reads."""
    honest = core._start_read

    def start_read(context: bytes) -> None:
        if core.membership.voters == {core.id}:
            honest(context)
            return
        fired["break-fired"] += 1
        core._read_states.append(ReadState(context, core.log.committed))

    core._start_read = start_read


def trust_non_members(core: RaftCore, fired: Counter) -> None:
    """Every message is heard, whoever sends it: a node outside the configuration can
    claim a term, a vote, or leadership (the core's membership rule switched off). It still
    counts them as dropped, so only what they do gives it away."""

    def accepts_non_member(msg: m.Message) -> bool:
        fired["break-fired"] += 1
        core.dropped_non_member += 1
        return True

    core._accepts_non_member = accepts_non_member


# -- bugs in the runtime: the Ready driver and the request layer ------------------------------
def apply_before_durable(node: Node, fired: Counter) -> None:
    """The driver applies every committed entry of a Ready before its fsync, including the
    entries the Ready itself brings (a follower learns entries and their commit together)."""
    driver = node.driver
    honest = driver._split_committed

    def split_committed(rd):
        now, later = honest(rd)
        if later and rd.entries and later[-1].index >= rd.entries[0].index:
            fired["break-fired"] += 1
        return tuple(now) + tuple(later), ()

    driver._split_committed = split_committed


def skip_early_sync(node: Node, fired: Counter) -> None:
    """When a leader's messages went out before its own fsync, the driver forgets to wait
    for that fsync: the core then counts the leader's copy as durable when it is not."""
    driver = node.driver
    honest = driver._sync

    async def sync(rd):
        if rd.send_before_persist and rd.messages:
            fired["break-fired"] += 1
            return
        await honest(rd)

    driver._sync = sync


def ack_retry_twice(node: Node, fired: Counter) -> None:
    """Exactly-once retries switched off: a retried write is proposed again instead of
    joining the first attempt, and the state machine applies it again instead of answering
    from the client's session."""
    requests, kv = node.requests, node.kv
    honest = requests.submit

    def submit(data, timeout, session=None):
        if session is not None:
            fired["break-fired"] += 1
        return honest(data, timeout, None)

    requests.submit = submit
    kv._sessions = _Forgetful()


class _Forgetful(dict):
    def __setitem__(self, key, value) -> None:
        pass


def read_before_confirm(node: Node, fired: Counter) -> None:
    """A linearizable read is answered from the leader's own state at once, without the
    ReadIndex round that proves it still leads: a deposed leader serves stale reads."""
    requests = node.requests
    honest = requests.read_barrier

    def read_barrier(timeout):
        fut = honest(timeout)  # raises NotLeader as before
        if not fut.done():
            fired["break-fired"] += 1
            fut.set_result(None)
        return fut

    requests.read_barrier = read_barrier


def forget_lost_entries(core: RaftCore, fired: Counter) -> None:
    """Recovery from a damaged disk switched off: a node that lost entries it may have
    acknowledged votes at once and answers its leader as if nothing happened (the leader
    keeps counting its stale match toward commitment)."""
    if core.recovering_to:
        fired["break-fired"] += 1
        core.recovering_to = 0


def _on_core(patch: Callable[[RaftCore, Counter], None]) -> Callable[[Node, Counter], None]:
    def on_node(node: Node, fired: Counter) -> None:
        patch(node.core, fired)

    on_node.__doc__ = patch.__doc__
    return on_node


#: name -> patch(node, counter): the patch counts in counter["break-fired"] each time the bug
#: actually changes behaviour, so a report can tell "never triggered" from "not caught".
BREAKS: dict[str, Callable[[Node, Counter], None]] = {
    "commit-old-term": _on_core(commit_old_term),
    "double-vote": _on_core(double_vote),
    "read-without-quorum": _on_core(read_without_quorum),
    "trust-non-members": _on_core(trust_non_members),
    "apply-before-durable": apply_before_durable,
    "skip-early-sync": skip_early_sync,
    "ack-retry-twice": ack_retry_twice,
    "read-before-confirm": read_before_confirm,
    "forget-lost-entries": _on_core(forget_lost_entries),
}
