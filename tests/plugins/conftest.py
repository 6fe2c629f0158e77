"""Real, tiny third-party distributions on disk, found by importlib.metadata like installed ones."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


class DistMaker:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.modules: list[str] = []

    def __call__(self, name: str, version: str, entry_points: dict[str, dict[str, str]],
                 modules: dict[str, str]) -> Path:
        """Write ``name-version.dist-info`` and the modules as ``<module>.py`` under root."""
        info = self.root / f"{name}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        sections = [
            f"[{group}]\n" + "".join(f"{ep} = {target}\n" for ep, target in eps.items())
            for group, eps in entry_points.items()
        ]
        (info / "entry_points.txt").write_text("\n".join(sections))
        for module, source in modules.items():
            (self.root / f"{module}.py").write_text(textwrap.dedent(source))
            self.modules.append(module)
        return self.root


@pytest.fixture
def make_dist(tmp_path, monkeypatch):
    """Make fake installed distributions in a fresh sys.path entry (removed after the test)."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))  # also invalidates the import caches
    maker = DistMaker(root)
    yield maker
    for module in maker.modules:
        sys.modules.pop(module, None)


@pytest.fixture
def run_script():
    """Run an installed console script (from the venv running pytest) and capture its output."""
    bindir = Path(sys.executable).parent

    def run(name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        script = bindir / name
        assert script.exists(), f"{script} missing: install the project first (pip install -e .)"
        return subprocess.run([str(script), *args], capture_output=True, text=True, env=env, timeout=60)

    return run


GOOD_PLUGIN = """
    import keyval
    from keyval.plugin_api.backends import StorageBackend

    def open_store(data_dir, options):
        return {"data_dir": data_dir, "options": options}

    @keyval.hookimpl
    def keyval_storage_backends():
        return [StorageBackend("goodstore", open_store, "a third-party store")]
"""


@pytest.fixture
def good_dist(make_dist) -> Path:
    """A working third-party storage plugin: package goodplug-keyval 2.0, backend 'goodstore'."""
    return make_dist("goodplug-keyval", "2.0", {"keyval.storage": {"good": "goodplug_mod"}},
                     {"goodplug_mod": GOOD_PLUGIN})


@pytest.fixture
def broken_dist(make_dist) -> Path:
    """A third-party plugin whose module fails to import: package brokenplug 0.1."""
    return make_dist("brokenplug", "0.1", {"keyval.storage": {"broken": "brokenplug_mod"}},
                     {"brokenplug_mod": "import no_such_module_for_keyval_tests\n"})
