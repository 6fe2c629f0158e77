"""Checking a plugin's backend against its contract before a node relies on it.

The contracts are the Protocols ``keyval.plugin_api.storage.Storage`` and ``keyval.plugin_api.transport.Transport``;
this module reads their members from the classes themselves, so a method added to a Protocol
is checked at startup without a second list to keep in step. A backend that lacks one would
otherwise start serving and fail later, mid-request, with a traceback. Each method is also
held to its declaration: it must take the positional arguments the node passes (all of them,
and only the required ones), and be ``async def`` exactly where the Protocol's is — a
storage whose ``sync`` is async would return an unawaited coroutine and never sync. Every
command that opens a backend (``keyval serve``, ``keyval recover``) opens it through
``open_backend``.
"""
from __future__ import annotations

import contextlib
import inspect
from typing import TYPE_CHECKING, Any, Callable

from keyval.errors import KeyvalError, PluginError, StorageError

if TYPE_CHECKING:
    from keyval.plugin_api.loading import Plugins


class IncompleteBackend(PluginError):
    """A backend object lacks members of its contract, or has methods the node cannot call as
    declared: the node refuses to start."""

    def __init__(self, kind: str, name: str, plugin: str, backend: Any, missing: list[str],
                 mismatched: tuple[str, ...] | list[str] = ()) -> None:
        self.kind = kind
        self.name = name
        self.missing = missing
        self.mismatched = list(mismatched)
        problems = ([f"missing {', '.join(missing)}"] if missing else []) + self.mismatched
        super().__init__(
            f"{kind} backend {name!r} from {plugin} returned a {type(backend).__name__} that is not a "
            f"{kind}: {'; '.join(problems)} (see keyval/plugin_api/{kind}.py); refusing to start"
        )


def _declared(protocol: type) -> dict[str, Any]:
    """Every public member a Protocol declares, own and inherited: name -> function or property."""
    members: dict[str, Any] = {}
    for klass in reversed(protocol.__mro__):
        # typing.Protocol, typing.Generic and object declare nothing a backend must provide.
        if klass.__module__ in ("typing", "builtins"):
            continue
        members.update((name, value) for name, value in vars(klass).items() if not name.startswith("_"))
    return members


def protocol_members(protocol: type) -> dict[str, bool]:
    """Every public member a Protocol declares, own and inherited: name -> is it a method
    (False for a property)."""
    return {name: not isinstance(value, property) for name, value in _declared(protocol).items()}


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


def _is_async(function: Any) -> bool:
    # an object whose __call__ is async counts as async too
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(getattr(function, "__call__", None))


def _mismatch(name: str, declared: Any, actual: Any) -> str | None:
    """Why ``actual`` cannot stand in for the Protocol's ``declared`` method, or None."""
    if _is_async(declared) and not _is_async(actual):
        return f"{name} is not async def (the node awaits it)"
    if _is_async(actual) and not _is_async(declared):
        return f"{name} is async def, but the node calls it without await (it would never run)"
    try:
        signature = inspect.signature(actual)
    except (TypeError, ValueError):  # some builtins have no signature to read: nothing to check
        return None
    params = list(inspect.signature(declared).parameters.values())[1:]  # without self
    required = sum(1 for p in params if p.default is p.empty)
    # The node passes arguments by position: all of them, or only the required ones.
    for count in sorted({required, len(params)}):
        try:
            signature.bind(*range(count))
        except TypeError:
            wanted = ", ".join(p.name for p in params[:count])
            return f"{name}{signature} cannot be called with {count} argument(s) ({wanted})"
    return None


def mismatched_members(backend: Any, protocol: type) -> list[str]:
    """The methods ``backend`` has but the node could not call as ``protocol`` declares them:
    wrong number of positional arguments, or async where the Protocol's is not (and the
    reverse); one phrase each, sorted by name. Members it lacks are ``missing_members``'."""
    problems = []
    for name, declared in sorted(_declared(protocol).items()):
        if isinstance(declared, property) or not _has(backend, name, True):
            continue
        problem = _mismatch(name, declared, getattr(backend, name))
        if problem:
            problems.append(problem)
    return problems


def check_backend(kind: str, name: str, plugin: str, backend: Any, protocol: type) -> Any:
    """``backend`` if it provides every member of ``protocol``, each callable as declared,
    else ``IncompleteBackend``."""
    missing = missing_members(backend, protocol)
    mismatched = mismatched_members(backend, protocol)
    if missing or mismatched:
        raise IncompleteBackend(kind, name, plugin, backend, missing, mismatched)
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
