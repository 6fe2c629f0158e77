"""Deliberate bugs (``--break NAME``) that the simulator must catch.

Each is a patch applied to one RaftCore *instance* (on every start and restart), from the
outside, so the core's source stays clean. They exist to show the checks have teeth.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from keyval.raft import NONE, RaftCore, ReadState
from keyval.raft import messages as m


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


#: name -> patch(core, counter): the patch counts in counter["break-fired"] each time the bug
#: actually changes behaviour, so a report can tell "never triggered" from "not caught".
BREAKS: dict[str, Callable[[RaftCore, Counter], None]] = {
    "commit-old-term": commit_old_term,
    "double-vote": double_vote,
    "read-without-quorum": read_without_quorum,
    "trust-non-members": trust_non_members,
}
