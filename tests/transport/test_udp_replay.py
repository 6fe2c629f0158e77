"""The anti-replay sliding window and the per-sender guard."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from keyval_plugins.transport.udp_replay import ReplayGuard, ReplayWindow


def test_increasing_sequence_numbers_are_accepted_once():
    w = ReplayWindow(64)
    assert all(w.accept(s) for s in range(1, 200))
    assert not any(w.accept(s) for s in range(150, 200))


def test_reordering_within_the_window_is_fine():
    w = ReplayWindow(64)
    assert w.accept(100)
    assert w.accept(40)   # 60 behind: inside a 64-wide window
    assert w.accept(99)
    assert not w.accept(40)
    assert not w.accept(100)


def test_too_old_is_rejected():
    w = ReplayWindow(64)
    w.accept(100)
    assert not w.accept(36)  # exactly 64 behind: outside
    assert w.accept(37)


def test_a_big_jump_forgets_everything_behind():
    w = ReplayWindow(16)
    for s in range(1, 10):
        w.accept(s)
    assert w.accept(10_000)
    assert not w.accept(9)
    assert w.accept(9_999)


def test_check_does_not_record():
    w = ReplayWindow(8)
    assert w.check(5) and w.check(5)
    w.accept(5)
    assert not w.check(5)


def test_guard_separates_senders_and_epochs():
    g = ReplayGuard(width=32)
    assert g.accept("a", 1, 5)
    assert g.accept("b", 1, 5)
    assert g.accept("a", 2, 5)  # a restarted sender: new epoch, fresh window
    assert not g.accept("a", 1, 5)


def test_guard_holds_a_bounded_number_of_windows():
    g = ReplayGuard(width=32, max_windows=3)
    for epoch in range(10):
        g.accept("a", epoch, 1)
    assert len(g) == 3


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 300), max_size=200), st.integers(1, 100))
def test_window_matches_a_reference_model(seqs, width):
    w = ReplayWindow(width)
    seen: set[int] = set()
    highest = -1
    for s in seqs:
        fresh = s not in seen and (s > highest or highest - s < width)
        assert w.accept(s) == fresh
        if fresh:
            seen.add(s)
            highest = max(highest, s)
