"""What pyproject declares covers what the code imports and calls: a fresh install of the
package (and of its test extra, for the tests and benchmarks) runs everything."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))

# Library calls that exist only from some version on: (module, attribute, first version).
# urwid's MainLoop.paused() (handing the terminal to `tmux attach`) came with urwid 5.0.
VERSIONED = [("urwid", "paused", (5, 0))]


def _requirements(specs: list[str]) -> dict[str, tuple[int, ...]]:
    """``{"urwid": (5, 0)}`` from ``["urwid>=5.0", ...]`` (no lower bound: ``()``)."""
    found = {}
    for spec in specs:
        match = re.match(r"\s*([A-Za-z0-9_.-]+)(?:\[[^]]*\])?\s*(?:>=\s*([0-9.]+))?", spec)
        assert match, spec
        name = match.group(1).lower().replace("_", "-")
        found[name] = tuple(int(p) for p in (match.group(2) or "").split(".") if p)
    return found


RUNTIME = _requirements(PYPROJECT["project"]["dependencies"])
TEST = _requirements(PYPROJECT["project"]["optional-dependencies"]["test"])


def _imports(folder: str) -> Iterator[tuple[Path, str]]:
    """(file, top-level module) of every import in ``folder``, inside functions too, but
    those guarded by ``except ImportError`` (optional by design)."""
    for path in sorted((ROOT / folder).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        optional = {id(inner) for node in ast.walk(tree) if isinstance(node, ast.Try)
                    and any(_catches_import_error(h) for h in node.handlers)
                    for stmt in node.body for inner in ast.walk(stmt)}
        for node in ast.walk(tree):
            if id(node) in optional:
                continue
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield path, alias.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                yield path, node.module.split(".")[0]


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError")
               for n in names)


def _distribution(module: str) -> str | None:
    """The distribution installing ``module``; None for the stdlib and this project."""
    if module in sys.stdlib_module_names or module in ("cbos", "bench", "tests"):
        return None
    names = importlib.metadata.packages_distributions().get(module)
    assert names, f"{module} is imported but not installed: declare it in pyproject.toml"
    return names[0].lower().replace("_", "-")


def test_the_package_declares_what_it_imports() -> None:
    missing = {f"{path.relative_to(ROOT)}: {module}" for path, module in _imports("cbos")
               if (dist := _distribution(module)) is not None and dist not in RUNTIME}
    assert not missing, "imported by cbos but not in [project] dependencies"


def test_the_test_extra_covers_tests_and_benchmarks() -> None:
    declared = RUNTIME | TEST
    missing = {f"{path.relative_to(ROOT)}: {module}"
               for folder in ("tests", "bench") for path, module in _imports(folder)
               if (dist := _distribution(module)) is not None and dist not in declared}
    assert not missing, "imported by tests or bench/ but in no declared extra"


def test_minimum_versions_have_what_is_called() -> None:
    source = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "cbos").rglob("*.py"))
    for module, attribute, since in VERSIONED:
        if re.search(rf"\.{attribute}\(", source):
            assert RUNTIME[module] >= since, (
                f"cbos calls {module}'s {attribute}() (from {'.'.join(map(str, since))}) "
                f"but pyproject allows {module}>={'.'.join(map(str, RUNTIME[module]))}")
