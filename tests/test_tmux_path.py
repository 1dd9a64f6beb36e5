"""One tmux execution path: every tmux command line cbos runs goes through ``Tmux.cmd``
(cbos/tmux.py). Read from the source, and watched at run time with a spy on process
creation while the CLI, the engine (its refreshes, pipes and notifier) and the status
line do their work."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import libtmux
import pytest

from cbos import config as config_mod
from cbos import statusline
from cbos.engine import Engine
from tests.conftest import CliResult
from tests.support import pump, start_session, wait_until
from tests.test_plugin import Client
from tests.test_plugin import attach as attach  # a fixture: a client on a pty
from tests.test_plugin import quick_fake as quick_fake  # a fixture: quicker fake claude

PACKAGE = Path(__file__).resolve().parents[1] / "cbos"
TMUX_MODULE = PACKAGE / "tmux.py"
# Processes cbos starts that are not tmux: notify-send (the desktop notification), ssh
# (other machines; hosts.py is its only caller).
OTHER_PROGRAMS = {"notify.py": {"Popen"}, "hosts.py": {"Popen", "run", "execvp"}}
SPAWNERS = {("subprocess", name) for name in ("run", "Popen", "call", "check_call",
                                              "check_output", "getoutput",
                                              "getstatusoutput")} | {
    ("os", name) for name in ("system", "popen", "execv", "execve", "execvp", "execvpe",
                              "execl", "execlp", "execle", "execlpe", "spawnv", "spawnve",
                              "spawnvp", "spawnvpe", "posix_spawn", "posix_spawnp")}


def spawn_sites(path: Path) -> Iterator[tuple[str, int]]:
    """(function, line) of every process start in a module (``subprocess.run``, ``os.exec*``
    and friends, called through the module or imported by name)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported = {alias.asname or alias.name for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module in ("subprocess", "os")
                for alias in node.names
                if (node.module, alias.name) in SPAWNERS}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                and (func.value.id, func.attr) in SPAWNERS):
            yield func.attr, node.lineno
        elif isinstance(func, ast.Name) and func.id in imported:
            yield func.id, node.lineno


def test_only_tmux_py_starts_tmux_and_runs_its_commands() -> None:
    strays = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == TMUX_MODULE:
            continue
        name = str(path.relative_to(PACKAGE))
        allowed = OTHER_PROGRAMS.get(name, set())
        strays += [f"{name}:{line} starts a process ({what})"
                   for what, line in spawn_sites(path) if what not in allowed]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        strays += [f"{name}:{node.lineno} runs a raw tmux command line (.cmd)"
                   for node in ast.walk(tree)
                   if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                   and node.func.attr == "cmd"]
        strays += [f"{name}:{node.lineno} finds the tmux binary itself"
                   for node in ast.walk(tree)
                   if isinstance(node, ast.Name | ast.Attribute)
                   and (getattr(node, "id", None) or getattr(node, "attr", None))
                   == "tmux_binary"]
    assert not strays, "\n".join(strays)


def test_the_scan_sees_what_it_looks_for(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import os, subprocess\nfrom subprocess import run as go\n"
                      "subprocess.run(['tmux'])\nos.execvpe('tmux', [], {})\ngo(['x'])\n")
    assert list(spawn_sites(sample)) == [("run", 3), ("execvpe", 4), ("go", 5)]


class Spy:
    """Every process started while it is on: argv, and the path from the innermost cbos
    frame to the start (``tmux.py:cmd``, then only the subprocess module's frames)."""

    def __init__(self) -> None:
        self.starts: list[tuple[list[str], list[str]]] = []

    def record(self, argv: Any) -> None:
        args = [str(a) for a in argv] if isinstance(argv, list | tuple) else [str(argv)]
        stack = traceback.extract_stack()[:-2]  # this spy's own frames off
        ours = [i for i, f in enumerate(stack) if f.filename.startswith(str(PACKAGE))]
        path = [f"{os.path.basename(f.filename)}:{f.name}"
                for f in stack[ours[-1]:]] if ours else []
        self.starts.append((args, path))

    def tmux_starts(self) -> list[tuple[list[str], list[str]]]:
        return [(argv, path) for argv, path in self.starts
                if argv and os.path.basename(argv[0]) == "tmux" and path]


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Spy:
    seen = Spy()
    real_init = subprocess.Popen.__init__

    def init(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
        seen.record(args)
        real_init(self, args, *rest, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", init)
    return seen


def test_every_tmux_command_cbos_runs_starts_in_tmux_py(
        spy: Spy, quick_fake: None, fake_claude: Path, cli: Callable[..., CliResult],
        tmux: Any, server: libtmux.Server, tmp_path: Path,
        attach: Callable[..., Client]) -> None:
    tmux.cmd("new-session", "-d", "-s", "home", "-x", "160", "-y", "40")
    client = attach(server.socket_name, "home")
    pane = start_session(cli, tmux, tmp_path, "AUTH").pane_id
    assert cli("send", "AUTH", "SAY hello").code == 0
    assert cli("buffer", "AUTH").code == 0
    assert json.loads(cli("ls", "--json").out)[0]["slug"] == "AUTH"
    config = config_mod.load()
    assert statusline.line(config) != ""
    engine = Engine(config, tmux)  # with its notifier
    try:
        engine.start()
        assert cli("send", "AUTH", f"WRITE {tmp_path / 'made.txt'}").code == 0
        pump(engine, lambda: "cbos: ⚠ AUTH needs permission" in client.output, 20,
             "the notifier's message on the client")
        pump(engine, lambda: "\a" in client.output, 10, "the notifier's bell")
        engine.core.tmux.rearm(pane, config.log_path("AUTH"))
    finally:
        engine.close()
    assert cli("kill", "AUTH").code == 0
    starts = spy.tmux_starts()
    commands = {argv[2] if argv[1].startswith("-L") else argv[1] for argv, _ in starts}
    assert {"list-panes", "new-session", "load-buffer", "capture-pane", "list-clients",
            "display-message", "kill-session"} <= commands, commands
    # -V: the version check, once per process, where the binary is found.
    one_path = (["tmux.py:cmd"], ["tmux.py:tmux_binary"])
    strays = [(argv, path) for argv, path in starts
              if [p for p in path if not p.startswith("subprocess.py:")] not in one_path]
    assert not strays, strays
    wait_until(lambda: not tmux.list_panes() or all(p.slug != "AUTH"
                                                    for p in tmux.list_panes()),
               message="AUTH is gone")
