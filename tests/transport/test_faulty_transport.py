"""The faulty transport around real transports on loopback, chosen through the plugin manager."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import sys

import pytest

from keyval.errors import ConfigError
from keyval.plugin_api.loading import build_plugin_manager, choose_transport
from keyval_plugins.transport.faulty import FaultyTransport
from test_udp_support import Sink, hb, run, wait_until


def inner_available(name: str) -> bool:
    try:
        transport = choose_transport(build_plugin_manager(), name).factory({})
    except NotImplementedError:
        return False
    del transport
    return True


INNERS = [pytest.param(name, marks=pytest.mark.skipif(not inner_available(name),
                                                      reason=f"{name} transport not implemented yet"))
          for name in ("udp", "tcp")]


@pytest.fixture(params=INNERS)
def inner(request):
    return request.param


def open_faulty(options):
    transport = choose_transport(build_plugin_manager(), "faulty").factory(options)
    assert isinstance(transport, FaultyTransport)
    return transport


async def pair(inner, **options):
    a = open_faulty({"inner": inner, "seed": 1, **options})
    b = open_faulty({"inner": inner, "seed": 2, **options})
    sa, sb = Sink(), Sink()
    await a.start("a", "127.0.0.1:0", sa)
    await b.start("b", "127.0.0.1:0", sb)
    return a, b, sa, sb


async def settle():
    """Long enough for loopback delivery of a handful of messages."""
    await asyncio.sleep(0.15)


async def close(*transports):
    for t in transports:
        await t.close()


def test_drop_everything_blocks_then_clearing_rules_restores(inner):
    async def go():
        a, b, _, sb = await pair(inner)
        a.set_rules({"rules": [{"drop": 1.0}]})
        for i in range(20):
            a.send("b", b.address, hb(commit=i))
        await settle()
        assert len(sb) == 0 and a.stats()["fault_dropped"] == 20
        a.set_rules({})
        a.send("b", b.address, hb(commit=99))
        await wait_until(lambda: len(sb) == 1)
        assert sb.messages[0].commit == 99
        await close(a, b)
    run(go())


def test_one_way_partition(inner):
    async def go():
        a, b, sa, sb = await pair(inner)
        rules = {"partitions": [{"from": "a", "to": "b", "one_way": True}]}
        a.set_rules(rules)
        b.set_rules(rules)
        a.send("b", b.address, hb("a", "b"))
        b.send("a", a.address, hb("b", "a"))
        await wait_until(lambda: len(sa) == 1)
        await settle()
        assert len(sb) == 0 and a.stats()["fault_partitioned"] == 1
        await close(a, b)
    run(go())


def test_receive_side_partition_applies_to_an_innocent_sender(inner):
    async def go():
        a, b, _, sb = await pair(inner)
        b.set_rules({"partitions": [["a", "b"]]})
        a.send("b", b.address, hb())
        await wait_until(lambda: b.stats()["fault_partitioned"] == 1)
        assert len(sb) == 0
        await close(a, b)
    run(go())


def test_delay_with_jitter_reorders_but_delivers_everything(inner):
    async def go():
        a, b, _, sb = await pair(inner)
        a.set_rules({"rules": [{"delay_ms": 10, "jitter_ms": 60}]})
        for i in range(40):
            a.send("b", b.address, hb(commit=i))
        assert len(sb) == 0  # nothing goes out before its delay
        await wait_until(lambda: len(sb) == 40)
        commits = [m.commit for m in sb.messages]
        assert sorted(commits) == list(range(40)) and commits != list(range(40))
        await close(a, b)
    run(go())


def test_duplicate_delivers_twice(inner):
    async def go():
        a, b, _, sb = await pair(inner)
        b.set_rules({"rules": [{"duplicate": 1.0, "on": "receive"}]})
        a.send("b", b.address, hb(commit=7))
        await wait_until(lambda: len(sb) == 2)
        assert [m.commit for m in sb.messages] == [7, 7]
        await close(a, b)
    run(go())


def write_rules(path, doc) -> None:
    # Write then rename, as a test harness of real processes should: a reader never sees
    # half a file.
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(doc if isinstance(doc, str) else json.dumps(doc))
    os.replace(tmp, path)


def test_control_file_changes_take_effect(inner, tmp_path):
    control = tmp_path / "faults.json"
    write_rules(control, {"rules": [{"drop": 1.0}]})

    async def go():
        a, b, _, sb = await pair(inner, control_file=str(control), poll_interval=0.02)
        a.send("b", b.address, hb(commit=1))
        await settle()
        assert len(sb) == 0
        write_rules(control, {})
        await wait_until(lambda: a.stats()["rules_loaded"] >= 2)
        a.send("b", b.address, hb(commit=2))
        await wait_until(lambda: len(sb) == 1)
        write_rules(control, {"rules": [{"drop": 1.0}]})
        await wait_until(lambda: bool(a.rules))
        os.remove(control)  # a missing file means no faults
        await wait_until(lambda: not a.rules)
        await close(a, b)
    run(go())


def test_malformed_control_file_keeps_previous_rules_and_is_logged_once(inner, tmp_path, caplog):
    control = tmp_path / "faults.json"
    write_rules(control, {"partitions": [["a", "b"]]})

    async def go():
        a, b, _, sb = await pair(inner, control_file=str(control), poll_interval=0.02)
        write_rules(control, "{not json")
        await wait_until(lambda: a.stats()["rules_rejected"] == b.stats()["rules_rejected"] == 1)
        await settle()  # several more polls of the same bad file
        a.send("b", b.address, hb())
        await settle()
        assert len(sb) == 0 and a.stats()["fault_partitioned"] == 1
        write_rules(control, {"rules": [{"drop": 7}]})  # valid JSON, invalid rules
        await wait_until(lambda: a.stats()["rules_rejected"] == b.stats()["rules_rejected"] == 2)
        assert a.rules.partitions
        await close(a, b)

    with caplog.at_level(logging.WARNING, logger="keyval_plugins.transport.faulty"):
        run(go())
    malformed = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert len(malformed) == 4  # two bad versions, seen by each of the two transports


def test_close_cancels_delayed_messages_and_send_never_raises(inner):
    async def go():
        a, b, _, sb = await pair(inner)
        a.set_rules({"rules": [{"delay_ms": 10_000}]})
        a.send("b", b.address, hb())
        a.send("nobody", "127.0.0.1:1", hb("a", "nobody"))
        assert a.stats()["fault_pending"] == 2
        await close(a, b)
        assert a.stats()["fault_pending"] == 0
    run(go())


def test_options_pass_through_and_are_checked():
    with pytest.raises(ConfigError, match="unknown udp option"):
        open_faulty({"inner": "udp", "not_an_option": 1})
    with pytest.raises(ConfigError, match="rules"):
        open_faulty({"inner": "udp", "rules": {"rules": [{"drop": 5}]}})
    with pytest.raises(ConfigError, match="cannot wrap itself"):
        open_faulty({"inner": "faulty"})
    t = open_faulty({"inner": "udp", "max_datagram_bytes": 1400, "rules": {"partitions": [["x", "y"]]}})
    assert t.inner.options.max_datagram_bytes == 1400 and t.rules.partitions
    with pytest.raises(ConfigError, match="poll_interval"):
        open_faulty({"inner": "udp", "poll_interval": "often"})


CHILD = """
import asyncio, sys
from keyval.plugin_api.loading import build_plugin_manager, choose_transport

async def main():
    t = choose_transport(build_plugin_manager(), "faulty").factory(
        {"inner": "udp", "control_file": sys.argv[1], "poll_interval": 0.02})
    await t.start("b", "127.0.0.1:0", lambda m: print("got", m.commit, flush=True))
    print("address", t.address, flush=True)
    await asyncio.sleep(30)

asyncio.run(main())
"""


def test_control_file_steers_another_process(tmp_path):
    """What a test of real nodes does: one control file, read by a node in its own process."""
    control = tmp_path / "faults.json"
    write_rules(control, {"partitions": [["a", "b"]]})

    async def go():
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CHILD, str(control), stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
        try:
            line = (await child.stdout.readline()).decode().split()
            assert line[0] == "address", line
            a = open_faulty({"inner": "udp"})
            await a.start("a", "127.0.0.1:0", Sink())
            for i in range(5):
                a.send("b", line[1], hb(commit=i))
            await asyncio.sleep(0.2)
            write_rules(control, {})
            got = None
            for i in range(100, 200):  # Raft would retry too: resend until one arrives
                a.send("b", line[1], hb(commit=i))
                try:
                    got = await asyncio.wait_for(child.stdout.readline(), 0.05)
                    break
                except asyncio.TimeoutError:
                    continue
            assert got is not None and int(got.split()[1]) >= 100  # nothing from the partition
            await a.close()
        finally:
            child.kill()
            await child.wait()
    run(go(), timeout=30)


def test_a_rewrite_that_keeps_size_and_mtime_is_still_seen(tmp_path):
    control = tmp_path / "faults.json"
    control.write_text('{"rules": [{"drop": 1.0}]}')
    stamp = os.stat(control).st_mtime_ns
    t = FaultyTransport({"control_file": str(control)}, inner=object())
    t._poll_control_file()
    assert t.rules.rules[0].drop == 1.0
    control.write_text('{"rules": [{"drop": 0.5}]}')  # same size, same inode
    os.utime(control, ns=(stamp, stamp))               # and the same mtime
    t._poll_control_file()
    assert t.rules.rules[0].drop == 0.5
    t._poll_control_file()
    assert t._counts["rules_loaded"] == 2  # unchanged contents are not applied again
