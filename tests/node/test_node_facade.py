"""The service, maintenance, cluster operations, metrics and server use a node only through
its facade (``keyval.runtime.node.Node``, section "the facade"): none of them reaches
through ``node.core``, ``node.kv``, ``node.storage`` or ``node.transport``.

Checked on the source (ast), so a reintroduced reach fails here with its file and line.
The simulator (``keyval/testing/``) is exempt: looking inside nodes is its job.
"""
from __future__ import annotations

import ast
from pathlib import Path

import keyval

ROOT = Path(keyval.__file__).resolve().parent.parent
INTERNALS = {"core", "kv", "storage", "transport"}
EXEMPT = (ROOT / "keyval" / "testing",)


def _is_node(expr: ast.expr) -> bool:
    """``node``, ``self.node``, ``self.ops.node``, ``leader_node``..."""
    name = expr.id if isinstance(expr, ast.Name) else expr.attr if isinstance(expr, ast.Attribute) else ""
    return name.lstrip("_").endswith("node")


def reaches(source: str, filename: str) -> list[str]:
    """Every ``<node>.core|kv|storage|transport`` in ``source``, as "file:line: text"."""
    found = []
    for expr in ast.walk(ast.parse(source, filename)):
        if isinstance(expr, ast.Attribute) and expr.attr in INTERNALS and _is_node(expr.value):
            found.append((expr.lineno, f"{filename}:{expr.lineno}: {ast.unparse(expr)}"))
    return [hit for _, hit in sorted(found)]


def _modules() -> list[Path]:
    files = [*(ROOT / "keyval").rglob("*.py"), *(ROOT / "kvctl").rglob("*.py")]
    return sorted(f for f in files if not any(f.is_relative_to(d) for d in EXEMPT))


def test_the_checker_sees_each_way_of_reaching_in():
    source = "def f(self, node):\n    node.core.term\n    self.node.kv.get(b'k')\n    x = self.ops.node.storage\n" \
             "    self._node.transport.stats()\n    node.status()\n    self.kv.get(b'k')\n"
    assert [line.split(": ", 1)[1] for line in reaches(source, "x.py")] == [
        "node.core", "self.node.kv", "self.ops.node.storage", "self._node.transport"]


def test_the_modules_that_use_a_node_reach_it_only_through_its_facade():
    modules = _modules()
    names = {str(f.relative_to(ROOT)) for f in modules}
    # the callers the facade is for must be among those checked, wherever they live now
    for stem in ("service.py", "maintenance.py", "metrics.py", "snapshots.py", "server.py"):
        assert any(n.endswith(stem) for n in names), stem
    assert any("cluster" in n and n.endswith("operations.py") for n in names)
    found = [hit for f in modules for hit in reaches(f.read_text(), str(f.relative_to(ROOT)))]
    assert not found, "reaching through the node instead of its facade:\n" + "\n".join(found)
