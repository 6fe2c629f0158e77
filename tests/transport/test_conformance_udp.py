"""The built-in ``udp`` transport against the conformance suite third-party transports run.

It is made as a node makes it: through the real plugin manager (entry points included), by name.
"""
from __future__ import annotations

import itertools

from keyval.testing.transport_conformance import TransportConformance
from keyval_plugins.transport import udp_wire as wire

_seq = itertools.count(1)


class TestUdp(TransportConformance):
    backend = "udp"
    stream = False
    # Small enough that a flood of 1 kB messages to a dead peer overflows it.
    bounded_queue_options = {"send_queue_bytes": 64 * 1024}

    def frame(self, payload: bytes) -> bytes:
        """One encoded message as the udp transport carries it: an unsealed datagram with
        one whole-message record, each with a fresh sequence number so that the receiver's
        replay window lets it through to the decoder."""
        header = wire.pack_header(0, 7, next(_seq), wire.encode_sender("x"))
        return header + wire.pack_record(1, 0, 1, len(payload), payload)
