"""Fault rules without a network: the format, and what each rule does to one message."""
from __future__ import annotations

import random

import pytest

from keyval_plugins.transport.faulty_rules import (
    Partition,
    RuleError,
    Rules,
    decide,
    parse_rules,
    partitions_between,
)


def fate(doc, side="send", frm="a", to="b", kind="Heartbeat", seed=0):
    return decide(parse_rules(doc), side, frm, to, kind, random.Random(seed))


def test_no_rules_delivers_at_once():
    assert fate({}).delays == (0.0,)
    assert fate(None).delays == (0.0,)
    assert not parse_rules({})


def test_full_format_parses():
    rules = parse_rules({
        "rules": [{"drop": 0.5, "duplicate": 0.1, "delay_ms": 5, "jitter_ms": 2, "on": "both",
                   "from": "a", "to": ["b", "c"], "types": ["AppendEntries"]}],
        "partitions": [["a", "b"], {"from": "c", "to": "a", "one_way": True}],
    })
    rule = rules.rules[0]
    assert (rule.drop, rule.on, rule.frm, rule.to) == (0.5, "both", frozenset("a"), frozenset("bc"))
    assert rules.partitions == (Partition("a", "b"), Partition("c", "a", True))


@pytest.mark.parametrize("doc,where", [
    ([], "JSON object"),
    ({"rule": []}, "unknown key"),
    ({"rules": {}}, "rules must be a list"),
    ({"rules": [{"drop": 2}]}, r"rules\[0\].drop"),
    ({"rules": [{"drop": True}]}, r"rules\[0\].drop"),
    ({"rules": [{"delay_ms": -1}]}, r"rules\[0\].delay_ms"),
    ({"rules": [{"on": "sideways"}]}, r"rules\[0\].on"),
    ({"rules": [{"to": 3}]}, r"rules\[0\].to"),
    ({"rules": [{"dorp": 0.1}]}, "unknown key"),
    ({"partitions": [["a"]]}, r"partitions\[0\]"),
    ({"partitions": [{"from": "a"}]}, r"partitions\[0\]"),
])
def test_malformed_documents_name_the_problem(doc, where):
    with pytest.raises(RuleError, match=where):
        parse_rules(doc)


def test_partitions_both_ways_and_one_way():
    both = {"partitions": [["a", "b"]]}
    assert fate(both, frm="a", to="b").partitioned
    assert fate(both, frm="b", to="a").partitioned
    assert not fate(both, frm="a", to="c").dropped
    one = {"partitions": [{"from": "a", "to": "b", "one_way": True}]}
    assert fate(one, frm="a", to="b").partitioned
    assert not fate(one, frm="b", to="a").dropped
    # Partitions hold on the receiving side too.
    assert fate(one, side="receive", frm="a", to="b").partitioned


def test_drop_probability_is_seeded_and_roughly_right():
    rules = parse_rules({"rules": [{"drop": 0.3}]})

    def run(seed):
        rng = random.Random(seed)
        return [decide(rules, "send", "a", "b", "Heartbeat", rng).dropped for _ in range(2000)]

    assert run(1) == run(1)
    assert run(1) != run(2)
    assert 0.25 < sum(run(1)) / 2000 < 0.35


def test_rules_apply_on_their_side_only():
    doc = {"rules": [{"drop": 1.0, "on": "receive"}]}
    assert not fate(doc, side="send").dropped
    assert fate(doc, side="receive").dropped
    assert fate({"rules": [{"drop": 1.0, "on": "both"}]}, side="send").dropped


def test_filters_select_messages():
    doc = {"rules": [{"drop": 1.0, "from": "a", "to": "b", "types": ["AppendEntries"]}]}
    assert fate(doc, kind="AppendEntries").dropped
    assert not fate(doc, kind="Heartbeat").dropped
    assert not fate(doc, frm="c", kind="AppendEntries").dropped
    assert not fate(doc, to="c", kind="AppendEntries").dropped


def test_duplicates_and_delays_compose():
    doc = {"rules": [{"duplicate": 1.0}, {"delay_ms": 10}, {"delay_ms": 5, "jitter_ms": 4}]}
    f = fate(doc)
    assert len(f.delays) == 2
    assert all(0.015 <= d <= 0.019 for d in f.delays)


def test_jitter_reorders():
    rules = parse_rules({"rules": [{"jitter_ms": 50}]})
    rng = random.Random(5)
    delays = [decide(rules, "send", "a", "b", "Heartbeat", rng).delays[0] for _ in range(20)]
    assert delays != sorted(delays)


def test_partition_helper_splits_groups():
    pairs = partitions_between([["a"], ["b", "c"]])
    assert pairs == [["a", "b"], ["a", "c"]]
    assert parse_rules({"partitions": pairs}) == Rules((), (Partition("a", "b"), Partition("a", "c")))
