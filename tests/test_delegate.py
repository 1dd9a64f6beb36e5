"""cbos delegate / continue: presets reaching claude, limits held, dialogs denied."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cbos import api, delegation, sessions
from cbos import config as config_mod
from cbos.errors import RefusedError, UsageError
from cbos.tmux import Tmux
from tests.support import Cli, wait_until


@pytest.fixture(autouse=True)
def prompt_log(quiet_fake: Path) -> Path:
    return quiet_fake


def project(tmp_path: Path, name: str = "proj") -> Path:
    path = tmp_path / name
    path.mkdir(exist_ok=True)
    return path


def delegate(cli: Cli, *args: str) -> tuple[int, dict[str, Any]]:
    result = cli("delegate", "--json", *args)
    assert result.out, result.err
    return result.code, json.loads(result.out)


def cmdline(tmux: Tmux, slug: str) -> list[str]:
    session = sessions.find(tmux, config_mod.load(), slug)
    assert session.claude is not None
    return Path(f"/proc/{session.claude.pid}/cmdline").read_text().split("\0")


def view(cli: Cli, slug: str) -> dict[str, Any]:
    views = {v["slug"]: v for v in json.loads(cli("ls", "--json").out)}
    return views[slug]


# -- pure parts --------------------------------------------------------------------------------


def test_presets_never_bypass_and_rank_for_the_ceiling() -> None:
    for name, preset in delegation.PRESETS.items():
        args = preset.args()
        assert "bypassPermissions" not in args and "--dangerously-skip-permissions" not in args
        assert args[:2] == ["--permission-mode", preset.mode], name
    assert delegation.PRESET_NAMES == ("read-only", "plan", "review", "edit", "full")
    assert "Bash" in delegation.PRESETS["read-only"].disallowed
    assert "Bash" in delegation.PRESETS["full"].allowed
    assert delegation.check_ceiling("review", "edit").name == "review"
    with pytest.raises(RefusedError, match="ceiling 'edit'; use one of read-only, plan"):
        delegation.check_ceiling("full", "edit")
    with pytest.raises(UsageError, match="unknown preset 'yolo'"):
        delegation.preset("yolo")


def test_breach_rules() -> None:
    limits = delegation.Limits(max_cost=0.5, max_turns=3)
    assert delegation.breach(limits, 0.1, 3, "claude-opus-5-5") is None
    status, why = delegation.breach(limits, 0.5, 0, "m") or ("", "")
    assert status == "over_budget" and "$0.5000 reached the limit of $0.5" in why
    assert (delegation.breach(limits, 0.1, 4, "m") or ("",))[0] == "max_turns"
    unknown = delegation.breach(limits, None, 0, "mystery-1")
    assert unknown is not None and "mystery-1 has no price" in unknown[1]
    assert delegation.breach(delegation.Limits(), None, 99, "mystery-1") is None
    with pytest.raises(UsageError):
        delegation.Limits(max_cost=0)
    with pytest.raises(UsageError):
        delegation.Limits(on_permission="yes")


def test_tally_counts_tool_using_messages_once_as_the_file_grows(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"

    def line(message_id: str, *blocks: dict[str, Any]) -> str:
        return json.dumps({"type": "assistant", "message": {
            "id": message_id, "model": "claude-opus-5-5", "content": list(blocks),
            "usage": {"input_tokens": 10, "output_tokens": 10}}}) + "\n"

    tool = {"type": "tool_use", "id": "t", "name": "Bash", "input": {}}
    path.write_text(line("a", {"type": "text", "text": "one"}) + line("a", tool))
    tally = delegation.Tally(path=path)
    tally.update()
    assert (tally.turns, tally.text) == (1, "one")
    half = line("b", tool)
    with path.open("a") as f:
        f.write(half[:20])
    tally.update()
    assert tally.turns == 1  # a line still being written waits for its newline
    with path.open("a") as f:
        f.write(half[20:] + line("c", {"type": "text", "text": "final"}))
    tally.update()
    assert (tally.turns, tally.text) == (2, "final")
    cost, model = tally.cost()
    assert cost is not None and cost > 0 and model == "claude-opus-5-5"


# -- with the fake claude ----------------------------------------------------------------------


def test_delegate_done_with_the_presets_arguments_reaching_claude(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path) -> None:
    code, data = delegate(cli, str(project(tmp_path)), "SAY", "all", "good", "--slug", "D1",
                          "--preset", "review", "--context", "You review code.",
                          "--model", "sonnet")
    assert code == 0, data
    assert data["status"] == "done" and data["reply"] == "all good"
    assert data["slug"] == "D1" and data["session_id"] and data["violations"] == []
    assert data["turns"] == 0 and data["cost_usd"] > 0 and data["duration_s"] > 0
    argv = cmdline(tmux, "D1")
    i = argv.index("--permission-mode")
    assert argv[i + 1] == "default"
    allowed = argv[argv.index("--allowedTools") + 1:argv.index("--disallowedTools")]
    assert allowed == list(delegation.PRESETS["review"].allowed)
    assert "Bash(git diff *)" in allowed
    assert argv[argv.index("--append-system-prompt") + 1] == "You review code."
    assert argv[argv.index("--model") + 1] == "sonnet"

    # A follow-up under the same limits; the human-readable form prints the reply.
    result = cli("continue", "D1", "SAY", "again")
    assert result.code == 0 and result.out == "again\n"
    assert "D1: done" in result.err


def test_max_turns_breach_interrupts_and_reports(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path) -> None:
    code, data = delegate(cli, str(project(tmp_path)), "STEPS 12", "--slug", "D2",
                          "--preset", "full", "--max-turns", "2")
    assert code == 1
    assert data["status"] == "max_turns" and data["turns"] == 3
    assert "over the limit of 2" in data["violations"][0]
    # Interrupted: the session stopped working well before its 12 steps, and stays.
    wait_until(lambda: view(cli, "D2")["state"] in ("waiting", "idle"),
               message="D2 interrupted")
    assert "done in 12 steps" not in tmux.capture(
        sessions.find(tmux, config_mod.load(), "D2").pane.pane_id, colours=False)

    # Cumulative: the conversation is already over its limit, so nothing is sent.
    code, again = (lambda r: (r.code, json.loads(r.out)))(cli("continue", "D2", "--json",
                                                             "SAY more"))
    assert code == 1 and again["status"] == "max_turns"


def test_cost_breach_interrupts(cli: Cli, fake_claude: Path, tmux: Tmux,
                                tmp_path: Path) -> None:
    code, data = delegate(cli, str(project(tmp_path)), "STEPS 12", "--slug", "D3",
                          "--preset", "full", "--max-cost", "0.002")
    assert code == 1 and data["status"] == "over_budget"
    assert data["cost_usd"] >= 0.002 and data["turns"] < 12
    assert "reached the limit of $0.002" in data["violations"][0]


def test_a_dialog_beyond_the_preset_is_answered_no(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path) -> None:
    where = project(tmp_path)
    code, data = delegate(cli, str(where), "WRITE notes.txt", "--slug", "D4",
                          "--preset", "read-only")
    assert code == 1 and data["status"] == "denied"
    assert "asks to use Write" in data["violations"][0]
    assert "answered no" in data["violations"][0]
    assert not (where / "notes.txt").exists()
    screen = tmux.capture(sessions.find(tmux, config_mod.load(), "D4").pane.pane_id,
                          colours=False)
    assert "Rejected write" in screen


def test_on_permission_wait_leaves_the_dialog_for_a_person(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path) -> None:
    code, data = delegate(cli, str(project(tmp_path)), "WRITE x.txt", "--slug", "D5",
                          "--preset", "review", "--on-permission", "wait")
    assert code == 1 and data["status"] == "needs_permission"
    assert view(cli, "D5")["state"] == "permission"


def test_timeout_interrupts(cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path) -> None:
    code, data = delegate(cli, str(project(tmp_path)), "WAIT 30", "--slug", "D6",
                          "--timeout", "2")
    assert code == 1 and data["status"] == "timeout"
    wait_until(lambda: view(cli, "D6")["state"] in ("waiting", "idle"),
               message="D6 interrupted")


def test_python_api_delegate_continue_and_groups(
        fake_claude: Path, tmux: Tmux, tmp_path: Path) -> None:
    cb = api.Cbos()
    result = cb.delegate(project(tmp_path), "SAY first", slug="P1", preset="read-only",
                         group="team", max_turns=5)
    assert result.ok and result.reply == "first"
    follow = result.session.continue_("SAY second")
    assert follow.status == "done" and follow.reply == "second"
    other = cb.new(project(tmp_path, "b"), "P2", group="team",
                   system_prompt="Be brief.")
    cb.new(project(tmp_path, "c"), "LONER")
    assert "--append-system-prompt" in cmdline(tmux, "P2")
    team = cb.group("team")
    assert sorted(team.slugs()) == ["P1", "P2"]
    status = team.status()
    assert set(status) == {"P1", "P2"} and status["P2"]["state"] in ("idle", "waiting")
    assert sorted(team.stop_all()) == ["P1", "P2"]
    assert [s.slug for s in cb.sessions()] == ["LONER"]
    assert other.slug == "P2"
    with pytest.raises(UsageError, match="was not started by `cbos delegate`"):
        cb.get("LONER").continue_("SAY x")


def test_plan_preset_returns_the_plan_and_declines_carrying_it_out(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path) -> None:
    code, data = delegate(cli, str(project(tmp_path)), "PLAN 1. Read the code",
                          "--slug", "PL", "--preset", "plan")
    assert code == 0 and data["status"] == "done", data
    assert data["reply"] == "1. Read the code"
    argv = cmdline(tmux, "PL")
    assert argv[argv.index("--permission-mode") + 1] == "plan"
    wait_until(lambda: view(cli, "PL")["state"] in ("waiting", "idle"),
               message="the plan dialog closed")
    screen = tmux.capture(sessions.find(tmux, config_mod.load(), "PL").pane.pane_id,
                          colours=False)
    assert "Rejected Claude's plan" in screen


def test_a_startup_dialog_is_reported_at_once_not_waited_out(
        tmux: Tmux, tmp_path: Path) -> None:
    """The recorded workspace-trust screen (no hook fires for it) in a real pane."""
    screen = (Path(__file__).parent / "fixtures" / "claude-code-2.1.328" / "blockers"
              / "trust" / "screen.txt")
    pane = tmux.new_session("TRUST", tmp_path, f"cat {screen}; exec sleep 600", {},
                            tmp_path / "trust.log", 2000)
    problems = api.wait_composer(tmux, {"TRUST": pane.pane_id}, 60)
    assert "a dialog waits before its prompt" in problems["TRUST"]
    assert "trust" in problems["TRUST"].lower()
    assert "cbos answer TRUST" in problems["TRUST"]


def test_review_takes_back_the_git_options_that_write_or_run() -> None:
    """Claude Code's rule syntax: ``*`` matches any characters, deny is checked before
    allow. Under those rules review's git commands read, and the writing options do not
    get through."""
    import fnmatch

    review = delegation.PRESETS["review"]

    def verdict(command: str) -> str:
        def matches(rules: tuple[str, ...]) -> bool:
            return any(rule.startswith("Bash(") and fnmatch.fnmatchcase(command, rule[5:-1])
                       for rule in rules)
        return "deny" if matches(review.disallowed) else (
            "allow" if matches(review.allowed) else "ask")

    assert verdict("git diff HEAD~1 -- src/") == "allow"
    assert verdict("git log --oneline -5") == "allow"
    assert verdict("git diff --output=/home/u/.bashrc") == "deny"
    assert verdict("git log -p --output /tmp/x") == "deny"
    assert verdict("git show HEAD --ext-diff") == "deny"
    assert verdict("rm -rf /") == "ask"
    assert "--output" in " ".join(review.args())


def test_the_records_file_keeps_the_newest_delegations(
        private_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(delegation, "MAX_RECORDS", 3)
    config = config_mod.load()
    for slug in ("A", "B", "C", "A", "D"):  # A again: it becomes the newest
        delegation.save_record(config, slug, delegation.Record(
            "edit", delegation.Limits(max_turns=len(slug)), f"/p/{slug}"))
    assert list(delegation.load_records(config)) == ["C", "A", "D"]
