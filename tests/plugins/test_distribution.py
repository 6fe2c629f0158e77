"""The distribution as pip builds and installs it: named keyval-raft (the index's `keyval` is
an unrelated project), with the built-ins as the package keyval_plugins and no top-level
`plugins`; the example plugin depends on it by that name."""
from __future__ import annotations

import email
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import keyval
from keyval import __version__
from keyval.plugin_api.loading import OWN_DISTRIBUTION

ROOT = Path(__file__).resolve().parents[2]
# What a build reads: the packages and the files pyproject.toml and setup.py name.
SOURCES = ["keyval", "kvctl", "plugins", "pyproject.toml", "setup.py", "README.md"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """Our wheel, built by pip from a copy of the tree (a build leaves build/ and *.egg-info)."""
    work = tmp_path_factory.mktemp("dist")
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, work / "src" / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (work / "src").mkdir(exist_ok=True)
            shutil.copy(source, work / "src" / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir",
                            str(work / "wheels"), str(work / "src")], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    [path] = (work / "wheels").glob("*.whl")
    assert path.name == f"keyval_raft-{__version__}-py3-none-any.whl"
    return zipfile.ZipFile(path)


def _dist_info(wheel: zipfile.ZipFile, name: str) -> str:
    return wheel.read(f"keyval_raft-{__version__}.dist-info/{name}").decode()


def test_the_wheel_installs_keyval_kvctl_and_keyval_plugins_and_no_plugins(wheel):
    top_level = {name.split("/")[0] for name in wheel.namelist() if ".dist-info/" not in name}
    assert top_level == {"keyval", "kvctl", "keyval_plugins"}
    # every module of the plugins/ folder is there, under its installed name
    folder = {str(p.relative_to(ROOT / "plugins")) for p in (ROOT / "plugins").rglob("*.py")}
    installed = {name.removeprefix("keyval_plugins/") for name in wheel.namelist()
                 if name.startswith("keyval_plugins/")}
    assert folder == installed
    metadata = email.message_from_string(_dist_info(wheel, "METADATA"))
    assert (metadata["Name"], metadata["Version"]) == (OWN_DISTRIBUTION, __version__) == ("keyval-raft", __version__)


def test_the_wheels_entry_points_name_keyval_plugins(wheel):
    entry_points = _dist_info(wheel, "entry_points.txt")
    assert "memory = keyval_plugins.storage.memory" in entry_points
    assert "tcp = keyval_plugins.transport.tcp" in entry_points
    assert " plugins." not in entry_points


def test_the_example_plugin_depends_on_our_distribution(wheel):
    example = tomllib.loads((ROOT / "examples" / "keyval-sqlite" / "pyproject.toml").read_text())
    [dependency] = [Requirement(d) for d in example["project"]["dependencies"]]
    ours = email.message_from_string(_dist_info(wheel, "METADATA"))
    assert canonicalize_name(dependency.name) == canonicalize_name(ours["Name"]) != "keyval"
    assert dependency.specifier.contains(ours["Version"])


def test_the_editable_install_imports_keyval_plugins_and_no_plugins(tmp_path):
    if not Path(keyval.__file__).is_relative_to(ROOT):
        pytest.skip("keyval is not installed editable from this tree (pip install -e .)")
    # From elsewhere: the repository root on sys.path would make its plugins/ folder importable.
    probe = ("import importlib.util, keyval_plugins.storage.segment as s; "
             "print(s.__file__); print(importlib.util.find_spec('plugins'))")
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert found.returncode == 0, found.stderr
    assert found.stdout.splitlines() == [str(ROOT / "plugins" / "storage" / "segment" / "__init__.py"), "None"]
