"""The built-in ``tcp`` transport against the conformance suite third-party transports run.

It is made as a node makes it: through the real plugin manager (entry points included), by name.
"""
from __future__ import annotations

from keyval.testing.transport_conformance import TransportConformance


class TestTcp(TransportConformance):
    backend = "tcp"
    options = {"reconnect_max": 0.2}
    bounded_queue_options = {"queue_size": 16}
