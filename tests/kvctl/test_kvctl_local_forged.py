"""`kvctl local up`, then a stranger's forged AppendEntries: it authenticates nothing, changes
nothing, and every node counts it as dropped_auth (the counter /metrics exports as
keyval_transport_messages_total{event="dropped_auth"})."""
from __future__ import annotations

import json
import time

from keyval.client import Client
from keyval.kv import encode_put
from tests.node import forge

from kvctl_harness import ok


def test_forged_append_entries_against_kvctl_local_up_does_nothing(new_cluster):
    cluster = new_cluster()
    ok(cluster.kvctl("put", "k", "real"))
    endpoints = [cluster.endpoint(n) for n in (1, 2, 3)]
    with Client(endpoints, timeout=10) as client:
        before = {e: client.status(e) for e in endpoints}
    leader = next(s for s in before.values() if s["role"] == "leader")
    term, last = leader["term"], leader["last_index"]
    entry = (term + 1, last, forge.ENTRY_NORMAL, encode_put(b"k", b"forged"))
    for n, endpoint in enumerate(endpoints, 1):
        forged = forge.append_entries(leader["cluster_id"], term + 1, "intruder", before[endpoint]["id"],
                                      last - 1, term, [entry], last)
        forge.send_tcp(f"127.0.0.1:{cluster.base_port + n}", [forged, forge.sealed(forged, None)])
    time.sleep(0.5)
    with Client(endpoints, timeout=10) as client:
        after = {e: client.status(e) for e in endpoints}
        for endpoint in endpoints:
            assert after[endpoint]["transport"]["dropped_auth"] > before[endpoint]["transport"]["dropped_auth"]
            assert after[endpoint]["term"] == term
            assert client.get("k", serializable=True) == b"real"
    assert json.loads(ok(cluster.kvctl("get", "k", "--json")).stdout)["value"] == "real"
    assert json.loads(ok(cluster.kvctl("cluster", "leader", "--json")).stdout)["id"] == leader["id"]
