"""The checker's compare-and-set register (CasRegisterModel): hand-written histories, agreement
with a brute-force search, and histories from a truly atomic register with cas."""
from __future__ import annotations

import functools
import random
from dataclasses import replace

import pytest

from keyval.testing.linearizability import CasRegisterModel, HistoryRecorder, Operation, check_history

MODEL = CasRegisterModel()


def put(p, value, inv, comp, key="x"):
    return Operation(p, "put", key, value, inv, comp)


def get(p, value, inv, comp, key="x"):
    return Operation(p, "get", key, value, inv, comp)


def cas(p, expect, value, inv, comp, ok=True, key="x"):
    return Operation(p, "cas", key, value, inv, comp, ok, expect)


def cas_delete(p, expect, inv, comp, ok=True, key="x"):
    return Operation(p, "cas-delete", key, None, inv, comp, ok, expect)


def linearizable(*ops) -> bool | None:
    return check_history(ops, model=MODEL).ok


def test_cas_takes_effect_only_from_the_expected_value():
    assert linearizable(put(1, "a", 0, 1), cas(2, "a", "b", 2, 3), get(3, "b", 4, 5)) is True
    # It succeeded although the key held "b", not "a".
    assert linearizable(put(1, "a", 0, 1), put(1, "b", 2, 3), cas(2, "a", "c", 4, 5)) is False
    # expect None: the key must be absent.
    assert linearizable(cas(1, None, "a", 0, 1), get(2, "a", 2, 3)) is True
    assert linearizable(put(1, "a", 0, 1), cas(2, None, "b", 2, 3)) is False


def test_two_cas_from_the_same_value_cannot_both_succeed():
    ops = [put(1, "a", 0, 1), cas(2, "a", "b", 2, 5), cas(3, "a", "c", 2, 5)]
    assert linearizable(*ops) is False
    assert linearizable(*ops[:2], replace(ops[2], ok=False)) is True  # the refused one is excluded


def test_refused_cas_is_excluded_and_a_read_cannot_see_it():
    refused = cas(2, "a", "b", 2, 3, ok=False)
    assert linearizable(put(1, "a", 0, 1), refused, get(3, "a", 4, 5)) is True
    assert linearizable(put(1, "a", 0, 1), refused, get(3, "b", 4, 5)) is False


def test_indeterminate_cas_may_or_may_not_have_happened():
    base = [put(1, "a", 0, 1), cas(2, "a", "b", 2, None)]
    assert linearizable(*base, get(3, "b", 4, 5)) is True
    assert linearizable(*base, get(3, "a", 4, 5)) is True
    # Once seen it stays; and it cannot have happened from a state other than "a".
    assert linearizable(*base, get(3, "b", 4, 5), get(3, "a", 6, 7)) is False
    assert linearizable(put(1, "z", 0, 1), cas(2, "a", "b", 2, None), get(3, "b", 4, 5)) is False


def test_indeterminate_put_explains_a_later_cas():
    # The cas from "a" succeeded: only an indeterminate put of "a", landing late, explains it.
    done = [put(2, "z", 0, 1), cas(3, "a", "b", 2, 3)]
    assert linearizable(*done) is False
    assert linearizable(put(1, "a", 0.5, None), *done) is True
    assert linearizable(put(1, "a", 4, None), *done) is False  # invoked after the cas completed
    assert linearizable(put(1, "a", 0.5, None), *done, get(4, "a", 5, 6)) is False  # spent by the cas


def test_cas_delete():
    assert linearizable(put(1, "a", 0, 1), cas_delete(2, "a", 2, 3), get(3, None, 4, 5)) is True
    assert linearizable(put(1, "a", 0, 1), cas_delete(2, "b", 2, 3)) is False
    assert linearizable(put(1, "a", 0, 1), cas_delete(2, "a", 2, None), get(3, None, 4, 5)) is True
    assert linearizable(put(1, "a", 0, 1), cas_delete(2, "a", 2, 3, ok=False), get(3, None, 4, 5)) is False


def test_explanation_names_the_cas():
    r = check_history([put(1, "a", 0, 1), put(1, "b", 2, 3), cas(2, "a", "c", 4, 5)], model=MODEL)
    assert r.ok is False and "cas('x', 'a' -> 'c')" in r.explanation


def test_recorder_keeps_the_expected_value():
    rec = HistoryRecorder()
    h = rec.invoke(1, "cas", "x", "b", 0, expect="a")
    rec.ok(h, 1)
    assert rec.operations() == [cas(1, "a", "b", 0, 1)]


# --- against the definition ----------------------------------------------------------------


def reference_check(ops: list[Operation]) -> bool:
    """Every order of every allowed subset, memoized: the definition itself (small inputs)."""
    ops = [o for o in ops if o.ok and not (o.complete is None and o.kind == "get")]

    def key_ok(kops):
        @functools.cache
        def search(done: frozenset[int], state) -> bool:
            left = [i for i in range(len(kops)) if i not in done]
            if all(kops[i].complete is None for i in left):
                return True
            for i in left:
                if any(kops[j].complete is not None and kops[j].complete < kops[i].invoke for j in left):
                    continue
                legal, new_state = MODEL.step(state, kops[i])
                if legal and search(done | {i}, new_state):
                    return True
            return False

        return search(frozenset(), MODEL.init())

    return all(key_ok([o for o in ops if o.key == k]) for k in {o.key for o in ops})


def random_small_history(rng: random.Random) -> list[Operation]:
    ops = []
    for p in range(rng.randint(1, 13)):
        inv = rng.randint(0, 6)
        comp = None if rng.random() < 0.3 else inv + rng.randint(0, 4)
        kind = rng.choice(["put", "get", "get", "delete", "cas", "cas", "cas-delete"])
        value = rng.choice(["a", "b"]) if kind in ("put", "cas") else None
        if kind == "get":
            value = rng.choice(["a", "b", None])
        expect = rng.choice(["a", "b", None]) if kind.startswith("cas") else None
        ops.append(Operation(p, kind, rng.choice("xxxy"), value, inv, comp, rng.random() > 0.1, expect))
    return ops


def test_agrees_with_the_definition_on_small_histories():
    rng = random.Random(77)
    outcomes = set()
    for _ in range(4000):
        ops = random_small_history(rng)
        expected = reference_check(ops)
        assert check_history(ops, model=MODEL).ok is expected, ops
        assert check_history(ops[::-1], model=MODEL).ok is expected, ops
        outcomes.add(expected)
    assert outcomes == {True, False}


def atomic_cas_register(rng: random.Random, n_ops: int, clients: int, p_indet: float) -> list[Operation]:
    """A history of a truly atomic register with cas (so linearizable). A client's cas expects
    the value it last read, as the nemesis's clients do; unique values."""
    free = [rng.uniform(0, 2) for _ in range(clients)]
    seen: list[str | None] = [None] * clients
    planned = []
    for n in range(n_ops):
        c = rng.randrange(clients)
        inv = free[c] + rng.expovariate(1.0)
        comp = inv + rng.expovariate(0.5)
        free[c] = comp
        kind = rng.choice(["put", "get", "get", "delete", "cas", "cas", "cas-delete"])
        planned.append((rng.uniform(inv, comp), n, c, kind, inv, comp))
    state: str | None = None
    ops: dict[int, Operation] = {}
    for at, n, c, kind, inv, comp in sorted(planned):
        # Planned in time order, so a client's expectation is what it had read by then.
        value = f"v{n}" if kind in ("put", "cas") else None
        expect = seen[c] if kind.startswith("cas") else None
        ok = True
        if kind == "get":
            value = seen[c] = state
        elif kind.startswith("cas") and state != expect:
            ok = False
        else:
            state = value if kind in ("put", "cas") else None
        done = comp
        if kind != "get" and ok and rng.random() < p_indet:
            done = None  # the reply was lost, the effect happened
        ops[n] = Operation(c, kind, "k", value, inv, done, ok, expect)
    return [ops[n] for n in range(n_ops)]


@pytest.mark.parametrize("seed", range(20))
def test_atomic_cas_register_histories_are_linearizable_and_a_flipped_outcome_is_caught(seed):
    rng = random.Random(seed)
    ops = atomic_cas_register(rng, n_ops=rng.randint(50, 300), clients=rng.randint(2, 8), p_indet=0.03)
    r = check_history(ops, model=MODEL)
    assert r.ok is True, r.explanation
    # A refused cas reported as successful: its new value would be read, or it contradicts.
    refused = [i for i, o in enumerate(ops) if o.kind == "cas" and not o.ok]
    assert refused
    i = rng.choice(refused)
    later_read = replace(get(99, ops[i].value, ops[i].complete + 100, ops[i].complete + 101), key="k")
    flipped = [*ops[:i], replace(ops[i], ok=True), *ops[i + 1:], later_read]
    assert check_history(flipped, model=MODEL).ok is False
