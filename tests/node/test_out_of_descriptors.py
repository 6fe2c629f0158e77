"""Running out of file descriptors pauses accepting and stops nothing (issue 15): a real
`keyval serve` process, on both event loops, whose descriptors a flood of connections uses
up while a client writes on a connection made before. Segments are small, so the writes
keep needing new files.

The descriptor plan keeps a flood alone from taking the descriptors storage needs
(tests/node/test_client_limits.py). To get a node out of descriptors anyway, as a leak in a
plugin or an operator's `prlimit` could, the test lowers the running node's limit to a
little above what it holds; then the flood takes the rest."""
from __future__ import annotations

import os
import resource
import time

import pytest

from keyval.client import Client

from .client_floods import allow_descriptors, close_all, open_connections
from .procs import BackgroundWriter, LocalCluster
from .test_disk_full import read_back
from .test_node_stuck_member import wait_until


@pytest.mark.parametrize("event_loop", ["uvloop", "asyncio"])
def test_out_of_descriptors_the_node_pauses_accepting_retries_its_writes_and_recovers(tmp_path, monkeypatch,
                                                                                     event_loop):
    monkeypatch.setenv("KEYVAL_EVENT_LOOP", event_loop)
    allow_descriptors(600)
    config = tmp_path / "node.yaml"
    config.write_text("storage_options:\n  segment_size: 64KiB\n")
    cluster = LocalCluster(tmp_path, size=1, extra=("--config", str(config)), nofile=1024)
    cluster.start()
    node = cluster.nodes["n1"]
    flood = []
    try:
        cluster.wait_for_leader()
        with BackgroundWriter(lambda: Client([node.client_addr], timeout=3), value_bytes=550) as writer:
            wait_until(lambda: len(writer.acked) >= 50, 20, "writes before the flood", cluster)
            held = len(os.listdir(f"/proc/{node.proc.pid}/fd"))
            resource.prlimit(node.proc.pid, resource.RLIMIT_NOFILE, (held + 24, 1024))
            flood = open_connections(node.client_addr, 300)
            wait_until(lambda: "persisting failed: [Errno 24] Too many open files" in node.log(), 20,
                       "a write failing for want of a descriptor", cluster)
            stalled = len(writer.acked)
            time.sleep(2)
            assert node.running
            close_all(flood)
            wait_until(lambda: "persisting works again" in node.log(), 20, "writes going through again", cluster)
            wait_until(lambda: len(writer.acked) >= stalled + 50, 20, "more writes", cluster)
        # Accepting again: a new client connects and reads every acknowledged write.
        with Client([node.client_addr], timeout=10) as client:
            assert client.get(max(writer.acked)) == writer.acked[max(writer.acked)]
            assert client.status(node.client_addr)["space"]["persist_error"] is None
        log = node.log()
        assert "Traceback" not in log and "fatal" not in log, log[-3000:]
        if event_loop == "asyncio":  # uvloop drops such connections without an error to report
            assert "accept_out_of_descriptors +" in log, log[-3000:]
        assert node.stop() == 0
        held = read_back(node.data_dir)
        assert set(writer.acked) <= set(held) <= writer.tried
        assert all(held[key] == value for key, value in writer.acked.items())
    finally:
        close_all(flood)
        cluster.stop_all()
