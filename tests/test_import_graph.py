"""The project's own import graph: no cycle, and no private name imported across modules.

Every .py under the project packages is parsed with ``ast`` (nothing is imported, so
this runs without ComfyUI). Edges are the intra-project imports, wherever they are
written (module level or inside a function): absolute imports of the top-level
packages below and relative imports. ``nodes`` is only ever imported relatively
(ComfyUI has a top-level module of that name), so an absolute ``nodes`` is not ours.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("dragon_core", "nodes", "dragon_demo", "dragon_lab")  # missing folders are skipped
ABSOLUTE = ("dragon_core", "dragon_demo", "dragon_lab")


def _modules(root: Path) -> dict[str, tuple[Path, bool]]:
    """{dotted module name: (path, is a package __init__)} for every project .py file."""
    mods = {}
    for pkg in PACKAGES:
        if not (root / pkg).is_dir():
            continue
        for path in sorted((root / pkg).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            parts = list(path.relative_to(root).with_suffix("").parts)
            is_pkg = parts[-1] == "__init__"
            if is_pkg:
                parts.pop()
            mods[".".join(parts)] = (path, is_pkg)
    return mods


def _imports(name: str, path: Path, is_pkg: bool, mods: dict) -> list[tuple[str, str, int]]:
    """(imported project module, name taken from it or "", line) for every import in the file."""
    package = name if is_pkg else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in ABSOLUTE:
                    target = _deepest_module(alias.name, mods)
                    if target:
                        found.append((target, "", node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                if node.level > 1:
                    base = base[:-(node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] in ABSOLUTE:
                module = node.module
            else:
                continue
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                if sub in mods:  # `from pkg import submodule`
                    found.append((sub, "", node.lineno))
                    continue
                target = _deepest_module(module, mods)
                if target is None:
                    continue
                if target == module and mods[target][1] and not _binds(mods[target][0], alias.name):
                    continue  # `from pkg import gone`: neither a submodule nor a name of pkg (fails; not an edge)
                found.append((target, alias.name if target == module else "", node.lineno))
    return found


def _binds(init: Path, name: str) -> bool:
    """Whether a package's __init__ binds ``name`` at its top level (or may: star import, __getattr__)."""
    for node in ast.parse(init.read_text(), str(init)).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name in (name,
                                                                                                    "__getattr__"):
            return True
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if any(a.name == "*" or (a.asname or a.name.split(".")[0]) == name for a in node.names):
                return True
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else []
        if any(isinstance(n, ast.Name) and n.id == name for t in targets for n in ast.walk(t)):
            return True
    return False


def _deepest_module(dotted: str, mods: dict) -> str | None:
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in mods:
            return ".".join(parts[:n])
    return None


def _graph(root: Path = ROOT) -> tuple[dict[str, set[str]], list[str]]:
    """The import graph {module: modules it imports} and every private cross-module import."""
    mods = _modules(root)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    private = []
    for name, (path, is_pkg) in mods.items():
        for target, imported, line in _imports(name, path, is_pkg, mods):
            if target == name:
                continue
            graph[name].add(target)
            if imported.startswith("_") and not (imported.startswith("__") and imported.endswith("__")):
                private.append(f"{path.relative_to(root)}:{line}: imports private {imported!r} from {target}")
    return graph, private


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle [a, b, ..., a] in each strongly connected component that has one (Tarjan's
    algorithm, iterative), so a failure names every tangle at once."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = set()
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.add(w)
                    if w == v:
                        break
                if len(comp) > 1 or v in graph.get(v, ()):
                    components.append(comp)
    return [_cycle_in(graph, comp) for comp in sorted(components, key=min)]


def _cycle_in(graph: dict[str, set[str]], comp: set[str]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first search back to it)."""
    start = min(comp)
    parent = {start: None}
    queue = [start]
    for v in queue:
        for w in sorted(graph[v] & comp):
            if w == start:
                path = [v]
                while parent[path[-1]] is not None:
                    path.append(parent[path[-1]])
                return path[::-1] + [start]
            if w not in parent:
                parent[w] = v
                queue.append(w)
    raise AssertionError("a strongly connected component without a cycle")


def test_the_graph_sees_the_project():
    graph, _ = _graph()
    assert "nodes.comfy_backend" in graph and "dragon_core.backend" in graph["nodes.comfy_backend"]
    assert "nodes.model_info" in graph["nodes.memory_nodes"]


def test_import_resolution(tmp_path):
    files = {
        "dragon_core/__init__.py": "from .a import f\nVERSION = 1\n",
        "dragon_core/a.py": "from . import b\n\ndef f():\n    from .sub.c import _x, __all__\n",
        "dragon_core/b.py": "from . import gone\nfrom dragon_core import VERSION\nimport os, dragon_demo.d\n",
        "dragon_core/sub/__init__.py": "",
        "dragon_core/sub/c.py": "from .. import a\nfrom ..b import nothing\n_x = 1\n",
        "dragon_demo/d.py": "import dragon_core.sub.c.attr\n",
        "nodes/n.py": "import nodes\nfrom nodes import x\nfrom .m import _y\n",
        "nodes/m.py": "_y = 1\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph, private = _graph(tmp_path)
    assert graph == {
        "dragon_core": {"dragon_core.a"},
        "dragon_core.a": {"dragon_core.b", "dragon_core.sub.c"},
        "dragon_core.b": {"dragon_core", "dragon_demo.d"},  # `gone` is no name of dragon_core: no edge
        "dragon_core.sub": set(),
        "dragon_core.sub.c": {"dragon_core.a", "dragon_core.b"},
        "dragon_demo.d": {"dragon_core.sub.c"},
        "nodes.n": {"nodes.m"},  # an absolute `nodes` is ComfyUI's
        "nodes.m": set(),
    }
    assert private == ["dragon_core/a.py:4: imports private '_x' from dragon_core.sub.c",
                       "nodes/n.py:3: imports private '_y' from nodes.m"]
    assert find_cycles(graph) == [["dragon_core", "dragon_core.a", "dragon_core.b", "dragon_core"]]


def test_find_cycles():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": {"b2"}, "b2": {"b"}, "x": {"y"}, "y": {"x", "a"}}) == [
        ["b", "b2", "b"], ["x", "y", "x"]]


def test_no_import_cycle():
    graph, _ = _graph()
    cycles = find_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_private_name_imported_from_another_module():
    _, private = _graph()
    assert not private, "\n".join(private)
