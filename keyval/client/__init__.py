"""The client library, and what both ends of the client port share.

``Client`` (blocking) and ``AsyncClient`` (asyncio) live in ``client``; ``protocol`` is the
wire format of the client port and ``tls`` its TLS contexts, used by the node's side
(``keyval.clientport``) and by clients alike.
"""
from keyval.client.client import AsyncClient, Client

__all__ = ["AsyncClient", "Client"]
