"""The peer wire, what nodes say to each other: ``codec`` (Raft messages to bytes, versioned),
``auth`` (the HMAC over every message, keyed by the cluster secret), ``secret`` (which secret
a node uses) and ``versions`` (which protocol version each peer is written).

Transport plugins build on these; the Raft core never sees them.
"""
