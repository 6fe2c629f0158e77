"""Checking a plugin's backend against its contract before a node relies on it.

The contracts are the Protocols ``keyval.plugin_api.storage.Storage`` and ``keyval.plugin_api.transport.Transport``;
this module reads their members from the classes themselves, so a method added to a Protocol
is checked at startup without a second list to keep in step. A backend that lacks one would
otherwise start serving and fail later, mid-request, with a traceback. Every command that
opens a backend (``keyval serve``, ``keyval recover``) opens it through ``open_backend``.
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Callable

from keyval.errors import KeyvalError, PluginError, StorageError

if TYPE_CHECKING:
    from keyval.plugin_api.loading import Plugins


class IncompleteBackend(PluginError):
    """A backend object lacks members of its contract: the node refuses to start."""

    def __init__(self, kind: str, name: str, plugin: str, backend: Any, missing: list[str]) -> None:
        self.kind = kind
        self.name = name
        self.missing = missing
        super().__init__(
            f"{kind} backend {name!r} from {plugin} returned a {type(backend).__name__} that is not a "
            f"{kind}: missing {', '.join(missing)} (see keyval/plugin_api/{kind}.py); refusing to start"
        )


def protocol_members(protocol: type) -> dict[str, bool]:
    """Every public member a Protocol declares, own and inherited: name -> is it a method
    (False for a property)."""
    members: dict[str, bool] = {}
    for klass in reversed(protocol.__mro__):
        # typing.Protocol, typing.Generic and object declare nothing a backend must provide.
        if klass.__module__ in ("typing", "builtins"):
            continue
        for name, value in vars(klass).items():
            if not name.startswith("_"):
                members[name] = not isinstance(value, property)
    return members


def _has(backend: Any, name: str, method: bool) -> bool:
    try:
        value = getattr(backend, name)
    except AttributeError:
        return False
    except Exception:  # noqa: BLE001 - a property that exists but has nothing to say yet (before start)
        return not method
    return callable(value) if method else True


def missing_members(backend: Any, protocol: type) -> list[str]:
    """The members of ``protocol`` that ``backend`` lacks (or has but cannot call), sorted."""
    return sorted(name for name, method in protocol_members(protocol).items() if not _has(backend, name, method))


def check_backend(kind: str, name: str, plugin: str, backend: Any, protocol: type) -> Any:
    """``backend`` if it provides every member of ``protocol``, else ``IncompleteBackend``."""
    missing = missing_members(backend, protocol)
    if missing:
        raise IncompleteBackend(kind, name, plugin, backend, missing)
    return backend


def open_backend(plugins: Plugins, kind: str, name: str, protocol: type, open_it: Callable[[], Any]) -> Any:
    """Open a plugin's backend with ``open_it()`` and check it against its contract (every
    member of ``protocol``); whatever goes wrong becomes one clear line, not a traceback."""
    try:
        backend = open_it()
    except KeyvalError:
        raise
    except StorageError as exc:  # the backend's own one-line reason (e.g. a damaged data dir)
        raise KeyvalError(str(exc)) from exc
    except Exception as exc:
        raise KeyvalError(f"{kind} backend {name!r} failed to open: {type(exc).__name__}: {exc}") from exc
    info = plugins.backends.get(kind, {}).get(name)
    plugin = info.source.describe() if info is not None else "a plugin"
    try:
        return check_backend(kind, name, plugin, backend, protocol)
    except IncompleteBackend:
        # A refused storage is closed here, since the caller never holds it: its files are
        # let go before the data-dir lock is. A transport has not started: nothing to release.
        if kind == "storage" and callable(getattr(backend, "close", None)):
            with contextlib.suppress(Exception):
                backend.close()
        raise
