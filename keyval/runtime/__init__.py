"""The node runtime: everything between the pure Raft core and the outside world.

``node`` (lifecycle and facade) composes ``driver`` (the Ready contract), ``requests`` (what
clients wait on), ``machine`` (the state machine as applied) and ``snapshots``, over the
storage and transport plugins; ``metrics`` and ``sync_thread`` serve them. The simulator runs
these same parts with its I/O swapped in.
"""
