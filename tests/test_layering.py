"""The layering that `ls keyval/` promises, checked on the import graph.

Every import counts, function-local ones included (they hide a dependency, they do not remove
it); only imports under `if TYPE_CHECKING:` are left out, since they never run.
"""
import ast
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("keyval", "kvctl")

# Cycles tolerated while they are being removed (none now); any other cycle fails.
CYCLES_BEING_REMOVED: set[frozenset[str]] = set()


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, pathlib.Path]:
    return {
        _module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def _is_type_checking(test: ast.expr) -> bool:
    return getattr(test, "id", None) == "TYPE_CHECKING" or getattr(test, "attr", None) == "TYPE_CHECKING"


class _Imports(ast.NodeVisitor):
    """Collects ([candidate module names], line): `import a.b` gives [a.b]; `from a import b`
    gives [a.b, a], since b is a submodule of a or a name defined in it."""

    def __init__(self, module: str, is_package: bool):
        self.module, self.is_package, self.found = module, is_package, []

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            for inner in node.orelse:
                self.visit(inner)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.found += [([alias.name], node.lineno) for alias in node.names]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            package = self.module.split(".")
            if not self.is_package:
                package.pop()
            package = package[: len(package) - (node.level - 1)]
            base = ".".join(package + ([base] if base else []))
        # `from pkg import name`: name is a submodule or an attribute of pkg; the caller decides.
        self.found += [([f"{base}.{alias.name}", base], node.lineno) for alias in node.names]


def _graph() -> tuple[dict[str, set[str]], dict[str, list[tuple[str, int]]]]:
    """Internal edges between our modules, and every raw import with its line."""
    modules = _modules()
    edges, raw = {}, {}
    for name, path in modules.items():
        visitor = _Imports(name, path.name == "__init__.py")
        visitor.visit(ast.parse(path.read_text(), str(path)))
        edges[name], raw[name] = set(), []
        for candidates, line in visitor.found:
            raw[name].append((candidates[0], line))
            target = next((c for c in candidates if c in modules), None)
            if target is None and len(candidates) == 1:
                # `import a.b.c` of something not a module of ours: walk up to its package.
                parts = candidates[0].split(".")
                prefixes = (".".join(parts[:i]) for i in range(len(parts), 0, -1))
                target = next((prefix for prefix in prefixes if prefix in modules), None)
            if target is not None and target != name:
                edges[name].add(target)
                edges[name].update(_packages_run_first(target, name, modules))
    return edges, raw


def _packages_run_first(target: str, importer: str, modules) -> set[str]:
    """Importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__`` first: edges too, except to
    the importer's own packages, which are already running when it is."""
    parts = target.split(".")
    ancestors = {".".join(parts[:i]) for i in range(1, len(parts))}
    return {a for a in ancestors if a in modules and a != importer and not importer.startswith(a + ".")}


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))
    try:
        for node in sorted(edges):
            if node not in index:
                visit(node)
    finally:
        sys.setrecursionlimit(limit)
    return found


def _one_loop(component: list[str], edges: dict[str, set[str]]) -> list[str]:
    """A concrete path a -> b -> ... -> a inside the component, to print."""
    members, start = set(component), component[0]
    paths, seen = [[start]], {start}
    while paths:
        path = paths.pop(0)
        for nxt in sorted(edges[path[-1]] & members):
            if nxt == start:
                return path + [start]
            if nxt not in seen:
                seen.add(nxt)
                paths.append(path + [nxt])
    return component


def test_raft_core_imports_only_itself_and_the_stdlib():
    _, raw = _graph()
    bad = [
        f"{module}:{line} imports {target}"
        for module, imports in raw.items()
        if module.startswith("keyval.raft")
        for target, line in imports
        if not target.startswith("keyval.raft")
        and target.split(".")[0] not in sys.stdlib_module_names
    ]
    assert not bad, "\n".join(bad)


def test_keyval_never_imports_kvctl():
    _, raw = _graph()
    bad = [
        f"{module}:{line} imports {target}"
        for module, imports in raw.items()
        if module.split(".")[0] == "keyval"
        for target, line in imports
        if target.split(".")[0] == "kvctl"
    ]
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    edges, _ = _graph()
    cycles = [
        " -> ".join(_one_loop(component, edges))
        for component in _cycles(edges)
        if not any(set(component) <= known for known in CYCLES_BEING_REMOVED)
    ]
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_walker_counts_function_local_imports_and_skips_type_checking_ones():
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import keyval.kv\nelse:\n    import keyval.errors\n"
        "def f():\n    from . import codec\n"
    )
    walker = _Imports("keyval.peer.auth", is_package=False)
    walker.visit(ast.parse(source))
    found = {candidates[0] for candidates, _ in walker.found}
    assert {"keyval.peer.codec", "keyval.errors"} <= found
    assert "keyval.kv" not in found
