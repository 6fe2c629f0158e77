"""The "intruder" fault: messages from nodes outside the configuration.

Two kinds, now and then during the faulty run:

* **forged**: a node that never was a member (it holds the key, so the network delivers
  it) sends each message type a peer can send, one term above the receiver's — the attacks
  of issue 11: an AppendEntries overwriting a key, a transfer vote, a fake leader's
  snapshot, votes and acks nobody asked for. Each must be dropped and counted and change
  nothing at all. Leader messages are forged only at nodes that follow a live leader (or
  lead): a node without one follows the first leader that talks to it, member or not —
  that is how a node whose configuration lags catches up (see ``RaftCore._accepts_non_member``).
* **replayed**: old messages of a node removed from the cluster are delivered again to
  their recipients. A member that lags may still count the node in, so these are not
  required to change nothing; the run's safety checks and linearizability judge them.

It draws from its own ``random.Random`` (derived from the seed) and delivers straight to the
core, bypassing the simulated network, so turning it on or off does not reshuffle the rest
of a seed's draws.
"""
from __future__ import annotations

import random
from collections import deque
from typing import TYPE_CHECKING

from keyval.kv import encode_put
from keyval.raft import Entry, Membership, SnapshotMeta
from keyval.raft import messages as m

from .sim_checks import SafetyViolation

if TYPE_CHECKING:
    from .simulator import Simulation

INTRUDER = "intruder"
#: Old messages kept per sender, to replay once it is removed.
KEPT_PER_SENDER = 64


class Intruder:
    def __init__(self, sim: "Simulation", seed: int) -> None:
        self.sim = sim
        self.rng = random.Random(f"intruder/{seed}")
        self.gap = self.rng.choice((50, 150, 400))  # mean ms between intrusions
        self.stopped = False
        self._sent: dict[str, deque] = {}

    def start(self) -> None:
        self.sim.schedule(self._next(), self._act)

    def stop(self) -> None:
        self.stopped = True

    def on_send(self, msg: m.Message) -> None:
        if msg.to == INTRUDER:
            raise SafetyViolation(f"{msg.frm} answered a non-member: {type(msg).__name__} to {INTRUDER}")
        kept = self._sent.get(msg.frm)
        if kept is None:
            kept = self._sent[msg.frm] = deque(maxlen=KEPT_PER_SENDER)
        kept.append(msg)

    # -- the schedule ---------------------------------------------------------------------
    def _next(self) -> int:
        return self.sim.now + max(1, int(self.rng.expovariate(1.0 / self.gap)))

    def _act(self) -> None:
        if self.stopped:
            return
        self.sim.schedule(self._next(), self._act)
        sim = self.sim
        removed = [nid for nid, node in sorted(sim.nodes.items()) if node.stopped and self._sent.get(nid)]
        if removed and self.rng.random() < 0.5:
            self._replay(self.rng.choice(removed))
            return
        live = sim.live_nodes()
        if live:
            self._forge(self.rng.choice(live))

    def _replay(self, removed: str) -> None:
        sim = self.sim
        old = list(self._sent[removed])
        for msg in self.rng.sample(old, min(len(old), self.rng.randint(1, 8))):
            node = sim.nodes.get(msg.to)
            if node is None or node.core is None or node.stopped:
                continue
            sim.trace.add(sim.now, msg.to, f"REPLAY from removed {removed}: {type(msg).__name__} t{msg.term}")
            node.deliver(msg)
            sim.stats["intruder-replayed"] += 1

    def _forge(self, node) -> None:
        sim, core, rng = self.sim, node.core, self.rng
        term, last = core.term, core.log.last_index()
        up = term + rng.randint(0, 2)
        to = node.id
        choices = [
            m.RequestVote(up, INTRUDER, to, last_index=last + 10, last_term=up,
                          pre_vote=rng.random() < 0.3, transfer=rng.random() < 0.7),
            m.VoteResponse(up, INTRUDER, to, granted=True, pre_vote=rng.random() < 0.5),
            m.AppendResponse(term, INTRUDER, to, index=last),
            m.HeartbeatResponse(term, INTRUDER, to, context=(1).to_bytes(8, "big")),
            m.SnapshotResponse(term, INTRUDER, to, snapshot_index=last, offset=0, done=True),
            m.TimeoutNow(term, INTRUDER, to),
        ]
        if core.in_lease():
            evil = encode_put(rng.choice(sim.clients.keys).encode(), b"intruder", client="intruder", seq=1)
            choices += [
                m.AppendEntries(up, INTRUDER, to, last, core.log.last_term(),
                                (Entry(up, last + 1, data=evil),), last + 1, transferee=INTRUDER),
                m.Heartbeat(up, INTRUDER, to, commit=last, transferee=INTRUDER),
                m.InstallSnapshot(up, INTRUDER, to, SnapshotMeta(last + 5, up, Membership(frozenset({INTRUDER}))),
                                  0, b"{}", True),
            ]
        msg = rng.choice(choices)
        before = self._state(core)
        dropped = core.dropped_non_member
        sim.trace.add(sim.now, to, f"FORGED by {INTRUDER}: {type(msg).__name__} t{msg.term}")
        node.deliver(msg)
        sim.stats["intruder-forged"] += 1
        after = self._state(core)
        if after != before:
            raise SafetyViolation(f"{to} acted on a non-member's {msg!r}: (term, vote, role, leader, "
                                  f"transferee, last index, commit, has work) {before} -> {after}")
        if core.dropped_non_member != dropped + 1:
            raise SafetyViolation(f"{to} did not count a non-member's {msg!r} as dropped")

    @staticmethod
    def _state(core) -> tuple:
        return (core.term, core.vote, core.role, core.leader, core.lead_transferee,
                core.log.last_index(), core.log.committed, core.has_ready())
