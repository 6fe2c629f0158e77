"""Messages between Raft peers, as frozen dataclasses (the h11 way: events are values).

Every message carries ``term``, ``frm`` and ``to``. A transport encodes them with a versioned
codec; the core never sees bytes on a wire.
"""
from __future__ import annotations

from dataclasses import dataclass

from .types import NONE, Entry, NodeId, SnapshotMeta


@dataclass(frozen=True, slots=True)
class Message:
    term: int
    frm: NodeId
    to: NodeId


@dataclass(frozen=True, slots=True)
class AppendEntries(Message):
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit: int
    #: During a leadership transfer, the node the leader hands over to: followers honour a
    #: ``transfer`` vote (which skips the leader lease) only from that node.
    transferee: NodeId = NONE
    #: Set only for a follower that reported lost entries (``AppendResponse.lost``): the
    #: leader's last index. A follower holding the leader's log up to here has every entry
    #: it lost that could matter (see ``RaftCore._handle_append``).
    leader_last: int = 0


@dataclass(frozen=True, slots=True)
class AppendResponse(Message):
    #: On success, the highest index known to match the leader's log.
    #: On rejection, the ``prev_index`` that was rejected.
    index: int
    reject: bool = False
    #: On rejection: the follower's hint for fast backtracking — the leader may retry at
    #: the last index <= hint_index whose term is <= hint_term.
    hint_index: int = 0
    hint_term: int = 0
    #: Non-zero while the follower is recovering from lost storage: entries up to ``lost``
    #: were durable on it once (it may have acknowledged them) and are gone. The leader then
    #: resets what it believes the follower holds and does not count it toward commitment
    #: until it answers without the flag.
    lost: int = 0


@dataclass(frozen=True, slots=True)
class RequestVote(Message):
    last_index: int
    last_term: int
    #: A pre-vote asks "would you vote for me at ``term``?" without anyone changing term.
    pre_vote: bool = False
    #: Set on an election started by TimeoutNow: voters skip the leader-lease check.
    transfer: bool = False


@dataclass(frozen=True, slots=True)
class VoteResponse(Message):
    granted: bool
    pre_vote: bool = False


@dataclass(frozen=True, slots=True)
class Heartbeat(Message):
    commit: int
    #: Non-empty when the heartbeat confirms leadership for a ReadIndex request.
    context: bytes = b""
    #: As ``AppendEntries.transferee``.
    transferee: NodeId = NONE


@dataclass(frozen=True, slots=True)
class HeartbeatResponse(Message):
    context: bytes = b""
    #: As ``AppendResponse.lost``: an idle leader sends only heartbeats, and must still learn.
    lost: int = 0


@dataclass(frozen=True, slots=True)
class InstallSnapshot(Message):
    """One chunk of a snapshot; chunks are sent in order, one at a time."""

    meta: SnapshotMeta
    offset: int
    data: bytes
    done: bool


@dataclass(frozen=True, slots=True)
class SnapshotResponse(Message):
    snapshot_index: int
    #: bytes received so far (the next expected offset); when ``done``, the snapshot is restored.
    offset: int
    done: bool = False
    reject: bool = False


@dataclass(frozen=True, slots=True)
class TimeoutNow(Message):
    """Leadership transfer: "start an election now, skipping pre-vote". Before or with it,
    the leader names the target to every follower (``transferee`` on appends and heartbeats)."""


#: What only a leader sends: the messages that make a follower follow.
LEADER_MESSAGES = (AppendEntries, Heartbeat, InstallSnapshot)

ALL_MESSAGE_TYPES = (
    AppendEntries,
    AppendResponse,
    RequestVote,
    VoteResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    SnapshotResponse,
    TimeoutNow,
)
