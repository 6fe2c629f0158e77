"""Cluster operations requested by kvctl (``Admin`` requests): a table of named handlers.

Each area registers its operations: membership and status in ``keyval.cluster``,
snapshots, compaction and backups in ``keyval.ops.maintenance``. A handler takes the request's
arguments and returns a JSON-able dict; it raises ``OperationRefused`` with a sentence an
operator can act on, or ``NotLeader`` to send the client to the leader.
"""
from __future__ import annotations

from typing import Any, Awaitable, Callable

from keyval.errors import KeyvalError

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class OperationRefused(KeyvalError):
    """The cluster will not do this now; the message says why and what to do."""


class UnknownOperation(KeyvalError):
    pass


class AdminOperations:
    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, op: str, handler: Handler) -> None:
        if op in self._handlers:
            raise ValueError(f"operation {op!r} registered twice")
        self._handlers[op] = handler

    def names(self) -> list[str]:
        return sorted(self._handlers)

    async def __call__(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        handler = self._handlers.get(op)
        if handler is None:
            raise UnknownOperation(f"unknown cluster operation {op!r}; this node knows: {', '.join(self.names()) or 'none'}")
        if not isinstance(args, dict):
            raise OperationRefused("operation arguments must be a mapping")
        return await handler(args)
