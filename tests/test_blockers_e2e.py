"""The blockers end to end: the fake claude draws each recorded blocking screen in real
tmux; cbos (the CLI, and the engine that serves the TUI and WebSocket) shows it as the
state a person must see, refuses to type into it, and answers it."""

from __future__ import annotations

import json
import select
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cbos.config import Config
from cbos.core import Core
from cbos.engine import Engine
from cbos.tmux import Tmux
from tests.support import Cli, prompts, wait_until
from tests.test_state_e2e import screen_of, state_of, wait_state

TRUST_QUESTION = "Quick safety check: Is this a project you created or one you trust?"


@pytest.fixture(autouse=True)
def quick_fake(quiet_fake: Path) -> Path:
    return quiet_fake


def project(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name.lower()
    folder.mkdir()
    return folder


def untrusted(folder: Path) -> None:
    """~/.claude.json as Claude keeps it for a folder it was never told to trust."""
    path = Path.home() / ".claude.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data.setdefault("projects", {})[str(folder)] = {"hasTrustDialogAccepted": False}
    path.write_text(json.dumps(data))


def new(cli: Cli, folder: Path, slug: str, *claude_args: str) -> None:
    args = ["new", str(folder), "--slug", slug]
    result = cli(*args, *(["--", *claude_args] if claude_args else []))
    assert result.code == 0, result.err


def test_workspace_trust_is_asked_refused_to_send_and_answered(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path) -> None:
    folder = project(tmp_path, "TRUST")
    untrusted(folder)
    new(cli, folder, "TRUST")
    view = wait_state(cli, "TRUST", "permission", reason="dialog: Quick safety check")
    assert view["dialog"]["question"] == TRUST_QUESTION
    assert [o["label"] for o in view["dialog"]["options"]] == ["No, exit",
                                                               "Yes, I trust this folder"]
    assert view["dialog"]["selected"] == 1
    # The status line without an engine reads the screen too: the dialog is counted.
    assert cli("status").out.strip() == "⚠ 1"
    refused = cli("send", "TRUST", "hello")
    assert refused.code != 0 and "dialog" in refused.err and "cbos answer" in refused.err
    answered = cli("answer", "TRUST", "2")
    assert answered.code == 0, answered.err
    assert TRUST_QUESTION in answered.out
    # Claude goes on: SessionStart, the composer; cbos follows it.
    wait_state(cli, "TRUST", "idle", reason="no turn yet")
    saved = json.loads((Path.home() / ".claude.json").read_text())
    assert saved["projects"][str(folder)]["hasTrustDialogAccepted"] is True
    assert "hello" not in screen_of("TRUST")


def test_a_send_right_after_the_startup_dialogs_waits_for_the_prompt_box(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path, quiet_fake: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Claude 2.1.332 spends seconds after its startup dialogs with no prompt box, and what
    is typed then is lost; `cbos new … && cbos send …` must still deliver the prompt."""
    import os

    monkeypatch.setenv("CBOS_CLAUDE_ENV_VARS",
                       os.environ["CBOS_CLAUDE_ENV_VARS"] + " FAKE_CLAUDE_STARTUP_S=2")
    folder = project(tmp_path, "EARLY")
    untrusted(folder)
    new(cli, folder, "EARLY")
    wait_state(cli, "EARLY", "permission", reason="dialog: Quick safety check")
    assert cli("answer", "EARLY", "yes").code == 0
    wait_until(lambda: "Quick safety check" not in screen_of("EARLY"), message="answered")
    sent = cli("send", "EARLY", "SAY typed at once")
    assert sent.code == 0, sent.err
    wait_until(lambda: "SAY typed at once" in prompts(quiet_fake), timeout=20,
               message="the prompt arrived")
    wait_state(cli, "EARLY", "waiting")


def test_project_mcp_servers_dialog_answered_with_yes(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path) -> None:
    folder = project(tmp_path, "MCP")
    (folder / ".mcp.json").write_text(json.dumps({"mcpServers": {"demo": {"command": "x"}}}))
    new(cli, folder, "MCP")
    view = wait_state(cli, "MCP", "permission", reason="New MCP server found")
    assert view["dialog"]["selected"] == 3
    assert cli("answer", "MCP", "yes").code == 0  # "Use this MCP server": Up, Up, Enter
    wait_state(cli, "MCP", "idle", reason="no turn yet")
    saved = json.loads((Path.home() / ".claude.json").read_text())
    assert saved["projects"][str(folder)]["enabledMcpjsonServers"] == ["demo"]


def test_plan_approval_with_its_footer_below_the_screen(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path) -> None:
    folder = project(tmp_path, "PLAN")
    new(cli, folder, "PLAN", "--permission-mode", "plan")
    wait_state(cli, "PLAN", "idle", reason="no turn yet")
    wait_until(lambda: "❯\u00a0" in screen_of("PLAN"), message="composer")
    assert cli("send", "PLAN", "PLAN fix the bug").code == 0
    view = wait_state(cli, "PLAN", "permission", reason="approve the plan")
    assert "Esc to cancel" not in screen_of("PLAN")  # the footer is out of view
    dialog = wait_until(lambda: state_of(cli, "PLAN")["dialog"], message="dialog read")
    assert dialog["question"] == "Exit plan mode?" and dialog["cut"] is True
    assert [o["number"] for o in dialog["options"]] == [1, 2]
    assert view["state"] == "permission"
    assert cli("answer", "PLAN", "no").code == 0
    wait_state(cli, "PLAN", "waiting", reason="permission denied")
    wait_until(lambda: "Rejected Claude's plan" in screen_of("PLAN"), message="rejected")


def test_an_api_error_waits_with_its_cause(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path) -> None:
    folder = project(tmp_path, "LIMIT")
    new(cli, folder, "LIMIT")
    wait_state(cli, "LIMIT", "idle", reason="no turn yet")
    wait_until(lambda: "❯\u00a0" in screen_of("LIMIT"), message="composer")
    assert cli("send", "LIMIT", "FAIL 429").code == 0
    view = wait_state(cli, "LIMIT", "waiting", reason="API error 429: rate limited")
    assert "Request rejected (429)" in view["reason"]


def test_not_logged_in_waits_for_its_person(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path, config: Config) -> None:
    folder = project(tmp_path, "NOLOGIN")
    Core(config).load().create(folder, "NOLOGIN", env={"FAKE_CLAUDE_LOGGED_OUT": "1"})
    view = wait_state(cli, "NOLOGIN", "waiting", reason="not logged in: run /login")
    assert "no turn yet" not in view["reason"]
    assert cli("status").out.strip() == "● 1"  # waiting for its person, not idle
    wait_until(lambda: "❯\u00a0" in screen_of("NOLOGIN"), message="composer")
    assert cli("send", "NOLOGIN", "SAY hi").code == 0
    wait_state(cli, "NOLOGIN", "waiting", reason="credentials expired or invalid")


@pytest.fixture
def engine(fake_claude: Path, tmux: Tmux, config: Config) -> Iterator[Engine]:
    engine = Engine(config, tmux, notify=False)
    engine.start()
    yield engine
    engine.close()


def pump(engine: Engine, until: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Run the engine's loop (select on its fds, tick) until ``until()`` holds."""
    import select

    deadline = time.monotonic() + timeout
    last_tick = 0.0
    while time.monotonic() < deadline:
        ready, _, _ = select.select(engine.fds(), [], [], 0.05)
        for fd in ready:
            engine.on_readable(fd)
        if time.monotonic() - last_tick >= 0.5:
            engine.tick()
            last_tick = time.monotonic()
        value = until()
        if value:
            return value
    raise AssertionError(f"timed out after {timeout}s")


def test_engine_shows_a_startup_dialog_from_the_screen_alone(
        engine: Engine, tmp_path: Path) -> None:
    """No hook, no status file: the pane's output moving makes the engine read its
    screen (the TUI and `cbos serve` run on this)."""
    folder = project(tmp_path, "EYE")
    untrusted(folder)
    engine.create(str(folder), "EYE")

    def asking() -> Any:
        view = engine.view("EYE")
        return view if view is not None and view.state.value == "permission" \
            and view.dialog is not None else None

    view = pump(engine, asking)
    assert view.dialog.question == TRUST_QUESTION
    outcomes: list[Any] = []
    engine.send("EYE", "hello", outcomes.append)
    pump(engine, lambda: outcomes)
    assert not outcomes[0].ok and "dialog" in outcomes[0].error
    engine.answer("EYE", "2", outcomes.append)
    pump(engine, lambda: len(outcomes) == 2)
    assert outcomes[1].ok, outcomes[1].error
    pump(engine, lambda: (v := engine.view("EYE")) is not None and v.state.value == "idle"
         and "no turn yet" in v.reason)
    assert engine.captures >= 2


def test_engine_says_when_claude_retries_the_api_and_when_it_is_back(
        engine: Engine, tmp_path: Path) -> None:
    """No hook fires while claude retries an API it cannot reach: the spinner row is the
    only sign, read off the screen because the output says "retrying"."""
    folder = project(tmp_path, "NET")
    engine.create(str(folder), "NET")
    pump(engine, lambda: (v := engine.view("NET")) is not None and v.state.value == "idle")
    outcomes: list[Any] = []
    engine.send("NET", "OFFLINE 3", outcomes.append)
    pump(engine, lambda: outcomes)
    assert outcomes[0].ok, outcomes[0].error
    view = pump(engine, lambda: (v := engine.view("NET")) is not None
                and "retrying: Can't reach the API server" in v.reason and v)
    assert view.state.value == "thinking" and "(attempt " in view.reason
    assert 'thinking about "OFFLINE 3"' in view.reason
    # Back online: the notice goes with the retry row; then the turn ends as usual.
    done = pump(engine, lambda: (v := engine.view("NET")) is not None
                and "retrying" not in v.reason and v, timeout=30)
    assert done.state.value in ("thinking", "waiting")
    pump(engine, lambda: (v := engine.view("NET")) is not None and v.state.value == "waiting"
         and "back online" in v.reason)


@pytest.mark.parametrize("hold", [False, True], ids=["serve", "tui"])
def test_a_dialog_on_screen_before_the_engine_starts_is_read_at_its_start(
        fake_claude: Path, tmux: Tmux, tmp_path: Path, config: Config, hold: bool) -> None:
    """The start's first look at the screens: `cbos serve` at once, the TUI right after
    its first frame (release)."""
    folder = project(tmp_path, "EARLY")
    untrusted(folder)
    Core(config).create(folder, "EARLY")
    wait_until(lambda: TRUST_QUESTION.split()[0] in screen_of("EARLY"), timeout=20,
               message="the trust dialog on screen")
    engine = Engine(config, tmux, notify=False)
    try:
        engine.start(hold=hold)
        if hold:
            engine.release()

        def asking() -> Any:
            view = engine.view("EARLY")
            return view if view is not None and view.dialog is not None else None

        # No tick: the engine's later refreshes would read the screen too.
        deadline = time.monotonic() + 20
        while not asking() and time.monotonic() < deadline:
            ready, _, _ = select.select(engine.fds(), [], [], 0.05)
            for fd in ready:
                engine.on_readable(fd)
        assert asking() and asking().dialog.question == TRUST_QUESTION
    finally:
        engine.close()

