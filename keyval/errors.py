"""Exceptions KeyVal raises to its users; each message is one sentence a person can act on."""
from __future__ import annotations

# The one StorageError: the base of every storage failure, from the core's read errors
# (``Compacted``, ``Unavailable``, ``SnapshotUnavailable``) to damaged data. It lives in the
# core because the core may import nothing outside ``keyval.raft``; it is re-exported here,
# where plugins have always imported it from.
from keyval.raft.storage_errors import StorageError  # noqa: F401 - re-exported


class KeyvalError(Exception):
    """Base of every error KeyVal raises on purpose."""


class ProposalLost(KeyvalError):
    """Another entry was committed where a proposal stood: it will never apply."""


class NodeUnavailable(KeyvalError):
    """The node cannot serve right now (starting, shutting down)."""


class ConfigError(KeyvalError):
    """A node's configuration (flags or config file) is invalid."""


class PluginError(KeyvalError):
    """A plugin could not be loaded or returned something unusable."""


class UnknownBackend(PluginError):
    """No plugin provides a backend of the requested name."""

    def __init__(self, kind: str, name: str, available: list[str], failed: tuple[str, ...] | list[str] = (),
                 failed_is_it: bool = False) -> None:
        self.kind = kind
        self.name = name
        self.available = sorted(available)
        #: plugins of this kind that failed to load, one line each (``failed_is_it``: the one
        #: plugin whose entry point has the wanted name)
        self.failed = list(failed)
        names = ", ".join(self.available) or "none"
        if failed_is_it:
            message = f"{kind} backend {name!r} is unavailable: {'; '.join(failed)}; available: {names}"
        elif failed:
            message = (f"unknown {kind} backend {name!r}; available: {names}; it may be one of the "
                       f"{kind} plugin(s) that failed to load: {'; '.join(failed)}")
        else:
            message = f"unknown {kind} backend {name!r}; available: {names}"
        super().__init__(message)


class CorruptLog(StorageError, KeyvalError):
    """A log record before the tail fails its checksum: entries may have been acknowledged,
    so the node refuses to start rather than silently drop them."""

    def __init__(self, path: str, offset: int, reason: str) -> None:
        self.path = path
        self.offset = offset
        self.reason = reason
        super().__init__(
            f"corrupt Raft log: {path} at byte {offset}: {reason}; refusing to start "
            f"(restore this node from a backup or replace it with a new member)"
        )


class CorruptSnapshot(StorageError, KeyvalError):
    """A snapshot file fails its header or checksum check; it is never loaded."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        super().__init__(f"corrupt snapshot {path}: {reason}")


class ClientError(KeyvalError):
    """A request from a client could not be carried out."""

    code = "error"


class Unreachable(ClientError):
    """No endpoint answered: the cluster is down or the endpoints are wrong."""

    code = "unreachable"


class Timeout(ClientError):
    """No answer in time; a write may still have been applied."""

    code = "timeout"


class NoLeader(Timeout):
    """No answer in time, and every node that answered said it does not lead (no quorum, or
    an election under way): the request was taken by no leader, so a write did not apply."""

    code = "no_leader"


class RequestRefused(ClientError):
    """The cluster answered and said no; the message says why."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


class RevisionMismatch(RequestRefused):
    """A compare-and-set found another revision."""

    def __init__(self, key: bytes, current_revision: int) -> None:
        self.current_revision = current_revision
        super().__init__("revision_mismatch", f"key {key!r} is at revision {current_revision}, not the one expected")


class NoSpace(RequestRefused):
    """A write refused before it was proposed: the leader's NOSPACE alarm is raised (its disk
    is below ``space_reserve``, or a write to it failed for want of space)."""

    def __init__(self, message: str) -> None:
        super().__init__("no_space", message)
