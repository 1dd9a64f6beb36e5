"""Every claude on this machine: one running outside tmux (a plain terminal, here a pty)
is listed from its process and Claude's status file, read-only, and every action on it
is refused with the reason."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cbos.tmux import Tmux
from tests.conftest import CliResult
from tests.support import start_session, wait_until

Cli = Callable[..., CliResult]


@pytest.fixture
def terminal_claude(fake_claude: Path, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The fake claude on a pty of its own, as in a terminal window: no TMUX, no pane."""
    import pty

    project = tmp_path / "plain"
    project.mkdir()
    leader, follower = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k not in ("TMUX", "TMUX_PANE")}
    proc = subprocess.Popen([str(fake_claude)], stdin=follower, stdout=follower,
                            stderr=follower, cwd=project, env=env, start_new_session=True)
    os.close(follower)
    os.set_blocking(leader, False)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        os.close(leader)


def listed(cli: Cli) -> dict[str, dict[str, Any]]:
    result = cli("ls", "--json")
    assert result.code == 0, result.err
    return {v["slug"]: v for v in json.loads(result.out)}


def test_a_claude_outside_tmux_is_listed_read_only(
        cli: Cli, tmux: Tmux, tmp_path: Path, terminal_claude: subprocess.Popen[bytes],
        ) -> None:
    start_session(cli, tmux, tmp_path, "INSIDE")
    slug = f"outside-{terminal_claude.pid}"
    view = wait_until(lambda: listed(cli).get(slug), timeout=20,
                      message="the terminal claude is listed")
    assert view["tmux"] is None and view["pane_id"] is None and view["read_only"] is True
    assert view["pid"] == terminal_claude.pid
    assert view["path"] == str(tmp_path / "plain")
    assert view["state"] == "idle" and view["reason"].startswith("outside tmux · ")
    assert view["claude_session_id"]
    inside = listed(cli)["INSIDE"]
    assert inside["read_only"] is False and inside["tmux"]
    # The table puts it after the sessions cbos can act on.
    table = cli("ls").out.splitlines()
    rows = {name: next(i for i, row in enumerate(table) if name in row)
            for name in ("INSIDE", slug)}  # (each must be there)
    assert rows["INSIDE"] < rows[slug]
    for args in (("send", slug, "hello"), ("answer", slug, "1"), ("attach", slug),
                 ("interrupt", slug), ("kill", slug)):
        refused = cli(*args)
        assert refused.code != 0, args
        assert "outside cbos's tmux" in refused.err and "only watch" in refused.err, args
    assert terminal_claude.poll() is None  # nothing of it was touched


def test_a_claude_in_a_pane_is_not_listed_twice(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path) -> None:
    start_session(cli, tmux, tmp_path, "ONE")
    shown = listed(cli)
    assert "ONE" in shown and [s for s in shown if s.startswith("outside-")] == []
