"""The ``faulty`` transport with no rules keeps the contract of the transport it wraps."""
from __future__ import annotations

from test_conformance_udp import TestUdp as _Udp

from keyval.testing.transport_conformance import TransportConformance


class TestFaultyOverUdp(_Udp):
    backend = "faulty"
    options = {"inner": "udp", "seed": 3}


class TestFaultyOverTcp(TransportConformance):
    backend = "faulty"
    options = {"inner": "tcp", "seed": 3, "reconnect_max": 0.2}
    bounded_queue_options = {"queue_size": 16}
