"""Which modules may reach which, read from the source (imports inside functions count)."""

from __future__ import annotations

import ast
from pathlib import Path

import cbos

PACKAGE = Path(cbos.__file__).parent


def imported(module: str) -> set[str]:
    """Every module ``cbos.<module>`` names in an import statement, anywhere in its source."""
    tree = ast.parse((PACKAGE / f"{module.removeprefix('cbos.')}.py").read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            # `from cbos import hooks` names the module cbos.hooks
            names.update(f"{node.module}.{alias.name}" for alias in node.names
                         if (PACKAGE / f"{alias.name}.py").exists() and node.module == "cbos")
    return names


def reach(module: str) -> set[str]:
    """The cbos modules ``module`` imports, directly or through others."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        for other in imported(name):
            if other.startswith("cbos.") and other not in seen and \
                    (PACKAGE / f"{other.removeprefix('cbos.')}.py").exists():
                seen.add(other)
                todo.append(other)
    return seen


def test_the_state_machine_imports_nothing_that_writes() -> None:
    assert reach("cbos.state").isdisjoint(
        {"cbos.hooks", "cbos.registry", "cbos.tmux", "cbos.sessions", "cbos.logs"})


def test_the_board_works_without_tmux() -> None:
    assert reach("cbos.model").isdisjoint({"cbos.tmux", "cbos.sessions", "cbos.hooks"})


def test_registry_and_transcript_take_plain_data() -> None:
    for module in ("cbos.registry", "cbos.transcript"):
        assert "cbos.model" not in reach(module), module
