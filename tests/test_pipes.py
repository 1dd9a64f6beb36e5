"""Pipe ownership: cbos re-arms only the pipes it armed (marked with a pane option that a
pane hook clears on any other pipe-pane), and never replaces a person's own pipe-pane,
whether the running engine (TUI, serve) or the CLI looks at the pane."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cbos import config as config_mod
from cbos import engine as engine_mod
from cbos.model import USER_PIPE
from cbos.tmux import PIPE_OPTION, Tmux
from tests.conftest import CliResult
from tests.support import pump, wait_until
from tests.test_sessions import start


def pane_says(tmux: Tmux, pane_id: str, fmt: str) -> str:
    return tmux.cmd("display-message", "-p", "-t", pane_id, fmt)[0]


@pytest.fixture
def eager_engine(monkeypatch: pytest.MonkeyPatch, tmux: Tmux) -> Iterator[Any]:
    """An engine that refreshes and checks every pipe twice a second (not every 2 s and
    10 s), counting its refreshes."""
    monkeypatch.setattr(engine_mod, "REFRESH_EVERY", 0.5)
    monkeypatch.setattr(engine_mod, "PIPE_CHECK_EVERY", 0.0)
    engine = engine_mod.Engine(config_mod.load(), tmux, notify=False)
    gather = engine.core.gather
    engine.refreshes = 0

    def counted() -> Any:
        engine.refreshes += 1
        return gather()

    engine.core.gather = counted
    yield engine
    engine.close()


def hand_started(tmux: Tmux, fake_claude: Path, tmp_path: Path, name: str) -> str:
    """A claude a person started by hand in a tmux session of their own; its pane id."""
    work = tmp_path / name
    work.mkdir()
    return tmux.cmd("new-session", "-d", "-P", "-F", "#{pane_id}", "-s", name, "-c",
                    str(work), str(fake_claude))[0]


def test_the_engine_leaves_a_hand_started_claude_s_own_pipe(
        eager_engine: Any, fake_claude: Path, tmux: Tmux, tmp_path: Path) -> None:
    """The bug: `pipe-pane 'cat >> mine.log'` on a claude started by hand, the TUI opened,
    and seconds later mine.log stopped growing (the pipe check re-armed cbos's own)."""
    pane = hand_started(tmux, fake_claude, tmp_path, "handmade")
    mine = tmp_path / "mine.log"
    tmux.cmd("pipe-pane", "-t", pane, f"cat >> {mine}")
    wait_until(lambda: "❯\u00a0" in tmux.capture(pane, colours=False), timeout=15,
               message="claude shows its composer")
    engine = eager_engine
    engine.start()
    pump(engine, lambda: engine.refreshes >= 4 and engine.view("handmade") is not None,
         30, "four refreshes, each checking the pipes")
    assert pane_says(tmux, pane, f"#{{pane_pipe}}:#{{{PIPE_OPTION}}}") == "1:"
    tmux.send_text(pane, "SAY still mine", "handmade")
    pump(engine, lambda: b"still mine" in mine.read_bytes(), 15, "their pipe still writes")
    # Shown like any session (its turn ends: waiting), the reason saying whose output it is.
    pump(engine, lambda: (view := engine.view("handmade")) is not None
         and view.state.value in ("waiting", "idle") and USER_PIPE in view.reason, 20,
         "the session with its state and a reason naming the user's pipe")


def test_a_pipe_a_person_puts_on_a_cbos_session_is_theirs(
        eager_engine: Any, cli: Any, fake_claude: Path, tmux: Tmux, tmp_path: Path) -> None:
    session = start(cli, tmux, tmp_path, "OURS")
    pane = session.pane.pane_id
    assert session.pane.pipe_ours
    assert pane_says(tmux, pane, f"#{{{PIPE_OPTION}}}") == "1"
    mine = tmp_path / "mine.log"
    tmux.cmd("pipe-pane", "-t", pane, f"cat >> {mine}")  # the pane hook forgets the mark
    assert pane_says(tmux, pane, f"#{{pane_pipe}}:#{{{PIPE_OPTION}}}") == "1:"
    engine = eager_engine
    engine.start()
    pump(engine, lambda: engine.refreshes >= 4, 30, "four refreshes")
    # Even a direct request (a rotation, a deleted log) leaves it.
    assert not engine.core.tmux.rearm(pane, config_mod.load().log_path("OURS"))
    tmux.send_text(pane, "SAY theirs now", "OURS")
    pump(engine, lambda: b"theirs now" in mine.read_bytes(), 15, "their pipe writes")
    listed: CliResult = cli("ls", "--json")
    (view,) = json.loads(listed.out)
    assert USER_PIPE in view["reason"]
    assert pane_says(tmux, pane, f"#{{pane_pipe}}:#{{{PIPE_OPTION}}}") == "1:"


def test_cbos_re_arms_its_own_pipe_and_claims_an_unmarked_one(
        cli: Any, fake_claude: Path, tmux: Tmux, tmp_path: Path) -> None:
    session = start(cli, tmux, tmp_path, "MINE")
    pane, log = session.pane.pane_id, config_mod.load().log_path("MINE")
    assert tmux.rearm(pane, log), "its own pipe is cbos's to re-arm"
    assert pane_says(tmux, pane, f"#{{pane_pipe}}:#{{{PIPE_OPTION}}}") == "1:1"
    # A pipe an older cbos armed carries no mark: its tee into the session's log says
    # whose it is, and the next look claims it.
    tmux.cmd("set-option", "-p", "-u", "-t", pane, PIPE_OPTION)
    wait_until(lambda: json.loads(cli("ls", "--json").out), message="listed")
    assert pane_says(tmux, pane, f"#{{{PIPE_OPTION}}}") == "1"
    (view,) = json.loads(cli("ls", "--json").out)
    assert USER_PIPE not in view["reason"]
