"""The project's layout rules, read from the source with `ast` (nothing is imported but the registry):

- imports have no loops: no module of arena/, ui/, backends/ or app.py imports, even inside a function or under
  ``if TYPE_CHECKING:``, a module that imports it back;
- imports go one way, app -> ui -> arena -> backends;
- the border to the backends runs one way: no module under backends/ imports anything of `arena`, not inside a
  function nor under ``if TYPE_CHECKING:`` (what a backend needs of the core is in `backends.contract`, or comes in
  its load context);
- ui/ and app.py import arena's public surface only (``from arena import <a name of arena.PUBLIC>``) and nothing of
  backends/; what drives an `Arena` outside arena/core.py calls its public methods only;
- the core knows no backend by name: outside arena/registry.py no module of arena/ or ui/ holds a registered
  backend's name or alias as a string (a backend is asked through the registry: its options, precisions, colour,
  whether it can be the reference), but for the short list of reasons in `ALLOWED_NAMES`.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from arena.registry import BACKENDS, all_backends
from tests.support import ROOT

PACKAGES = ("arena", "ui", "backends")

# (file, where: the function, class or module-level name holding it, the string): why it may name a backend.
ALLOWED_NAMES = {
    ("arena/running/host.py", "_gpu_mb", "torch"): "the torch Python module in sys.modules (the worker's GPU memory "
                                                   "in use, whatever the backend), not the PyTorch backend",
    ("ui/api.py", "HEAVY_MODULES", "torch"): "Python modules the UI process must never import (a test of it)",
    ("ui/api.py", "HEAVY_MODULES", "onnxruntime"): "Python modules the UI process must never import (a test of it)",
    ("ui/api.py", "HEAVY_MODULES", "tensorrt"): "Python modules the UI process must never import (a test of it)",
}


def project_files() -> dict[str, Path]:
    """Every module of the project's code by dotted name ("arena.types"; a package by its own name)."""
    files = {"app": ROOT / "app.py"}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def public_surface() -> dict[str, str]:
    """arena's public surface, {name: the module that defines it}, read from arena/__init__.py's ``PUBLIC``."""
    tree = ast.parse((ROOT / "arena" / "__init__.py").read_text())
    found = next(node.value for node in tree.body if isinstance(node, ast.Assign)
                 and any(isinstance(target, ast.Name) and target.id == "PUBLIC" for target in node.targets))
    surface = ast.literal_eval(found)
    return {name: target.partition(":")[0] for name, target in surface.items()}


def imports_of(path: Path, module: str, modules: set[str]) -> set[str]:
    """The project modules ``module`` imports, at its top, inside functions or under ``if TYPE_CHECKING:`` (a
    type-only import is still a dependency: a loop through one is a type in the wrong place). ``from a.b import
    c`` is a.b.c when that is a module, else a.b; an import of a submodule counts as an edge to that submodule only
    (not to the packages above it, whose ``__init__`` Python also runs). ``from arena import Name`` (the public
    surface) is an edge to the module that defines Name: arena imports it from there when first asked."""
    surface = public_surface()
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.update(filter(None, (known(alias.name) for alias in node.names)))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module if is_package else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            for alias in node.names:
                if base == "arena" and alias.name in surface:
                    found.add(surface[alias.name])
                    continue
                target = known(f"{base}.{alias.name}") if f"{base}.{alias.name}" in modules else known(base)
                if target:
                    found.add(target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found - {module}


def import_graph() -> dict[str, set[str]]:
    files = project_files()
    return {module: imports_of(path, module, set(files)) for module, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One import loop per strongly connected group of modules (Tarjan), each as a path back to its start."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return [_loop_in(group, graph) for group in groups]


def _loop_in(group: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest loop through the first module of ``group`` (breadth first inside the group)."""
    start = min(group)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph[node] & group):
            if nxt == start:
                return paths[node] + [start]
            if nxt not in paths:
                paths[nxt] = paths[node] + [nxt]
                queue.append(nxt)
    return sorted(group)


def test_no_import_loop_among_the_projects_modules():
    """Imports under ``if TYPE_CHECKING:`` count too: a loop that only type checking closes is still a loop."""
    graph = import_graph()
    assert {"app", "arena.core", "ui.charts", "backends.contract", "backends.onnxruntime.backend"} <= set(graph)
    assert "backends.contract" in graph["arena.registry"] and "arena.registry" in graph["arena.types"]
    assert "backends.contract" in graph["backends.loops"]  # imported there under ``if TYPE_CHECKING:`` only
    loops = cycles(graph)
    assert not loops, "import loops (each: a module, what it imports, ... back to it):\n" + "\n".join(
        " -> ".join(loop) for loop in loops)


def test_imports_go_one_way():
    """app -> ui -> arena -> backends."""
    problems = []
    for module, imported in sorted(import_graph().items()):
        layer = module.partition(".")[0]
        for target in sorted(imported):
            other = target.partition(".")[0]
            if (layer == "arena" and other in ("ui", "app")) or (layer == "ui" and other == "app"):
                problems.append(f"{module} imports {target} (a layer above it)")
            elif layer == "backends" and other in ("ui", "app"):
                problems.append(f"{module} imports {target} (a layer above it)")
    assert not problems, "\n".join(problems)


def imported_names(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """Every absolute module name a module imports (line, name), wherever the import sits: at the top, inside a
    function, under ``if TYPE_CHECKING:``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            yield node.lineno, node.module


def test_backends_import_nothing_from_arena():
    """The border runs one way: a backend takes what it needs of the core from `backends.contract` (errors,
    prepared inputs, settings, options, the load context with the server's secrets, endpoints, embedded files and
    CPU budget), never from `arena`, even for a type or inside a function."""
    paths = sorted((ROOT / "backends").rglob("*.py"))
    assert ROOT / "backends" / "contract.py" in paths
    found = [f"{path.relative_to(ROOT).as_posix()}:{line} imports {name}"
             for path in paths for line, name in imported_names(ast.parse(path.read_text()))
             if name == "arena" or name.startswith("arena.")]
    assert not found, "take it from backends.contract or the LoadContext instead:\n" + "\n".join(found)


def test_the_ui_and_the_app_import_arenas_public_surface_only():
    """ui/ and app.py take the core from ``from arena import ...`` with names of `arena.PUBLIC` (the same at the top
    or inside a function); never ``arena.<module>`` and never backends/ (the backends' options reach them through
    arena)."""
    import arena

    surface = public_surface()
    assert {"Arena", "ArenaError", "TextRunRequest", "OptionInfo", "WarmUp"} <= set(surface)
    found = []
    for path in [ROOT / "app.py", *sorted((ROOT / "ui").rglob("*.py"))]:
        where = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and not node.level and node.module == "arena":
                found += [f"{where}:{node.lineno} imports arena.{alias.name}, not in arena.PUBLIC"
                          for alias in node.names if alias.name not in surface]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                if node.module.partition(".")[0] in ("arena", "backends"):
                    found.append(f"{where}:{node.lineno} imports from {node.module}")
            elif isinstance(node, ast.Import):
                found += [f"{where}:{node.lineno} imports {alias.name}" for alias in node.names
                          if alias.name.partition(".")[0] in ("arena", "backends")]
    assert not found, "import it `from arena import ...` (add it to arena.PUBLIC if a front end needs it):\n" + \
        "\n".join(found)
    # every public name is where PUBLIC says, and plain ``import arena`` imports none of them (a worker's
    # ``import arena.errors`` stays cheap)
    for name in surface:
        assert getattr(arena, name) is not None, name
    code = "import sys, arena; print(sorted(m for m in sys.modules if m.startswith(('arena.', 'backends'))))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


def test_what_drives_an_arena_uses_its_public_methods():
    """Outside arena/core.py, code that holds an `Arena` (``arena`` or ``self.arena``: the judging check, the
    examples, the warm-up, the load sweep, the UI, the app) reaches none of its private attributes."""
    found = []
    for module, path in sorted(project_files().items()):
        if module == "arena.core":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")):
                continue
            holder = node.value
            if (isinstance(holder, ast.Name) and holder.id == "arena") or (
                    isinstance(holder, ast.Attribute) and holder.attr == "arena"):
                found.append(f"{path.relative_to(ROOT).as_posix()}:{node.lineno} reaches arena.{node.attr}")
    assert not found, "use (or add) a public method of Arena:\n" + "\n".join(found)


def backend_names() -> set[str]:
    """Every registered backend's name and its class's aliases."""
    return set(BACKENDS) | {alias for cls in all_backends().values() for alias in cls.aliases}


def strings_with_scope(tree: ast.Module) -> Iterator[tuple[str, ast.Constant]]:
    """Each string constant of a module with where it sits: its innermost function or class, or the module-level
    name it is assigned to ("" elsewhere at module level)."""
    def walk(node: ast.AST, scope: str) -> Iterator[tuple[str, ast.Constant]]:
        for child in ast.iter_child_nodes(node):
            inner = scope
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                inner = child.name
            elif isinstance(node, ast.Module) and isinstance(child, (ast.Assign, ast.AnnAssign)):
                targets = child.targets if isinstance(child, ast.Assign) else [child.target]
                inner = next((t.id for t in targets if isinstance(t, ast.Name)), "")
            if isinstance(child, ast.Constant) and isinstance(child.value, str):
                yield scope, child
            yield from walk(child, inner)

    yield from walk(tree, "")


def test_no_backend_name_in_the_core_or_the_ui():
    names = backend_names()
    assert {"pytorch", "onnxruntime", "torch", "ort"} <= names
    found, used = [], set()
    for package in ("arena", "ui"):
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if relative == "arena/registry.py":
                continue
            for scope, node in strings_with_scope(ast.parse(path.read_text())):
                value = node.value.strip().lower()
                if value not in names:
                    continue
                if (relative, scope, value) in ALLOWED_NAMES:
                    used.add((relative, scope, value))
                    continue
                found.append(f"{relative}:{node.lineno} ({scope or 'module'}) names the backend {node.value!r}")
    assert not found, ("ask the backend through arena.registry instead (or add a reason to ALLOWED_NAMES):\n"
                       + "\n".join(found))
    assert used == set(ALLOWED_NAMES), f"stale ALLOWED_NAMES entries: {sorted(set(ALLOWED_NAMES) - used)}"
