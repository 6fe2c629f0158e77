import logging
import types

import pytest

import keyval
from keyval.plugin_api.backends import StorageBackend, TransportBackend
from keyval.errors import KeyvalError, UnknownBackend
from keyval.plugin_api.loading import (
    backend_names,
    build_plugin_manager,
    choose_storage,
    choose_transport,
    list_plugins,
    notify,
)

BUILTIN_ROWS = [
    ("storage", "memory"),
    ("storage", "segment"),
    ("transport", "faulty"),
    ("transport", "tcp"),
    ("transport", "udp"),
]


def plugin_module(name: str, **functions) -> types.ModuleType:
    """A plugin object built from plain functions, each marked as a hook implementation."""
    module = types.ModuleType(name)
    for hook, function in functions.items():
        function.__name__ = hook
        setattr(module, hook, keyval.hookimpl(function))
    return module


def storage_plugin(name: str, backend: str, factory=lambda data_dir, options: "opened"):
    return plugin_module(name, keyval_storage_backends=lambda: [StorageBackend(backend, factory, name)])


def test_builtins_are_found_through_entry_points():
    plugins = build_plugin_manager()
    rows, failures = list_plugins(plugins)
    builtins = [r for r in rows if r["package"] == "keyval-raft"]
    assert [(r["kind"], r["name"]) for r in builtins] == BUILTIN_ROWS
    assert all(r["version"] == keyval.__version__ and r["description"] for r in builtins)
    assert failures == []


def test_no_entry_points_means_no_builtins():
    plugins = build_plugin_manager(entry_points=False)
    assert backend_names(plugins, "storage") == []
    assert backend_names(plugins, "transport") == []


def test_memory_storage_opens_a_real_storage():
    backend = choose_storage(build_plugin_manager(), "memory")
    storage = backend.factory(None, {})
    assert (storage.first_index(), storage.last_index()) == (1, 0)
    storage.sync()
    storage.close()


def test_every_builtin_backend_opens(tmp_path):
    plugins = build_plugin_manager()
    storage = choose_storage(plugins, "segment").factory(str(tmp_path), {})
    assert (storage.first_index(), storage.last_index()) == (1, 0)
    storage.close()
    for name in ("tcp", "udp", "faulty"):
        transport = choose_transport(plugins, name).factory({})
        assert callable(transport.send) and callable(transport.stats)


def test_unknown_backend_names_the_available_ones():
    plugins = build_plugin_manager()
    with pytest.raises(UnknownBackend) as err:
        choose_storage(plugins, "nope")
    # Third-party plugins installed in this environment (the sqlite example) are listed too.
    names = backend_names(plugins, "storage")
    assert {"memory", "segment"} <= set(names)
    assert str(err.value) == f"unknown storage backend 'nope'; available: {', '.join(names)}"
    assert isinstance(err.value, KeyvalError)
    with pytest.raises(UnknownBackend, match=r"unknown transport backend 'memory'; available: faulty, tcp, udp$"):
        choose_transport(plugins, "memory")


def test_broken_third_party_plugin_is_one_line_and_does_not_stop_the_others(broken_dist, caplog):
    with caplog.at_level(logging.WARNING, logger="keyval.plugins"):
        plugins = build_plugin_manager()
    rows, failures = list_plugins(plugins)
    assert failures == [
        "plugin 'broken' (package brokenplug 0.1) failed to load: "
        "ModuleNotFoundError: No module named 'no_such_module_for_keyval_tests'"
    ]
    assert [r.getMessage() for r in caplog.records] == failures
    assert [(r["kind"], r["name"]) for r in rows if r["package"] == "keyval-raft"] == BUILTIN_ROWS


def test_unknown_backend_names_the_failed_plugins_of_its_kind(make_dist):
    # A hook that raises: the backend names it would have given are unknown, so every storage
    # failure is named; the entry point's own name ("onfire") is named alone.
    make_dist("onfire-keyval", "3.1", {"keyval.storage": {"onfire": "onfire_mod"}}, {"onfire_mod": """
        import keyval

        @keyval.hookimpl
        def keyval_storage_backends():
            raise OSError("disk on fire")
    """})
    plugins = build_plugin_manager()
    failure = ("plugin 'onfire' (package onfire-keyval 3.1) failed to load: "
               "keyval_storage_backends() raised OSError: disk on fire")
    assert [(f.kind, str(f)) for f in plugins.failures] == [("storage", failure)]
    names = ", ".join(backend_names(plugins, "storage"))
    with pytest.raises(UnknownBackend) as err:
        choose_storage(plugins, "onfire")
    assert str(err.value) == f"storage backend 'onfire' is unavailable: {failure}; available: {names}"
    with pytest.raises(UnknownBackend) as err:
        choose_storage(plugins, "fire")
    assert str(err.value) == (f"unknown storage backend 'fire'; available: {names}; it may be one of the storage "
                              f"plugin(s) that failed to load: {failure}")
    assert err.value.failed == [failure]
    with pytest.raises(UnknownBackend, match=r"^unknown transport backend 'onfire'; available: faulty, tcp, udp$"):
        choose_transport(plugins, "onfire")


def test_working_third_party_plugin_is_listed_and_choosable(good_dist):
    plugins = build_plugin_manager()
    rows, failures = list_plugins(plugins)
    assert failures == []
    assert {"kind": "storage", "name": "goodstore", "package": "goodplug-keyval", "version": "2.0",
            "description": "a third-party store"} in rows
    backend = choose_storage(plugins, "goodstore")
    assert backend.factory("/data", {"x": 1}) == {"data_dir": "/data", "options": {"x": 1}}
    assert "goodstore" in str(pytest.raises(UnknownBackend, choose_storage, plugins, "zzz").value)


def test_one_module_in_both_groups_is_registered_once(make_dist):
    source = """
        import keyval
        from keyval.plugin_api.backends import StorageBackend, TransportBackend

        @keyval.hookimpl
        def keyval_storage_backends():
            return [StorageBackend("bothstore", lambda d, o: None)]

        @keyval.hookimpl
        def keyval_transport_backends():
            return [TransportBackend("bothnet", lambda o: None)]
    """
    make_dist("both", "1.0", {"keyval.storage": {"both": "both_mod"}, "keyval.transport": {"both": "both_mod"}},
              {"both_mod": source})
    plugins = build_plugin_manager()
    assert plugins.failures == []
    assert "bothstore" in backend_names(plugins, "storage")
    assert "bothnet" in backend_names(plugins, "transport")


def test_hook_with_wrong_signature_is_rejected():
    def keyval_storage_backends(unexpected_argument):
        return []

    bad = plugin_module("badsig", keyval_storage_backends=keyval_storage_backends)
    plugins = build_plugin_manager([bad], entry_points=False)
    [failure] = list_plugins(plugins)[1]
    assert failure.startswith("plugin 'badsig' (registered directly) failed to load: PluginValidationError")
    assert "unexpected_argument" in failure
    assert not plugins.manager.is_registered(bad)


def test_misspelt_hook_is_rejected():
    typo = plugin_module("typo", keyval_storage_backend=lambda: [])
    plugins = build_plugin_manager([typo], entry_points=False)
    assert list_plugins(plugins)[1] == [
        "plugin 'typo' (registered directly) failed to load: "
        "unknown hook(s) keyval_storage_backend; see keyval/hookspecs.py"
    ]
    assert not plugins.manager.is_registered(typo)


def test_module_without_hooks_is_rejected():
    plugins = build_plugin_manager([types.ModuleType("empty")], entry_points=False)
    assert list_plugins(plugins)[1] == [
        "plugin 'empty' (registered directly) failed to load: it defines no @keyval.hookimpl functions"
    ]


def test_hook_that_raises_or_returns_junk_is_reported_and_others_still_load():
    def explode():
        raise RuntimeError("disk on fire\nsecond line")

    raising = plugin_module("raising", keyval_storage_backends=explode)
    not_a_list = plugin_module("notalist", keyval_storage_backends=lambda: StorageBackend("x", print))
    wrong_type = plugin_module("wrongtype", keyval_storage_backends=lambda: [TransportBackend("y", print)])
    good = storage_plugin("good", "fine")
    plugins = build_plugin_manager([raising, not_a_list, wrong_type, good], entry_points=False)
    failures = list_plugins(plugins)[1]
    assert failures[0] == ("plugin 'raising' (registered directly) failed to load: "
                           "keyval_storage_backends() raised RuntimeError: disk on fire second line")
    assert "returned StorageBackend, not a list" in failures[1]
    assert "not a valid StorageBackend" in failures[2]
    assert len(failures) == 3
    assert backend_names(plugins, "storage") == ["fine"]


def test_third_party_cannot_take_over_a_builtin_name():
    impostor = storage_plugin("impostor", "memory", factory=lambda d, o: "impostor")
    plugins = build_plugin_manager([impostor])
    assert choose_storage(plugins, "memory").factory(None, {}) != "impostor"
    assert list_plugins(plugins)[1] == [
        "plugin 'impostor' (registered directly) failed to load: storage backend 'memory' "
        f"is already provided by plugin 'memory' (package keyval-raft {keyval.__version__})"
    ]


def test_notify_reaches_every_plugin_and_contains_failures(caplog):
    seen = []

    def record(node_id, term, role, leader):
        seen.append((node_id, term, role, leader))

    def only_role(role):
        seen.append(role)

    def explode(node_id, term, role, leader):
        raise ValueError("plugin bug")

    plugins = build_plugin_manager([
        plugin_module("recorder", keyval_role_changed=record),
        plugin_module("partial", keyval_role_changed=only_role),
        plugin_module("broken", keyval_role_changed=explode),
    ], entry_points=False)
    with caplog.at_level(logging.WARNING, logger="keyval.plugins"):
        notify(plugins, "keyval_role_changed", node_id="n1", term=3, role="leader", leader="n1")
        notify(plugins, "keyval_role_changed", node_id="n1", term=4, role="follower", leader="n2")
    assert ("n1", 3, "leader", "n1") in seen and ("n1", 4, "follower", "n2") in seen and "follower" in seen
    # Logged once per plugin and hook, however often it fails; the count is kept.
    assert [r.getMessage() for r in caplog.records] == [
        "plugin 'broken' (registered directly) failed in keyval_role_changed: ValueError: plugin bug "
        "(its later failures in this hook are not logged)"
    ]
    assert plugins.hook_failures == {("broken", "keyval_role_changed"): 2}
    with pytest.raises(TypeError, match="keyval_role_changed takes"):
        notify(plugins, "keyval_role_changed", node_id="n1")


def test_each_build_is_independent():
    first = build_plugin_manager([storage_plugin("extra", "extrastore")])
    second = build_plugin_manager()
    assert "extrastore" in backend_names(first, "storage")
    assert "extrastore" not in backend_names(second, "storage")
