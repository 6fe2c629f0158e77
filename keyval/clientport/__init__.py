"""The node's client port, server side: ``auth`` (tokens, roles and the nodes' own
credential), ``limits`` (what a stranger's connections may cost) and ``descriptors`` (how
the descriptor limit is shared between the ports and storage). The protocol spoken on the
port and its TLS are in ``keyval.client``, which both ends use.
"""
