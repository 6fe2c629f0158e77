"""How a node shares its descriptors among its ports (keyval/clientport/descriptors.py)."""
import pytest

from keyval.clientport.descriptors import ACCEPT_BURST, LISTENERS, plan_descriptors
from keyval.errors import KeyvalError


def test_a_high_limit_gives_every_port_what_it_asks():
    plan = plan_descriptors(1 << 20, 20, 256, 4096, 1024)
    assert (plan.client_connections, plan.peer_connections) == (4096, 1024)


def test_a_low_limit_keeps_the_reserve_whatever_is_full():
    plan = plan_descriptors(1024, 14, 256, 4096, 1024)
    used = plan.in_use + plan.client_connections + plan.peer_connections + plan.metrics_connections
    assert used + LISTENERS * ACCEPT_BURST + plan.reserved <= 1024
    assert plan.client_connections >= 16 and plan.peer_connections < 1024


def test_too_few_descriptors_is_one_clear_error():
    with pytest.raises(KeyvalError, match=r"only 400 file descriptors \(ulimit -n\)"):
        plan_descriptors(400, 14, 256, 4096, 1024)


def test_accept_out_of_descriptors_is_counted_not_a_traceback():
    import asyncio
    import errno

    from keyval.clientport.descriptors import on_accept_out_of_descriptors

    reports, others = [], []
    loop = asyncio.new_event_loop()
    try:
        loop.set_exception_handler(lambda _loop, context: others.append(context))
        on_accept_out_of_descriptors(loop, reports.append)
        # What asyncio's selector loop reports when accept() fails for want of descriptors.
        loop.call_exception_handler({"message": "socket.accept() out of system resource",
                                     "exception": OSError(errno.EMFILE, "Too many open files")})
        loop.call_exception_handler({"message": "something else", "exception": ValueError("x")})
    finally:
        loop.close()
    assert len(reports) == 1 and "Too many open files" in reports[0]
    assert [c["message"] for c in others] == ["something else"]
