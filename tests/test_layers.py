"""The import graph of cbos/, read from the source: no cycle, and nothing imports the CLI.

Every import counts: at module level, inside functions, under TYPE_CHECKING, and modules
named to ``importlib.import_module`` as a string. A lazy import hides a dependency from the
start-up cost, not from the design.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cbos"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def resolve(name: str, known: set[str]) -> str | None:
    """The cbos module ``name`` refers to (a function or class name resolves to its
    module), or None outside cbos."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(path: Path, here: str, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] or [base]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            targets = [node.args[0].value]
        for target in targets:
            if target == "cbos" or target.startswith("cbos."):
                module = resolve(target, known)
                if module and module != here and module != "cbos":
                    found.add(module)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(path, name, known) for name, path in mods.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path [a, b, ..., a], or None."""
    colour: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if colour.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in colour and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        colour[node] = 2
        return None

    for node in sorted(edges):
        if node not in colour and (cycle := visit(node)):
            return cycle
    return None


def test_the_import_graph_has_no_cycle() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_nothing_below_the_cli_imports_it() -> None:
    offenders = {name: sorted(m for m in deps if m == "cbos.cli" or m.startswith("cbos.cli."))
                 for name, deps in graph().items()
                 if not (name == "cbos.cli" or name.startswith("cbos.cli."))
                 and name != "cbos.entry"}
    offenders = {name: deps for name, deps in offenders.items() if deps}
    assert not offenders, f"modules below the CLI import it: {offenders}"


@pytest.mark.parametrize(("edges", "cyclic"), [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, False),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, True),
    ({"a": {"a"}}, True),
])
def test_the_cycle_finder_finds_cycles(edges: dict[str, set[str]], cyclic: bool) -> None:
    assert (find_cycle(edges) is not None) is cyclic


def test_the_reader_sees_lazy_and_string_imports(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text("import importlib\n"
                      "def f():\n"
                      "    from cbos.cli import main\n"
                      "    importlib.import_module('cbos.web')\n"
                      "    from . import state\n")
    known = {"cbos.cli", "cbos.web", "cbos.state", "cbos.mod"}
    found = imports_of(source, "cbos.mod", known)
    assert found == {"cbos.cli", "cbos.web", "cbos.state"}


def reach(module: str) -> set[str]:
    """The cbos modules ``module`` imports, directly or through others."""
    edges = graph()
    seen: set[str] = set()
    todo = [module]
    while todo:
        for other in edges[todo.pop()] - seen:
            seen.add(other)
            todo.append(other)
    return seen


def test_the_state_machine_imports_nothing_that_writes() -> None:
    writers = {"cbos.hooks", "cbos.registry", "cbos.tmux", "cbos.sessions", "cbos.logs"}
    assert reach("cbos.state").isdisjoint(writers)


def test_the_board_works_without_tmux() -> None:
    assert reach("cbos.model").isdisjoint({"cbos.tmux", "cbos.sessions", "cbos.hooks"})


def test_registry_and_transcript_take_plain_data() -> None:
    for module in ("cbos.registry", "cbos.transcript"):
        assert "cbos.model" not in reach(module), module


def test_only_the_watch_module_imports_inotify() -> None:
    importers = set()
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n.split(".")[0] == "inotify_simple" for n in names):
                importers.add(name)
    assert importers == {"cbos.watch"}


def test_one_thing_one_name() -> None:
    """Names that once meant different things in different modules (or one thing with two
    values) are defined in one module only."""
    where: dict[str, list[str]] = {}
    for name, path in modules().items():
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            targets = ([node.name] if isinstance(node, ast.ClassDef) else
                       [t.id for t in node.targets if isinstance(t, ast.Name)]
                       if isinstance(node, ast.Assign) else [])
            for target in targets:
                where.setdefault(target, []).append(name)
    for name in ("Session", "Outcome", "_Reader", "BACKLOG_BYTES", "GRACE",
                 "FALLBACK_REFRESH"):
        assert len(where.get(name, [])) <= 1, f"{name} is defined in {where[name]}"
