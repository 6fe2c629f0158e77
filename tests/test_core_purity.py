"""The Raft core stays a pure state machine: no I/O, clock, global randomness or plugins."""
import ast
import pathlib

import pytest

CORE = pathlib.Path(__file__).resolve().parent.parent / "keyval" / "raft"
FORBIDDEN = {"asyncio", "socket", "time", "os", "random", "threading", "selectors", "io", "pathlib", "keyval_plugins", "plugins"}


def _imports(tree: ast.Module):
    """(module, line) of every import outside an `if TYPE_CHECKING:` block."""
    type_checking_lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for inner in ast.walk(node):
                type_checking_lines.add(getattr(inner, "lineno", -1))
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in type_checking_lines:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module or "", node.lineno


@pytest.mark.parametrize("path", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_core_module_imports_nothing_impure(path):
    tree = ast.parse(path.read_text())
    bad = [
        f"{path.name}:{line} imports {module}"
        for module, line in _imports(tree)
        if module.split(".")[0] in FORBIDDEN or (module.startswith("keyval") and not module.startswith("keyval.raft"))
    ]
    assert not bad, bad


def test_core_has_files_to_check():
    assert len(list(CORE.glob("*.py"))) >= 5
