"""Finding, loading and choosing plugins.

``build_plugin_manager`` is the only way in: it makes a pluggy manager, loads every plugin
advertised in the entry-point groups ``keyval.storage`` / ``keyval.transport`` (built-ins
included) and collects the backends they provide. A plugin that fails — import error,
wrong hook signature, a hook that raises or returns junk — is left out and recorded as one
line in ``failures``; it never stops the others from loading.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Iterable

import pluggy

from keyval import hookspecs
from keyval.plugin_api.backends import StorageBackend, TransportBackend
from keyval.errors import UnknownBackend

log = logging.getLogger(__name__)

ENTRY_POINT_GROUPS = {"storage": "keyval.storage", "transport": "keyval.transport"}
DESCRIPTOR_TYPES = {"storage": StorageBackend, "transport": TransportBackend}
# Built-in names stay stable: our own distribution's entry points register first, so a
# third-party plugin reusing "memory" or "tcp" is reported rather than silently winning.
OWN_DISTRIBUTION = "keyval-raft"


@dataclass(frozen=True)
class PluginSource:
    """Where a registered plugin came from."""

    name: str
    package: str = "-"
    version: str = "-"

    def describe(self) -> str:
        if self.package == "-":
            return f"plugin {self.name!r} (registered directly)"
        return f"plugin {self.name!r} (package {self.package} {self.version})"


@dataclass(frozen=True)
class PluginFailure:
    """One plugin (or one of its backends) that was left out, and why."""

    source: PluginSource
    error: str
    #: "storage" or "transport" (the entry-point group or the hook that failed); "-" if unknown
    kind: str = "-"

    def __str__(self) -> str:
        return f"{self.source.describe()} failed to load: {self.error}"


@dataclass(frozen=True)
class BackendInfo:
    kind: str
    backend: StorageBackend | TransportBackend
    source: PluginSource


@dataclass
class Plugins:
    """A plugin manager together with what loading it found and what went wrong."""

    manager: pluggy.PluginManager
    sources: dict[str, PluginSource] = field(default_factory=dict)
    backends: dict[str, dict[str, BackendInfo]] = field(default_factory=dict)
    failures: list[PluginFailure] = field(default_factory=list)
    #: (plugin name, event hook) -> how many times that plugin raised in it (see ``notify``)
    hook_failures: dict[tuple[str, str], int] = field(default_factory=dict)

    def fail(self, source: PluginSource, error: str, kind: str = "-") -> None:
        failure = PluginFailure(source, error, kind)
        self.failures.append(failure)
        log.warning("%s", failure)


def build_plugin_manager(extra_plugins: Iterable[Any] = (), entry_points: bool = True) -> Plugins:
    """Load the plugins from entry points (unless ``entry_points`` is False) and ``extra_plugins``."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    plugins = Plugins(pm)
    if entry_points:
        for ep in _entry_points():
            _load_entry_point(plugins, ep)
    for obj in extra_plugins:
        name = getattr(obj, "__name__", None) or type(obj).__name__
        _register(plugins, obj, PluginSource(name))
    for kind in ENTRY_POINT_GROUPS:
        _collect(plugins, kind)
    return plugins


def choose_storage(plugins: Plugins, name: str) -> StorageBackend:
    return _choose(plugins, "storage", name)  # type: ignore[return-value]


def choose_transport(plugins: Plugins, name: str) -> TransportBackend:
    return _choose(plugins, "transport", name)  # type: ignore[return-value]


def backend_names(plugins: Plugins, kind: str) -> list[str]:
    return sorted(plugins.backends.get(kind, {}))


def list_plugins(plugins: Plugins) -> tuple[list[dict[str, str]], list[str]]:
    """Rows ``{kind, name, package, version, description}`` and the failures, one line each."""
    rows = [
        {
            "kind": kind,
            "name": info.backend.name,
            "package": info.source.package,
            "version": info.source.version,
            "description": info.backend.description,
        }
        for kind in sorted(plugins.backends)
        for _, info in sorted(plugins.backends[kind].items())
    ]
    return rows, [str(f) for f in plugins.failures]


def notify(plugins: Plugins, hook_name: str, **kwargs: Any) -> None:
    """Call an event hook on every plugin; a plugin that raises is logged, never propagated.

    The one way the runtime calls an event hook (the four after the backend hooks in
    ``keyval/hookspecs.py``). A plain ``pm.hook.<name>(...)`` call would stop at the first
    plugin that raises: the plugins after it would miss the event, and the exception would
    reach the node. Here every implementation runs, each in its own ``try``. A failure is
    logged once per plugin and hook, as one line: a hook that fails on every role change
    must not flood the log, and its count stays in ``plugins.hook_failures``.
    """
    caller = getattr(plugins.manager.hook, hook_name)
    expected = set(caller.spec.argnames)
    if set(kwargs) != expected:
        raise TypeError(f"{hook_name} takes {sorted(expected)}, got {sorted(kwargs)}")
    for impl in caller.get_hookimpls():
        try:
            impl.function(*[kwargs[arg] for arg in impl.argnames])
        except Exception as exc:  # noqa: BLE001 - any plugin bug is contained here
            key = (impl.plugin_name, hook_name)
            plugins.hook_failures[key] = plugins.hook_failures.get(key, 0) + 1
            if plugins.hook_failures[key] == 1:
                source = plugins.sources.get(impl.plugin_name, PluginSource(impl.plugin_name))
                log.warning("%s failed in %s: %s (its later failures in this hook are not logged)",
                            source.describe(), hook_name, _oneline(exc))


def _choose(plugins: Plugins, kind: str, name: str) -> StorageBackend | TransportBackend:
    found = plugins.backends.get(kind, {})
    if name not in found:
        # The wanted backend may be one a failed plugin would have provided: an entry point of
        # that name (the usual way) is named alone, else every failure of this kind.
        failed = [f for f in plugins.failures if f.kind in (kind, "-")]
        named = [f for f in failed if f.source.name == name]
        raise UnknownBackend(kind, name, list(found), [str(f) for f in named or failed], bool(named))
    return found[name].backend


def _entry_points() -> list[metadata.EntryPoint]:
    found = [ep for group in ENTRY_POINT_GROUPS.values() for ep in metadata.entry_points(group=group)]
    return sorted(found, key=lambda ep: _dist_name(ep) != OWN_DISTRIBUTION)


def _dist_name(ep: metadata.EntryPoint) -> str:
    return ep.dist.metadata["Name"] if ep.dist is not None else "-"


def _load_entry_point(plugins: Plugins, ep: metadata.EntryPoint) -> None:
    version = ep.dist.version if ep.dist is not None else "-"
    source = PluginSource(ep.name, _dist_name(ep), version)
    kind = next(k for k, group in ENTRY_POINT_GROUPS.items() if group == ep.group)
    try:
        obj = ep.load()
    except Exception as exc:  # noqa: BLE001 - a broken plugin must not stop the others
        plugins.fail(source, _oneline(exc), kind)
        return
    if plugins.manager.is_registered(obj):
        return  # one module may serve both groups
    _register(plugins, obj, source, name=f"{ep.group}:{ep.name}", kind=kind)


def _register(plugins: Plugins, obj: Any, source: PluginSource, name: str | None = None, kind: str = "-") -> None:
    pm = plugins.manager
    try:
        registered = pm.register(obj, name=name)
    except Exception as exc:  # noqa: BLE001 - pluggy raises PluginValidationError and ValueError
        plugins.fail(source, _oneline(exc), kind)
        return
    if registered is None:
        plugins.fail(source, "it is blocked in this plugin manager", kind)
        return
    callers = pm.get_hookcallers(obj) or []
    unknown = sorted(c.name for c in callers if not c.has_spec() and not _all_optional(c, obj))
    if not callers or unknown:
        pm.unregister(obj)
        error = (
            f"unknown hook(s) {', '.join(unknown)}; see keyval/hookspecs.py"
            if unknown
            else "it defines no @keyval.hookimpl functions"
        )
        plugins.fail(source, error, kind)
        return
    plugins.sources[registered] = source


def _all_optional(caller: pluggy.HookCaller, obj: Any) -> bool:
    return all(impl.optionalhook for impl in caller.get_hookimpls() if impl.plugin is obj)


def _collect(plugins: Plugins, kind: str) -> None:
    hook_name = f"keyval_{kind}_backends"
    expected = DESCRIPTOR_TYPES[kind]
    found = plugins.backends.setdefault(kind, {})
    for impl in getattr(plugins.manager.hook, hook_name).get_hookimpls():
        source = plugins.sources.get(impl.plugin_name, PluginSource(impl.plugin_name))
        try:
            result = impl.function()
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not stop the others
            plugins.fail(source, f"{hook_name}() raised {_oneline(exc)}", kind)
            continue
        if not isinstance(result, (list, tuple)):
            plugins.fail(source, f"{hook_name}() returned {type(result).__name__}, not a list", kind)
            continue
        for backend in result:
            if not isinstance(backend, expected) or not backend.name or not callable(backend.factory):
                plugins.fail(source, f"{hook_name}() returned {backend!r}, not a valid {expected.__name__}", kind)
            elif backend.name in found:
                other = found[backend.name].source.describe()
                plugins.fail(source, f"{kind} backend {backend.name!r} is already provided by {other}", kind)
            else:
                found[backend.name] = BackendInfo(kind, backend, source)


def _oneline(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
