"""Linearizability checker for KeyVal histories.

A history is a set of client operations, each with an invocation time and (if the
client saw a reply) a completion time. It is linearizable if every operation can be
given a single instant inside its own interval such that, replayed in that order on a
sequential model, every completed operation gets the result its client observed.

Algorithm: Wing & Gong's search over linearization points, in the "just-in-time"
formulation of Lowe (*Testing for linearizability*, 2017), which is also what Knossos
and Porcupine implement:

* Each operation contributes a call entry and a return entry; the entries are sorted
  by time into a doubly-linked list.
* Walking the list from the front, every call entry before the first return entry is
  a candidate: if the model accepts it in the current state, it is linearized *now*
  (its entries are unlinked) and the search goes one level deeper.
* When no candidate works, the op owning the first return entry is overdue: backtrack
  (pop the last linearized op, re-link it, try the next candidate).
* A memo of failed configurations -- (set of linearized ops as an int bitset, model
  state) -- prunes the search: from the same set and state the future is the same.

A few refinements keep it fast enough in Python (each is argued where it is
implemented): a legal read is linearized at once, without branching; indeterminate
writes live outside the list and are only tried where a read observes them right
away, one per resulting state; and a configuration that differs from a failed one only
by extra indeterminate ops is pruned too.

Keys are checked independently: linearizability is compositional (Herlihy & Wing), so
a key-value history is linearizable iff each key's sub-history is. That keeps each
search small.

Semantics of the inputs:

* ``complete is None`` means indeterminate (e.g. a timeout): a write may have taken
  effect at any instant after its invocation, or never. Such ops are never overdue,
  and the search succeeds once every *completed* op is linearized -- the unplaced
  indeterminate ones are the writes that never happened.
  An indeterminate get tells us nothing and is dropped.
* ``ok=False`` means definitely failed (did not take effect): the op is excluded.
* Real-time order: A must precede B iff ``A.complete < B.invoke``. Equal timestamps
  (``A.complete == B.invoke``) count as *concurrent*, because a logical clock or a
  coarse wall clock cannot tell which came first; erring towards concurrency can only
  accept more histories, never reject a correct one.

Limit: the search is exponential in the worst case (many concurrent writes, or many
indeterminate writes of values that reads see, on one key). ``max_states`` bounds the
configurations explored *per key*; beyond it the result is ``ok=None`` ("gave up").
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "CasRegisterModel",
    "CheckResult",
    "HistoryRecorder",
    "Model",
    "Operation",
    "RegisterModel",
    "check_history",
]


@dataclass(frozen=True, slots=True)
class Operation:
    """One client operation as observed by the client."""

    process: int  # client id
    kind: str  # "put" | "get" | "delete" (and "cas" | "cas-delete" with CasRegisterModel)
    key: str
    value: str | None  # put, cas: written; get: observed (None = absent); deletes: None
    invoke: float
    complete: float | None  # None = indeterminate (outcome unknown)
    ok: bool = True  # False = definitely did not take effect: excluded
    #: cas, cas-delete: the value the key must hold for the op to take effect (None = absent)
    expect: str | None = None


@dataclass(frozen=True)
class CheckResult:
    ok: bool | None  # True linearizable, False not, None gave up (budget exceeded)
    key: str | None  # first key that failed (or, if none failed, gave up)
    explanation: str
    checked_ops: int
    keys: int


class Model(Protocol):
    """A sequential specification. States must be hashable (they go in the memo)."""

    kinds: frozenset[str]

    def init(self) -> Hashable: ...

    def step(self, state: Hashable, op: Operation) -> tuple[bool, Hashable]:
        """Apply ``op`` to ``state``: (whether the op's observed result is legal, new state).

        Must depend only on ``op.kind``, ``op.value`` and ``op.expect`` (and the state).
        """
        ...

    def describe(self, state: Hashable) -> str: ...

    def classify(self, op: Operation) -> str:
        """How ``op`` uses the state, so the search can skip branches.

        "read": never changes the state, and is legal in exactly one state,
        ``read_state(op)``. "write": legal in every state, and the new state does not
        depend on the old one (a blind write). "other": anything (always a safe answer).
        """
        ...

    def read_state(self, op: Operation) -> Hashable:
        """For a "read", the one state in which it is legal."""
        ...


class RegisterModel:
    """A single key: a register holding a string, or None when absent."""

    kinds = frozenset({"put", "get", "delete"})

    def init(self) -> str | None:
        return None

    def step(self, state: str | None, op: Operation) -> tuple[bool, str | None]:
        if op.kind == "put":
            return True, op.value
        if op.kind == "delete":
            return True, None
        return op.value == state, state  # get

    def describe(self, state: str | None) -> str:
        return "absent" if state is None else repr(state)

    def classify(self, op: Operation) -> str:
        return "read" if op.kind == "get" else "write"

    def read_state(self, op: Operation) -> str | None:
        return op.value


class CasRegisterModel(RegisterModel):
    """The register plus compare-and-set: "cas" writes ``value`` and "cas-delete" deletes,
    each only if the register holds ``expect`` (None: absent). A cas the client saw refused
    did not take effect and is recorded ``ok=False`` (excluded), as Knossos does.

    KeyVal's compare-and-set compares the key's revision, not its value; the two agree when
    every value is written once (unique values): the revision a client read with a value
    names exactly the write of that value, so "the key is at revision r" is "the key holds
    the value written at r"."""

    kinds = RegisterModel.kinds | {"cas", "cas-delete"}

    def step(self, state: str | None, op: Operation) -> tuple[bool, str | None]:
        if op.kind == "cas":
            return (True, op.value) if state == op.expect else (False, state)
        if op.kind == "cas-delete":
            return (True, None) if state == op.expect else (False, state)
        return super().step(state, op)

    def classify(self, op: Operation) -> str:
        # Legal in one state only, but it changes the state: neither a read nor a blind write.
        return "other" if op.kind in ("cas", "cas-delete") else super().classify(op)


_REGISTER = RegisterModel()


def check_history(
    ops: Iterable[Operation], *, max_states: int = 2_000_000, model: Model | None = None
) -> CheckResult:
    """Check a key-value history for linearizability, one key at a time.

    Keys are checked in sorted order. The first key found non-linearizable is reported;
    a key on which the search gave up does not stop the check, since a later key may
    still prove the history wrong. ``max_states`` applies to each key separately.
    """
    model = model or _REGISTER
    by_key: dict[str, list[Operation]] = {}
    for op in ops:
        if op.kind not in model.kinds:
            raise ValueError(f"unknown operation kind {op.kind!r} in {op}")
        if op.complete is not None and op.complete < op.invoke:
            raise ValueError(f"operation completes before it is invoked: {op}")
        if not op.ok or (op.complete is None and model.classify(op) == "read"):
            continue
        by_key.setdefault(op.key, []).append(op)

    checked = sum(len(v) for v in by_key.values())
    gave_up: tuple[str, str] | None = None
    for key in sorted(by_key):
        verdict, why = _check_key(by_key[key], model, max_states)
        if verdict is False:
            return CheckResult(False, key, f"key {key!r}: {why}", checked, len(by_key))
        if verdict is None and gave_up is None:
            gave_up = (key, why)
    if gave_up is not None:
        key, why = gave_up
        return CheckResult(None, key, f"key {key!r}: {why}", checked, len(by_key))
    return CheckResult(
        True, None, f"linearizable: {checked} operations over {len(by_key)} keys",
        checked, len(by_key),
    )


def _check_key(ops: list[Operation], model: Model, max_states: int) -> tuple[bool | None, str]:
    """Search one key's history; returns (verdict, explanation)."""
    step = model.step
    kind = [model.classify(op) for op in ops]
    required = [op.complete is not None for op in ops]

    # Rank every call and return in time order. Sorting (time, 0=call/1=return) puts
    # calls first at equal times, which is what makes touching intervals concurrent.
    events = sorted(
        [(op.invoke, 0, i) for i, op in enumerate(ops)]
        + [(op.complete, 1, i) for i, op in enumerate(ops) if op.complete is not None]
    )
    # The doubly-linked list holds the calls and returns of completed ops: entries
    # 1..n in time order, 0 the head sentinel, n+1 the tail sentinel. Indeterminate
    # ops never become overdue, so they stay out of it (scanning past a pile of them at
    # every step would be slow) and are kept in `pending` instead, in invocation order.
    pending: list[tuple[int, int]] = []  # (rank of call, op)
    op_of, is_call, rank = [-1], [False], [-1]
    for r, (_, is_ret, i) in enumerate(events):
        if required[i]:
            op_of.append(i)
            is_call.append(not is_ret)
            rank.append(r)
        else:
            pending.append((r, i))
    n = len(op_of) - 1
    op_of.append(-1)
    is_call.append(False)
    rank.append(len(events))
    nxt = list(range(1, n + 2)) + [n + 1]
    prv = [0, *range(n + 1)]
    ret_of = [0] * (n + 2)  # call entry -> its return entry
    call_of = {}
    for e in range(1, n + 1):
        if is_call[e]:
            call_of[op_of[e]] = e
        else:
            ret_of[call_of[op_of[e]]] = e
    # One bit per op for the bitsets below: completed ops numbered in call order (see
    # `memo_key`), indeterminate ones numbered separately.
    bits = [0] * len(ops)
    for k, e in enumerate(e for e in range(1, n + 1) if is_call[e]):
        bits[op_of[e]] = 1 << k
    for k, (_, i) in enumerate(pending):
        bits[i] = 1 << k
    # Pending blind writes by the state they produce: writes producing the same state
    # are interchangeable (no deadline, and the earlier-invoked one is a candidate
    # whenever the other is), so the search only ever uses the earliest unused one.
    pending_writes: dict[Hashable, list[tuple[int, int]]] = {}
    for r, i in pending:
        if kind[i] == "write":
            pending_writes.setdefault(step(model.init(), ops[i])[1], []).append((r, i))
    pending_other = [(r, i) for r, i in pending if kind[i] == "other"]
    any_other = "other" in kind

    def memo_key(done_req: int, state: Hashable) -> tuple[int, int, Hashable]:
        # Ops are numbered in call order, so the set is mostly a run of low ones (ops
        # long done) then a short ragged part; storing the run's length instead of the
        # run keeps memo entries small however long the history.
        low = (~done_req & (done_req + 1)).bit_length() - 1
        return low, done_req >> low, state

    def lift(e: int) -> None:
        for x in (e, ret_of[e]):
            nxt[prv[x]] = nxt[x]
            prv[nxt[x]] = prv[x]

    def unlift(e: int) -> None:
        # Dancing links: an unlinked entry keeps its own pointers, so undoing removals
        # in reverse order restores the list exactly.
        for x in (ret_of[e], e):
            nxt[prv[x]] = x
            prv[nxt[x]] = x

    def moves(state: Hashable, done_opt: int, unseen: bool):
        """Yield (op, new state) for each move worth trying, in phases.

        0: a read that is legal now. Taking it now is never worse than later (nothing
           has to precede it, since it is a candidate, and it changes nothing for what
           follows), so it is the only move: if it fails, so does this configuration.
        1: other completed ops.
        2: indeterminate ones, last, so that the branches where they never happen are
           explored first. A blind write x only matters if something observes it right
           away: "x, then another write" is just "that write, without x". So x is only
           tried if a candidate read would then be legal, and after x (``unseen``) no
           blind write is tried. Otherwise every pending indeterminate write (and they
           stay pending forever) would multiply the search.
        """
        e = nxt[0]
        observed = []
        while is_call[e]:
            i = op_of[e]
            if kind[i] == "read":
                legal, new_state = step(state, ops[i])
                if legal:
                    yield i, new_state
                    return
                observed.append(model.read_state(ops[i]))
            e = nxt[e]
        frontier = rank[e]  # the first return: no candidate may be invoked after it
        e = nxt[0]
        while is_call[e]:
            i = op_of[e]
            if kind[i] == "other" or (kind[i] == "write" and not unseen):
                legal, new_state = step(state, ops[i])
                if legal:
                    yield i, new_state
            e = nxt[e]
        if not unseen:
            # (An "other" op might observe a write too; then try every resulting state.)
            for s in pending_writes if any_other else dict.fromkeys(observed):
                for r, i in pending_writes.get(s, ()):
                    if r > frontier:
                        break
                    if not done_opt & bits[i]:
                        yield i, s
                        break
        tried = set()
        for r, i in pending_other:
            if r > frontier:
                break
            if not done_opt & bits[i] and (sig := (ops[i].kind, ops[i].value, ops[i].expect)) not in tried:
                tried.add(sig)
                legal, new_state = step(state, ops[i])
                if legal:
                    yield i, new_state

    state = model.init()
    # The configuration: the linearized ops as two bitsets, completed ones and
    # indeterminate ones, and the model state.
    done_req = done_opt = 0
    unseen = False
    required_left = sum(required)
    # Configurations known to fail, as {memo_key(done_req, state): [done_opt, ...]}.
    # Since an indeterminate op may always be left out, a configuration with the same
    # done_req and state as a failed one and a superset of its done_opt fails too (same
    # obligations, fewer options), so it is pruned. Without indeterminate ops this is
    # the (bitset, state) cache of Lowe's algorithm. `unseen` configurations were not
    # fully explored, so they are not recorded.
    failed: dict[tuple[int, int, Hashable], list[int]] = {}
    path: list[tuple[int, Hashable, bool]] = []  # (op, state and unseen before it)
    tries = [moves(state, done_opt, unseen)]
    explored = 0
    best: tuple[int, list[int], int, Hashable] | None = None  # for the explanation

    while required_left:
        move = next(tries[-1], None)
        if move is None:
            # Dead end: this configuration fails; backtrack.
            if not unseen:
                if best is None or len(path) > best[0]:
                    overdue = nxt[0]
                    while is_call[overdue]:
                        overdue = nxt[overdue]
                    best = (len(path), [i for i, _, _ in path[-6:]], op_of[overdue], state)
                prior = failed.setdefault(memo_key(done_req, state), [])
                prior[:] = [f for f in prior if done_opt & ~f]  # drop entries we subsume
                prior.append(done_opt)
            tries.pop()
            if not path:
                break
            i, state, unseen = path.pop()
            if required[i]:
                done_req ^= bits[i]
                required_left += 1
                unlift(call_of[i])
            else:
                done_opt ^= bits[i]
            continue

        i, new_state = move
        if required[i]:
            req, opt = done_req | bits[i], done_opt
        else:
            req, opt = done_req, done_opt | bits[i]
        prior = failed.get(memo_key(req, new_state))
        if prior is not None and not all(f & ~opt for f in prior):
            continue
        explored += 1
        if explored > max_states:
            return None, (
                f"gave up after exploring {max_states} states "
                f"({len(ops)} operations on this key)"
            )
        path.append((i, state, unseen))
        done_req, done_opt, state = req, opt, new_state
        unseen = kind[i] == "write" and not required[i]
        if required[i]:
            required_left -= 1
            lift(call_of[i])
        tries.append(moves(state, done_opt, unseen))
    else:
        return True, "linearizable"

    assert best is not None  # set at the latest by the root's own dead end
    depth, tail_ops, blocked, at_state = best
    if depth == 0:
        where = f"from the initial state ({model.describe(at_state)})"
    else:
        shown = "; ".join(_fmt(ops[i]) for i in tail_ops)
        which = ", ending with" if depth > len(tail_ops) else ":"
        where = (
            f"after the longest linearizable prefix found ({depth} operation(s){which} "
            f"{shown}), which leaves the state {model.describe(at_state)}"
        )
    return False, (
        f"not linearizable: {where}, {_fmt(ops[blocked])} could not be linearized "
        "(nor could any other order of the operations concurrent with it be made to fit)"
    )


def _fmt(op: Operation) -> str:
    if op.kind == "get":
        call = f"get({op.key!r}) -> {op.value!r}"
    elif op.kind == "put":
        call = f"put({op.key!r}, {op.value!r})"
    elif op.kind == "cas":
        call = f"cas({op.key!r}, {op.expect!r} -> {op.value!r})"
    elif op.kind == "cas-delete":
        call = f"cas-delete({op.key!r}, {op.expect!r})"
    else:
        call = f"{op.kind}({op.key!r})" + ("" if op.value is None else f" {op.value!r}")
    end = "?" if op.complete is None else _fmt_time(op.complete)
    return f"p{op.process} {call} [{_fmt_time(op.invoke)}, {end}]"


def _fmt_time(t: float) -> str:
    return f"{t:.6f}".rstrip("0").rstrip(".") if isinstance(t, float) else str(t)


class HistoryRecorder:
    """Collects a history as it happens; safe to share between client threads.

    ``invoke`` returns a handle; resolve it with ``ok`` (a reply arrived) or ``fail``
    (the op definitely did not take effect). Ops never resolved are indeterminate.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # [process, kind, key, value, invoke, complete, ok, expect]: Operation's fields
        self._ops: list[list] = []

    def invoke(self, process: int, kind: str, key: str, value: str | None, time: float,
               expect: str | None = None) -> int:
        with self._lock:
            value = None if kind == "get" else value  # a get's value arrives with ok()
            self._ops.append([process, kind, key, value, time, None, True, expect])
            return len(self._ops) - 1

    def ok(self, handle: int, time: float, value: str | None = None) -> None:
        """Record the reply; for a get, ``value`` is what it observed (None = absent)."""
        with self._lock:
            rec = self._unresolved(handle)
            rec[5] = time
            if rec[1] == "get":
                rec[3] = value

    def fail(self, handle: int) -> None:
        with self._lock:
            self._unresolved(handle)[6] = False

    def operations(self) -> list[Operation]:
        with self._lock:
            return [Operation(*rec) for rec in self._ops]

    def _unresolved(self, handle: int) -> list:
        rec = self._ops[handle]
        if rec[5] is not None or not rec[6]:
            raise ValueError(f"operation {handle} was already resolved")
        return rec
