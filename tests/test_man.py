"""The man page: it lints clean, documents every command and option of the parser, carries
cbos's version, and is installed with the package (with the tmux plugin) so `man cbos`
finds it."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cbos import __version__
from cbos.cli import build_parser
from cbos.config import SETTINGS

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "man" / "cbos.1"
PLUGIN = ROOT / "tmux" / "cbos.tmux"


def plain(roff: str) -> str:
    """The page's source with the roff escapes that matter for word search undone."""
    text = re.sub(r"\\f(\[[A-Z]*\]|[BIRP])", "", roff)
    return text.replace("\\-", "-").replace("\\&", "").replace("\\~", " ")


def linters() -> list[list[str]]:
    found = []
    if shutil.which("mandoc"):
        found.append(["mandoc", "-Tlint", "-W", "warning", str(PAGE)])
    if shutil.which("groff"):
        found.append(["groff", "-ww", "-z", "-man", str(PAGE)])
        found.append(["groff", "-ww", "-z", "-man", "-Tutf8", str(PAGE)])
        found.append(["groff", "-ww", "-z", "-man", "-Tascii", str(PAGE)])
    return found


def test_page_lints_without_a_word() -> None:
    commands = linters()
    assert commands, ("neither mandoc nor groff is installed, so the man page cannot be "
                      "checked: install one (apt-get install mandoc)")
    for command in commands:
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", ""), command


def test_version_in_the_title_line_is_cbos_version() -> None:
    title = next(line for line in PAGE.read_text().splitlines() if line.startswith(".TH "))
    match = re.search(r'"cbos (\S+)"', title)
    assert match, title
    assert match.group(1) == __version__


def walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
         ) -> Iterator[tuple[tuple[str, ...], argparse.Action]]:
    """Every (command path, action) of the parser and its subparsers, recursively."""
    for action in parser._actions:
        yield path, action
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, (*path, name))


def test_every_command_and_option_is_documented() -> None:
    text = plain(PAGE.read_text())
    commands: set[tuple[str, ...]] = set()
    options: set[str] = set()
    choices: set[str] = set()
    for path, action in walk(build_parser()):
        commands.add(path)
        options.update(action.option_strings)
        if action.choices and not isinstance(action, argparse._SubParsersAction):
            choices.update(str(choice) for choice in action.choices)
    assert len(commands) > 15 and "--popup" in options  # the walk found the parser
    missing = [" ".join(("cbos", *path)) for path in sorted(commands)
               if path and f"cbos {' '.join(path)}" not in text]
    missing += [option for option in sorted(options)
                if not re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text)]
    missing += [choice for choice in sorted(choices)
                if not re.search(rf"(?<![\w-]){re.escape(choice)}(?![\w-])", text)]
    assert missing == [], f"not in man/cbos.1: {missing}"


def test_environment_and_plugin_options_are_documented() -> None:
    text = plain(PAGE.read_text())
    names = [name for setting in SETTINGS for name in setting.env]
    options = re.findall(r"^\s*(@cbos-[a-z-]+)\)", PLUGIN.read_text(), re.M)
    assert len(options) >= 7
    missing = [name for name in [*names, *options] if name not in text]
    assert missing == [], f"not in man/cbos.1: {missing}"
    for words in ("ws://127.0.0.1:32205/ws/stream", "Origin", "Host", "0600", "token",
                  "EXIT STATUS", "EXAMPLES", "130"):
        assert words in text, words


def test_keys_and_states_are_documented() -> None:
    rendered = subprocess.run(["groff", "-man", "-Tutf8", str(PAGE)] if shutil.which("groff")
                              else ["mandoc", "-Tutf8", str(PAGE)],
                              capture_output=True, check=False).stdout.decode()
    text = re.sub(r".\x08", "", rendered)  # overstrike (bold, underline) off
    for icon, state in (("●", "waiting"), ("⚠", "permission"), ("◐", "thinking"),
                        ("◑", "working"), ("○", "idle"), ("✗", "exited")):
        assert f"{icon} {state}" in text, state
    for key in ("Enter", "Escape", "Ctrl+C", "PageUp", "1...9"):
        assert key in text, key


# -- installed with the package ----------------------------------------------------------


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "-q", "-w", str(out)]
    try:
        import hatchling  # noqa: F401  (present: build here, without fetching it)
        command.append("--no-build-isolation")
    except ImportError:
        pass
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    (built,) = out.glob("cbos-*.whl")
    return built


def test_wheel_ships_the_page_and_the_plugin(wheel: Path) -> None:
    data = f"cbos-{__version__}.data/data/share/"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert f"{data}man/man1/cbos.1" in names, names
        assert f"{data}cbos/tmux/cbos.tmux" in names, names
        assert zf.read(f"{data}man/man1/cbos.1") == PAGE.read_bytes()
        assert zf.read(f"{data}cbos/tmux/cbos.tmux") == PLUGIN.read_bytes()
        mode = zf.getinfo(f"{data}cbos/tmux/cbos.tmux").external_attr >> 16
        assert mode & 0o111, "the plugin must stay executable (run-shell and TPM run it)"


def test_installed_man_and_plugin_are_found(wheel: Path, tmp_path: Path) -> None:
    """In a fresh environment: `man cbos` finds the page (bin/../share/man is on man's
    path) and `cbos plugin-path` names the installed plugin."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages",
                    str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                    "--no-deps", "--no-index", str(wheel)], check=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if k not in ("MANPATH", "PYTHONPATH")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    found = subprocess.run([str(venv / "bin" / "cbos"), "plugin-path"], capture_output=True,
                           text=True, env=env, cwd=tmp_path, check=False)
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == str(venv / "share" / "cbos" / "tmux" / "cbos.tmux")
    assert os.access(found.stdout.strip(), os.X_OK)
    if shutil.which("man") is None:
        pytest.skip("`man` is not installed (man-db): `man -w cbos` not checked")
    where = subprocess.run(["man", "-w", "cbos"], capture_output=True, text=True, env=env,
                           check=False)
    assert where.stdout.strip() == str(venv / "share" / "man" / "man1" / "cbos.1"), where
