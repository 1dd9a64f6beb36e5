"""Shared fixtures: a private HOME, a private tmux server, and the fake claude on PATH."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import libtmux
import pytest

from cbos import config as cbos_config
from cbos.tmux import Tmux
from tests.sshd import SshWorld

TESTS = Path(__file__).parent
FIXTURES = TESTS / "fixtures" / "claude-code-2.1.328"


@pytest.fixture(autouse=True)
def private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point HOME and the XDG dirs at a temp dir, so no real config or ~/.tmux.conf loads."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME", "CLAUDE_CONFIG_DIR",
                 "TMUX", "TMUX_PANE"):
        monkeypatch.delenv(name, raising=False)
    for name in list(os.environ):
        if name.startswith("CBOS_"):
            monkeypatch.delenv(name)
    # A proxy setting must never capture loopback traffic in tests.
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy",
                 "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def fake_claude(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put the fake `claude` first on PATH; return its path."""
    from tests.fakeclaude import install_fake_claude

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    claude = install_fake_claude(bin_dir)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    # Absolute, so panes find it whatever PATH the tmux server started with.
    monkeypatch.setenv("CBOS_CLAUDE_COMMAND", str(claude))
    return claude


@pytest.fixture
def quiet_fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The fake claude reports each prompt to the returned file; no idle notification
    (it comes late and muddles states); dialogs take keys after 0.3 s, not ~1 s."""
    log = tmp_path / "prompts.jsonl"
    monkeypatch.setenv("CBOS_CLAUDE_ENV_VARS",
                       f"FAKE_CLAUDE_LOG={log} FAKE_CLAUDE_IDLE_NOTIFY_S=60 "
                       "FAKE_CLAUDE_DIALOG_GRACE_S=0.3")
    return log


@pytest.fixture
def tmux(server: libtmux.Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[Tmux]:
    """cbos's tmux layer on the private server of libtmux's `server` fixture."""
    assert server.socket_name is not None
    monkeypatch.setenv("CBOS_TMUX_SOCKET", server.socket_name)
    yield Tmux(server.socket_name)


@pytest.fixture
def config(private_home: Path) -> cbos_config.Config:
    return cbos_config.load()


class CliResult(NamedTuple):
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run `cbos ARGS...` in-process; return (exit code, stdout, stderr)."""
    from cbos.cli import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = main(list(args))
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def world(tmp_path: Path, private_home: Path, monkeypatch: pytest.MonkeyPatch
          ) -> Iterator[SshWorld]:
    """An ssh client setup for the hosts tests; servers are added by the tests, and
    everything is torn down."""
    made = SshWorld(tmp_path / "ssh")
    monkeypatch.setenv("CBOS_SSH_COMMAND", made.ssh_command)
    yield made
    made.close()
