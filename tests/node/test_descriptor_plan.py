"""How a node shares its descriptors among its ports (keyval/descriptors.py)."""
import pytest

from keyval.descriptors import ACCEPT_BURST, LISTENERS, plan_descriptors
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
