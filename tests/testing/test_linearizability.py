"""Tests for the linearizability checker (keyval.testing.linearizability)."""

from __future__ import annotations

import functools
import random
from dataclasses import replace

import pytest

from keyval.testing.linearizability import (
    CheckResult,
    HistoryRecorder,
    Operation,
    RegisterModel,
    check_history,
)


def put(p, value, inv, comp, key="x", ok=True):
    return Operation(p, "put", key, value, inv, comp, ok)


def get(p, value, inv, comp, key="x"):
    return Operation(p, "get", key, value, inv, comp)


def delete(p, inv, comp, key="x", ok=True):
    return Operation(p, "delete", key, None, inv, comp, ok)


def linearizable(*ops) -> bool | None:
    return check_history(ops).ok


# --- hand-written histories -------------------------------------------------------


def test_empty_history():
    r = check_history([])
    assert r == CheckResult(True, None, r.explanation, 0, 0)


def test_sequential_history():
    assert linearizable(get(1, None, 0, 1), put(1, "a", 2, 3), get(2, "a", 4, 5), put(2, "b", 6, 7),
                        get(1, "b", 8, 9)) is True


def test_stale_read_after_completed_write():
    r = check_history([put(1, "a", 0, 1), put(1, "b", 2, 3), get(2, "a", 4, 5)])
    assert r.ok is False and r.key == "x"
    assert "get('x') -> 'a'" in r.explanation
    assert "'b'" in r.explanation  # the state the prefix left behind


def test_initial_read_must_be_absent():
    assert linearizable(get(1, "a", 0, 1)) is False
    assert linearizable(get(1, None, 0, 1)) is True


def test_read_of_value_never_written():
    assert linearizable(put(1, "a", 0, 1), get(2, "zzz", 0.5, 2)) is False


def test_reads_observe_concurrent_writes_in_opposite_orders():
    writes = [put(1, "a", 0, 100), put(2, "b", 0, 100)]
    p3 = [get(3, "a", 1, 2), get(3, "b", 3, 4)]
    p4 = [get(4, "b", 1, 2), get(4, "a", 3, 4)]
    assert linearizable(*writes, *p3) is True
    assert linearizable(*writes, *p4) is True
    assert linearizable(*writes, *p3, *p4) is False


def test_lost_write():
    assert linearizable(put(1, "a", 0, 1), get(2, None, 2, 3)) is False
    assert linearizable(put(1, "a", 0, 1), put(1, "b", 2, 3), get(2, "b", 4, 5), get(2, "a", 6, 7)) is False


def test_indeterminate_write_may_have_happened():
    w = put(1, "a", 0, None)
    assert linearizable(w, get(2, "a", 5, 6)) is True
    assert linearizable(w, get(2, None, 5, 6)) is True
    # It may take effect arbitrarily late...
    assert linearizable(w, get(2, None, 5, 6), get(2, "a", 7, 8)) is True
    # ...but once seen it cannot un-happen, and it cannot happen before it was invoked.
    assert linearizable(w, get(2, "a", 5, 6), get(2, None, 7, 8)) is False
    assert linearizable(get(2, "a", 0, 1), put(1, "a", 2, None)) is False


def test_indeterminate_write_overwritten_or_not():
    ops = [put(1, "a", 0, 1), put(2, "b", 2, None), put(3, "c", 3, 4)]
    assert linearizable(*ops, get(4, "c", 5, 6), get(4, "b", 7, 8)) is True  # b landed late
    assert linearizable(*ops, get(4, "c", 5, 6), get(4, "c", 7, 8)) is True  # b never landed
    assert linearizable(*ops, get(4, "b", 5, 6), get(4, "c", 7, 8)) is False  # c done before


def test_indeterminate_writes_needed_late_and_out_of_order():
    # Only explanation: the delete invoked at 1 lands after the put invoked at 5.
    ops = [delete(1, 1, None), delete(2, 4, 4), put(3, "b", 5, None), get(4, "b", 5, 5), get(5, None, 6, 6)]
    assert linearizable(*ops) is True
    assert linearizable(*ops, get(6, "b", 7, 7)) is False


def test_indeterminate_write_saved_for_later():
    # The indeterminate put of "a" must not be spent early: the final read of "a" after
    # "b" overwrote the completed put of "a" needs it.
    ops = [get(1, "a", 5, 9), put(2, "b", 3, 4), get(3, "a", 4, 4), put(4, "a", 1, None),
           get(5, "b", 5, 9), put(6, "a", 1, 4), put(7, "b", 1, 2)]
    assert linearizable(*ops) is True
    assert linearizable(*ops, get(8, "b", 10, 11), get(8, "a", 12, 13)) is False


def test_indeterminate_get_is_dropped():
    r = check_history([put(1, "a", 0, 1), get(2, "nonsense", 2, None)])
    assert r.ok is True and r.checked_ops == 1


def test_failed_write_is_excluded():
    failed = put(1, "a", 0, 1, ok=False)
    assert linearizable(failed, get(2, None, 2, 3)) is True
    assert linearizable(failed, get(2, "a", 2, 3)) is False
    # Even a read concurrent with the failed write cannot see it.
    assert linearizable(failed, get(2, "a", 0.5, 0.7)) is False


def test_delete_semantics():
    assert linearizable(put(1, "a", 0, 1), delete(1, 2, 3), get(2, None, 4, 5)) is True
    assert linearizable(put(1, "a", 0, 1), delete(1, 2, 3), get(2, "a", 4, 5)) is False
    assert linearizable(delete(1, 0, 1), get(2, None, 2, 3)) is True  # deleting an absent key
    assert linearizable(put(1, "a", 0, 1), delete(1, 2, 3), put(1, "b", 4, 5), get(2, "b", 6, 7)) is True
    # An indeterminate delete may or may not have happened.
    assert linearizable(put(1, "a", 0, 1), delete(1, 2, None), get(2, "a", 4, 5)) is True
    assert linearizable(put(1, "a", 0, 1), delete(1, 2, None), get(2, None, 4, 5)) is True
    assert linearizable(put(1, "a", 0, 1), delete(1, 2, 3, ok=False), get(2, None, 4, 5)) is False


def test_concurrent_overlaps_are_ok():
    # A read overlapping a write may see either side of it.
    assert linearizable(put(1, "a", 0, 1), put(1, "b", 2, 5), get(2, "a", 3, 4)) is True
    assert linearizable(put(1, "a", 0, 1), put(1, "b", 2, 5), get(2, "b", 3, 4)) is True
    # A read that completes before the write is invoked cannot see it.
    assert linearizable(put(1, "a", 0, 1), put(1, "b", 2, 5), get(2, "b", 1.5, 1.8)) is False
    # Overlapping reads may straddle the write in either order, unless real time forbids it.
    ops = [put(1, "a", 0, 1), put(1, "b", 2, 10)]
    assert linearizable(*ops, get(2, "b", 3, 6), get(3, "a", 4, 7)) is True
    assert linearizable(*ops, get(2, "b", 3, 4), get(3, "a", 5, 7)) is False


def test_touching_intervals_are_concurrent():
    # complete == invoke does not order the two ops: the checker may put either first.
    assert linearizable(put(1, "a", 0, 1), put(1, "b", 2, 3), get(2, "a", 3, 4)) is True
    assert linearizable(put(1, "a", 0, 1), put(1, "b", 2, 3), get(2, "a", 3.5, 4)) is False
    assert linearizable(get(2, "a", 0, 2), put(1, "a", 2, 3)) is True
    assert linearizable(put(1, "a", 2, 2), get(2, "a", 2, 2)) is True  # instantaneous ops


# --- multiple keys, results, validation -------------------------------------------


def test_keys_are_checked_independently():
    ops = [
        put(1, "a", 0, 1, key="k1"), get(2, "a", 2, 3, key="k1"),
        put(1, "a", 0, 1, key="k2"), put(1, "b", 2, 3, key="k2"), get(2, "a", 4, 5, key="k2"),
        get(3, None, 0, 9, key="k3"),
        put(3, "z", 10, 11, key="k3", ok=False),  # excluded from the count
        get(4, "z", 12, None, key="k3"),  # indeterminate get: dropped
    ]
    r = check_history(ops)
    assert r.ok is False and r.key == "k2"
    assert "'k2'" in r.explanation and "'k1'" not in r.explanation
    assert (r.checked_ops, r.keys) == (6, 3)
    # The same writes interleaved with other keys' ops are fine on their own.
    assert check_history(o for o in ops if o.key != "k2").ok is True


def test_first_failing_key_in_sorted_order():
    bad = lambda k: [put(1, "a", 0, 1, key=k), get(2, None, 2, 3, key=k)]  # noqa: E731
    assert check_history(bad("m") + bad("c") + bad("x")).key == "c"


def _budget_buster(key="x", n=12):
    # n pairwise-concurrent writes and a read of a value none wrote: the search must try
    # every subset of the writes before it can conclude anything.
    return [put(i, f"v{i}", 0, 10, key=key) for i in range(n)] + [get(99, "nope", 20, 21, key=key)]


def test_gives_up_beyond_budget():
    r = check_history(_budget_buster(), max_states=500)
    assert r.ok is None and r.key == "x" and "gave up" in r.explanation
    assert check_history(_budget_buster()).ok is False


def test_giving_up_does_not_mask_a_later_violation():
    ops = _budget_buster(key="a") + [put(1, "a", 0, 1, key="b"), get(2, None, 2, 3, key="b")]
    r = check_history(ops, max_states=500)
    assert r.ok is False and r.key == "b"
    ok_b = [put(1, "a", 0, 1, key="b"), get(2, "a", 2, 3, key="b")]
    r = check_history(_budget_buster(key="a") + ok_b, max_states=500)
    assert r.ok is None and r.key == "a"


def test_explanation_shows_prefix_and_blocked_op():
    ops = [put(1, str(i), 2 * i, 2 * i + 1) for i in range(10)] + [get(2, "3", 30, 31)]
    r = check_history(ops)
    assert r.ok is False
    assert "10 operation(s)" in r.explanation  # all ten puts linearize, the get cannot
    assert "put('x', '9')" in r.explanation and "leaves the state '9'" in r.explanation
    assert "p2 get('x') -> '3' [30, 31]" in r.explanation


def test_rejects_malformed_operations():
    with pytest.raises(ValueError, match="before it is invoked"):
        check_history([put(1, "a", 5, 4)])
    with pytest.raises(ValueError, match="unknown operation kind"):
        check_history([Operation(1, "cas", "x", "a", 0, 1)])


class CasRegister(RegisterModel):
    """The register plus compare-and-swap: value "old>new" ("" = absent) completes only
    if the register held old. Its effect depends on the state, so it is "other"."""

    kinds = RegisterModel.kinds | {"cas"}

    def step(self, state, op):
        if op.kind == "cas":
            old, new = op.value.split(">")
            return state == (old or None), new or None
        return super().step(state, op)

    def classify(self, op):
        return "other" if op.kind == "cas" else super().classify(op)


def cas(p, old_new, inv, comp):
    return Operation(p, "cas", "x", old_new, inv, comp)


def test_model_is_pluggable():
    ops = [put(1, "a", 0, 1), cas(2, "a>b", 2, 3), get(3, "b", 4, 5)]
    assert check_history(ops, model=CasRegister()).ok is True
    assert check_history([*ops, cas(2, "a>c", 6, 7)], model=CasRegister()).ok is False
    # An indeterminate cas may be needed to explain a read, or be left out.
    ops = [put(1, "a", 0, 1), cas(2, "a>b", 2, None)]
    assert check_history([*ops, get(3, "b", 4, 5)], model=CasRegister()).ok is True
    assert check_history([*ops, get(3, "a", 4, 5)], model=CasRegister()).ok is True
    with pytest.raises(ValueError, match="unknown operation kind"):
        check_history(ops)  # the plain register has no cas


# --- HistoryRecorder -------------------------------------------------------------


def test_history_recorder():
    rec = HistoryRecorder()
    w = rec.invoke(1, "put", "x", "a", 0)
    g = rec.invoke(2, "get", "x", None, 0.5)
    lost = rec.invoke(3, "put", "x", "b", 1)
    failed = rec.invoke(4, "delete", "x", None, 1)
    rec.ok(w, 2)
    rec.ok(g, 3, "a")
    rec.fail(failed)
    assert rec.operations() == [
        Operation(1, "put", "x", "a", 0, 2),
        Operation(2, "get", "x", "a", 0.5, 3),
        Operation(3, "put", "x", "b", 1, None),
        Operation(4, "delete", "x", None, 1, None, ok=False),
    ]
    assert check_history(rec.operations()).ok is True
    with pytest.raises(ValueError):
        rec.ok(w, 4)
    with pytest.raises(ValueError):
        rec.fail(failed)
    assert lost == 2


# --- randomized ------------------------------------------------------------------


def reference_check(ops: list[Operation], model=RegisterModel()) -> bool:
    """The definition, executed directly: a memoized search over every order of every
    allowed subset of ops (indeterminate writes may be left out). Fine for ~14 ops."""
    ops = [o for o in ops if o.ok and not (o.complete is None and o.kind == "get")]

    def key_ok(kops):
        @functools.cache
        def search(done: frozenset[int], state) -> bool:
            left = [i for i in range(len(kops)) if i not in done]
            if all(kops[i].complete is None for i in left):
                return True
            for i in left:
                # i may go next unless some other pending op finished before i started.
                if any(kops[j].complete is not None and kops[j].complete < kops[i].invoke for j in left):
                    continue
                legal, new_state = model.step(state, kops[i])
                if legal and search(done | {i}, new_state):
                    return True
            return False

        return search(frozenset(), model.init())

    return all(key_ok([o for o in ops if o.key == k]) for k in {o.key for o in ops})


def random_small_history(rng: random.Random, with_cas=False) -> list[Operation]:
    ops = []
    for p in range(rng.randint(1, 14)):
        inv = rng.randint(0, 6)
        comp = None if rng.random() < 0.3 else inv + rng.randint(0, 4)  # integer times: ties
        kind = rng.choice(["put", "put", "get", "get", "delete"] + ["cas", "cas"] * with_cas)
        value = {"put": rng.choice(["a", "b"]), "get": rng.choice(["a", "b", None]), "delete": None,
                 "cas": rng.choice(["a>b", "b>a", ">a", "a>", "b>b"])}[kind]
        ops.append(Operation(p, kind, rng.choice("xxxxy"), value, inv, comp, rng.random() > 0.1))
    return ops


def test_agrees_with_reference_on_small_histories():
    rng = random.Random(1234)
    outcomes = set()
    for _ in range(5000):
        ops = random_small_history(rng)
        expected = reference_check(ops)
        assert check_history(ops).ok is expected, ops
        assert check_history(ops[::-1]).ok is expected, ops  # order must not matter
        outcomes.add(expected)
    assert outcomes == {True, False}


def test_agrees_with_reference_with_a_cas_model():
    rng, model = random.Random(4321), CasRegister()
    outcomes = set()
    for _ in range(3000):
        ops = random_small_history(rng, with_cas=True)
        expected = reference_check(ops, model)
        assert check_history(ops, model=model).ok is expected, ops
        outcomes.add(expected)
    assert outcomes == {True, False}


def simulate_register(rng, n_ops, n_clients, keys=("k",), p_indet=0.0, p_fail=0.0,
                      unique=True, integer_times=False):
    """A history from a truly atomic register (so always linearizable).

    Each client runs one op at a time over a random interval; the op takes effect at a
    random instant inside it. Indeterminate writes may or may not take effect.
    """
    free = [rng.uniform(0, 2) for _ in range(n_clients)]
    planned = []  # (linearization point or None if it never took effect, index)
    ops: list[Operation] = []
    for n in range(n_ops):
        c = rng.randrange(n_clients)
        inv = free[c] + rng.expovariate(1.0)
        comp = inv + rng.expovariate(0.5)
        free[c] = comp
        kind = rng.choice(["put", "put", "get", "get", "get", "delete"])
        value = (f"v{n}" if unique else rng.choice("abc")) if kind == "put" else None
        at = rng.uniform(inv, comp)
        ok, done = True, comp
        if kind != "get" and rng.random() < p_fail:
            ok, at = False, None
        elif rng.random() < p_indet:
            done = None
            if rng.random() < 0.5:
                at = None
        if integer_times:  # widening an interval keeps the history linearizable
            inv = float(int(inv))
            done = None if done is None else float(int(done) + 1)
        ops.append(Operation(c, kind, rng.choice(keys), value, inv, done, ok))
        planned.append((at, n))
    state: dict[str, str | None] = {}
    for at, n in sorted(p for p in planned if p[0] is not None):
        o = ops[n]
        if o.kind == "get":
            ops[n] = replace(o, value=state.get(o.key))
        else:
            state[o.key] = o.value
    return ops


def make_stale_read(rng, ops):
    """Change one read to a value that real time proves was already overwritten.

    Needs unique put values. Returns (mutated history, key) or None if there is no
    such read.
    """
    done = lambda o: o.ok and o.complete is not None  # noqa: E731
    gets = [i for i, o in enumerate(ops) if o.kind == "get" and o.complete is not None]
    rng.shuffle(gets)
    for g in gets:
        G = ops[g]
        w2s = [o for o in ops if o.key == G.key and o.kind != "get" and done(o) and o.complete < G.invoke]
        rng.shuffle(w2s)
        for W2 in w2s:
            w1s = [o for o in ops if o.key == G.key and o.kind == "put" and done(o) and o.complete < W2.invoke]
            if w1s:
                mutated = list(ops)
                mutated[g] = replace(G, value=rng.choice(w1s).value)
                return mutated, G.key
    return None


@pytest.mark.parametrize("seed", range(40))
def test_atomic_register_histories_are_linearizable(seed):
    rng = random.Random(seed)
    ops = simulate_register(
        rng, n_ops=rng.randint(20, 200), n_clients=rng.randint(2, 8), keys=("a", "b", "c")[: rng.randint(1, 3)],
        p_indet=rng.choice([0.0, 0.05]), p_fail=rng.choice([0.0, 0.05]),
        unique=seed % 2 == 0, integer_times=seed % 3 == 0,
    )
    r = check_history(ops)
    assert r.ok is True, r.explanation


@pytest.mark.parametrize("seed", range(40))
def test_stale_reads_are_caught(seed):
    rng = random.Random(seed)
    ops = simulate_register(
        rng, n_ops=rng.randint(20, 200), n_clients=rng.randint(2, 8), keys=("a", "b", "c")[: rng.randint(1, 3)],
        p_indet=rng.choice([0.0, 0.05]), p_fail=rng.choice([0.0, 0.05]), integer_times=seed % 3 == 0,
    )
    stale = make_stale_read(rng, ops)
    assert stale is not None
    mutated, key = stale
    r = check_history(mutated)
    assert r.ok is False and r.key == key, r.explanation


def test_performance_smoke_2000_ops_8_clients():
    rng = random.Random(2000)
    ops = simulate_register(rng, n_ops=2000, n_clients=8, p_indet=0.01)
    r = check_history(ops)
    assert r.ok is True and r.keys == 1 and r.checked_ops > 1900
    mutated, key = make_stale_read(rng, ops)
    assert check_history(mutated).ok is False
