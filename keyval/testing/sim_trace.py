"""The simulator's trace: a bounded ring of recent lines plus a digest of every line.

The ring is what a failure report prints; the digest is what the determinism test compares
(same seed and options => same digest, byte for byte, in any process).
"""
from __future__ import annotations

import hashlib
from collections import deque

from keyval.raft import messages as m


class Trace:
    def __init__(self, limit: int, echo: bool = False) -> None:
        self.lines: deque[str] = deque(maxlen=limit)
        self.count = 0
        self.echo = echo
        self._hash = hashlib.sha256()

    def add(self, now: int, who: str, text: str) -> None:
        line = f"{now:>7} {who:<5} {text}"
        self.lines.append(line)
        self.count += 1
        self._hash.update(line.encode())
        self._hash.update(b"\n")
        if self.echo:
            print(line, flush=False)

    def digest(self) -> str:
        return self._hash.hexdigest()

    def tail(self, n: int | None = None) -> list[str]:
        lines = list(self.lines)
        return lines if n is None else lines[-n:]


def fmt_entries(entries) -> str:
    if not entries:
        return "[]"
    first, last = entries[0], entries[-1]
    if len(entries) == 1:
        return f"[{first.index}/t{first.term}]"
    return f"[{first.index}/t{first.term}..{last.index}/t{last.term}]"


def fmt_msg(msg: m.Message) -> str:
    """One compact line per message; the trace holds tens of thousands of them."""
    head = f"{msg.frm}>{msg.to} t{msg.term}"
    if isinstance(msg, m.AppendEntries):
        return f"App {head} prev={msg.prev_index}/t{msg.prev_term} {fmt_entries(msg.entries)} c={msg.commit}"
    if isinstance(msg, m.AppendResponse):
        if msg.reject:
            return f"AppResp {head} REJECT {msg.index} hint={msg.hint_index}/t{msg.hint_term}"
        return f"AppResp {head} ok {msg.index}"
    if isinstance(msg, m.RequestVote):
        kind = "PreVote" if msg.pre_vote else "Vote"
        xfer = " transfer" if msg.transfer else ""
        return f"{kind} {head} last={msg.last_index}/t{msg.last_term}{xfer}"
    if isinstance(msg, m.VoteResponse):
        kind = "PreVoteResp" if msg.pre_vote else "VoteResp"
        return f"{kind} {head} {'granted' if msg.granted else 'rejected'}"
    if isinstance(msg, m.Heartbeat):
        ctx = f" ctx={msg.context.decode(errors='replace')}" if msg.context else ""
        return f"Beat {head} c={msg.commit}{ctx}"
    if isinstance(msg, m.HeartbeatResponse):
        ctx = f" ctx={msg.context.decode(errors='replace')}" if msg.context else ""
        return f"BeatResp {head}{ctx}"
    if isinstance(msg, m.InstallSnapshot):
        done = " done" if msg.done else ""
        return f"Snap {head} @{msg.meta.index}/t{msg.meta.term} off={msg.offset} +{len(msg.data)}{done}"
    if isinstance(msg, m.SnapshotResponse):
        flags = (" done" if msg.done else "") + (" REJECT" if msg.reject else "")
        return f"SnapResp {head} @{msg.snapshot_index} off={msg.offset}{flags}"
    if isinstance(msg, m.TimeoutNow):
        return f"TimeoutNow {head}"
    return repr(msg)
