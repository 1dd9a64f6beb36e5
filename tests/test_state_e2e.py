"""Session state end to end: fake claude in real tmux, hooks through --settings, the CLI.

Each test drives one of the transitions the recordings show hooks alone get wrong.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cbos import config as config_mod
from cbos.events import read_recent
from cbos.tmux import Tmux
from tests.support import Cli, wait_until


@pytest.fixture(autouse=True)
def quick_fake(quiet_fake: Path) -> Path:
    """Every test here: prompts reported, fast dialogs, no idle notification."""
    return quiet_fake


def views(cli: Cli) -> dict[str, dict[str, Any]]:
    result = cli("ls", "--json")
    assert result.code == 0, result.err
    return {v["slug"]: v for v in json.loads(result.out)}


def state_of(cli: Cli, slug: str) -> dict[str, Any]:
    return views(cli)[slug]


def wait_state(cli: Cli, slug: str, state: str, timeout: float = 15.0,
               reason: str = "") -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        view = state_of(cli, slug)
        return view if view["state"] == state and reason in view["reason"] else None
    return wait_until(check, timeout=timeout, message=f"{slug} reaches {state} ({reason})")


def start(cli: Cli, tmp_path: Path, slug: str, *claude_args: str) -> Path:
    project = tmp_path / slug.lower()
    project.mkdir(exist_ok=True)
    args = ["new", str(project), "--slug", slug]
    if claude_args:
        args += ["--", *claude_args]
    result = cli(*args)
    assert result.code == 0, result.err
    wait_state(cli, slug, "idle", reason="no turn yet")
    # Keys typed before claude puts its terminal in raw mode can be flushed: wait for the
    # composer, as a person would.
    wait_until(lambda: "❯\u00a0" in screen_of(slug), message=f"{slug} composer")
    return project


def screen_of(slug: str) -> str:
    return subprocess.run(["tmux", "-L", config_mod.load().tmux_socket or "", "capture-pane",
                           "-p", "-t", f"={slug}:"], capture_output=True, text=True,
                          check=True).stdout


def test_turn_thinking_then_waiting_with_the_reply(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path) -> None:
    start(cli, tmp_path, "TURN")
    assert cli("send", "TURN", "WAIT 3").code == 0
    # Claude's status file may say "busy" a moment before the UserPromptSubmit hook lands.
    thinking = wait_state(cli, "TURN", "thinking", reason="WAIT 3")
    waiting = wait_state(cli, "TURN", "waiting", reason="done")
    assert waiting["since"] >= thinking["since"]
    assert waiting["claude_session_id"]


def test_permission_at_once_then_granted(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path) -> None:
    project = start(cli, tmp_path, "PERM")
    target = project / "made.txt"
    assert cli("send", "PERM", f"WRITE {target}").code == 0
    # PermissionRequest comes ~0.1 s after PreToolUse; the Notification only ~6 s later.
    wait_state(cli, "PERM", "permission", timeout=5)
    # The hook can land a moment before the dialog is drawn: wait for it on screen.
    view = wait_until(lambda: (v := state_of(cli, "PERM"))["dialog"] and v, timeout=5,
                      message="the dialog read off the screen")
    assert view["state"] == "permission"
    assert "Write" in view["reason"] and "made.txt" in view["reason"]
    dialog = view["dialog"]
    assert "made.txt" in dialog["question"]
    assert [o["number"] for o in dialog["options"]] == [1, 2, 3]

    refused = cli("send", "PERM", "this would answer the dialog")
    assert refused.code == 1 and "cbos answer PERM" in refused.err

    answered = cli("answer", "PERM", "yes")
    assert answered.code == 0, answered.err
    wait_until(target.exists, message="the write happened")
    wait_state(cli, "PERM", "waiting", reason="done")


def test_denied_permission_goes_back_to_waiting_without_any_hook(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path) -> None:
    project = start(cli, tmp_path, "DENY")
    assert cli("send", "DENY", f"WRITE {project / 'no.txt'}").code == 0
    wait_state(cli, "DENY", "permission")
    events_before = len(read_recent(config_mod.load()))
    assert cli("answer", "DENY", "no").code == 0
    view = wait_state(cli, "DENY", "waiting", reason="denied")
    assert "Write" in view["reason"]
    # As recorded: a deny fires no hook at all; the status file alone said so.
    assert len(read_recent(config_mod.load())) == events_before
    assert not (project / "no.txt").exists()


def test_escape_mid_turn_is_not_stuck_thinking(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path) -> None:
    start(cli, tmp_path, "ESC")
    assert cli("send", "ESC", "SLOW 20").code == 0
    wait_state(cli, "ESC", "thinking")
    tmux.cmd("send-keys", "-t", state_of(cli, "ESC")["pane_id"], "Escape")
    wait_state(cli, "ESC", "waiting", reason="interrupted")


def test_tool_running_shows_command_and_pid(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path) -> None:
    start(cli, tmp_path, "TOOL")
    assert cli("send", "TOOL", "RUN sleep 30").code == 0
    view = wait_state(cli, "TOOL", "working", reason="pid")
    assert "sleep 30" in view["reason"]
    assert cli("interrupt", "TOOL").code == 0
    wait_state(cli, "TOOL", "waiting", reason="interrupted")


def test_auto_mode_dialog_without_permission_request(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path) -> None:
    project = start(cli, tmp_path, "AUTO", "--permission-mode", "auto")
    assert cli("send", "AUTO", f"WRITE {project / 'a.txt'}").code == 0
    view = wait_state(cli, "AUTO", "permission", timeout=8)
    names = [e.name for e in read_recent(config_mod.load())]
    assert "PermissionRequest" not in names
    assert view["dialog"] is not None
    assert cli("answer", "AUTO", "1").code == 0
    wait_state(cli, "AUTO", "waiting")


def test_background_task_then_task_notification_turn(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path) -> None:
    start(cli, tmp_path, "BG")
    assert cli("send", "BG", "BG sleep 2").code == 0
    view = wait_state(cli, "BG", "waiting", reason="background")
    assert "shell" in view["reason"]
    # The completion re-enters as a <task-notification> turn, which then ends again.
    after = wait_until(lambda: (v := state_of(cli, "BG"))["state"] == "waiting"
                       and "background" not in v["reason"] and v, timeout=20,
                       message="the task-notification turn ended too")
    assert after["reason"].startswith("done")


def test_clear_follows_the_new_claude_session_id(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path) -> None:
    start(cli, tmp_path, "CLR")
    assert cli("send", "CLR", "SAY one").code == 0
    first = wait_state(cli, "CLR", "waiting")["claude_session_id"]
    assert cli("send", "CLR", "/clear").code == 0
    second = wait_until(lambda: (state_of(cli, "CLR")["claude_session_id"] != first
                                 and state_of(cli, "CLR")["claude_session_id"]),
                        message="a new Claude session id after /clear")
    assert second and second != first
    assert state_of(cli, "CLR")["state"] == "idle"


def test_exit_shows_exited(cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path) -> None:
    start(cli, tmp_path, "BYE")
    assert cli("send", "BYE", "EXIT 4").code == 0
    view = wait_state(cli, "BYE", "exited")
    assert view["reason"].startswith("claude exited")
    assert view["pid"] is None


def test_hand_started_claude_with_global_hooks_is_tracked(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path) -> None:
    installed = cli("hooks", "install")
    assert installed.code == 0, installed.err
    assert cli("hooks", "status").code == 0
    project = tmp_path / "byhand"
    project.mkdir()
    tmux.cmd("new-session", "-d", "-s", "byhand", "-c", str(project), str(fake_claude))
    wait_until(lambda: "byhand" in views(cli), message="adopted")
    pane = views(cli)["byhand"]["pane_id"]
    wait_until(lambda: "❯" in tmux.capture(pane, colours=False), message="composer")
    assert cli("send", "byhand", "WAIT 2").code == 0
    wait_state(cli, "byhand", "thinking")
    wait_state(cli, "byhand", "waiting", reason="done")
    assert cli("hooks", "uninstall").code == 0
    assert cli("hooks", "status").code == 1


def test_wait_returns_when_reached_and_fails_on_timeout(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path) -> None:
    start(cli, tmp_path, "WAITER")
    timed_out = cli("wait", "WAITER", "--state", "working", "--timeout", "0.5")
    assert timed_out.code == 1 and "did not reach working" in timed_out.err
    assert cli("send", "WAITER", "WAIT 1").code == 0
    reached = cli("wait", "WAITER", "--state", "waiting", "--timeout", "20")
    assert reached.code == 0, reached.err
    assert reached.out.startswith("WAITER waiting")
    bad = cli("wait", "WAITER", "--state", "sleepy")
    assert bad.code == 2 and "unknown state" in bad.err


def test_cbos_started_mid_turn_knows_at_once(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path) -> None:
    """A fresh process (no cbos was running) gets the state right from the files."""
    start(cli, tmp_path, "MID")
    assert cli("send", "MID", "RUN sleep 20").code == 0
    # Settled first (the tool's process seen), so the fresh process has the same facts.
    wait_state(cli, "MID", "working", reason="(pid ")
    proc = subprocess.run([sys.executable, "-m", "cbos", "ls", "--json"],
                          capture_output=True, text=True, check=True)
    fresh = {v["slug"]: v for v in json.loads(proc.stdout)}["MID"]
    assert fresh["state"] == "working" and "sleep 20" in fresh["reason"], fresh


def test_answer_without_a_dialog_is_refused(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path) -> None:
    start(cli, tmp_path, "NODLG")
    result = cli("answer", "NODLG", "1")
    assert result.code == 1 and "no dialog" in result.err
