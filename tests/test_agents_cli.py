"""Groups, system prompts, past conversations and credentials from the command line."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from cbos import auth, transcript
from tests.support import Cli, wait_until


@pytest.fixture(autouse=True)
def prompt_log(quiet_fake: Path) -> Path:
    return quiet_fake


def slugs(cli: Cli, *args: str) -> list[str]:
    result = cli("ls", "--json", *args)
    assert result.code == 0, result.err
    return sorted(v["slug"] for v in json.loads(result.out))


def test_groups_and_system_prompt_file(cli: Cli, fake_claude: Path, tmux: object,
                                       tmp_path: Path) -> None:
    prompt = tmp_path / "role.txt"
    prompt.write_text("You are the tester.\n")
    for slug, extra in (("A", ["--group", "crew", "--append-system-prompt-file",
                               str(prompt)]),
                        ("B", ["--group", "crew", "--append-system-prompt", "Be terse."]),
                        ("C", [])):
        (tmp_path / slug).mkdir()
        result = cli("new", str(tmp_path / slug), "--slug", slug, *extra)
        assert result.code == 0, result.err
    assert slugs(cli, "--group", "crew") == ["A", "B"]
    groups = {v["slug"]: v["group"] for v in json.loads(cli("ls", "--json").out)}
    assert groups == {"A": "crew", "B": "crew", "C": None}
    assert slugs(cli, "--group", "nobody") == []
    pid = wait_until(lambda: {v["slug"]: v["pid"] for v in
                              json.loads(cli("ls", "--json").out)}.get("A"))
    argv = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
    assert argv[argv.index("--append-system-prompt") + 1] == "You are the tester.\n"
    result = cli("kill", "--group", "crew")
    assert result.code == 0, result.err
    assert "A: killed" in result.out and "B: killed" in result.out
    assert slugs(cli) == ["C"]
    assert cli("kill", "--group", "crew").code == 1
    bad = cli("new", str(tmp_path), "--group", "no good")
    assert bad.code == 2 and "invalid group 'no good'" in bad.err


def test_conversations_lists_and_new_resume_checks_the_id(
        cli: Cli, fake_claude: Path, tmux: object, tmp_path: Path) -> None:
    where = tmp_path / "proj"
    where.mkdir()
    assert cli("conversations", str(where)).code == 0
    assert cli("new", str(where), "--slug", "ONE").code == 0
    result = cli("chat", "ONE", "--timeout", "30", "SAY remember me")
    assert result.code == 0, result.err
    found = json.loads(cli("conversations", str(where), "--json").out)
    assert len(found) == 1
    entry = found[0]
    assert entry["first_prompt"] == "SAY remember me" and entry["messages"] == 2
    assert entry["started"] <= entry["last_activity"]
    table = cli("conversations", str(where)).out
    assert entry["id"] in table and "SAY remember me" in table
    cli("kill", "ONE")

    missing = cli("new", str(where), "--resume", "0000-nope")
    assert missing.code == 2 and "no conversation 0000-nope stored for" in missing.err
    assert cli("new", str(where), "--slug", "TWO", "--resume", entry["id"]).code == 0
    history = wait_until(lambda: cli("history", "TWO").out, timeout=20)
    assert "remember me" in history


def test_conversation_summary_of_a_transcript(tmp_path: Path) -> None:
    path = tmp_path / "abc.jsonl"
    lines = [
        {"type": "user", "timestamp": "2026-01-01T10:00:00Z",
         "message": {"role": "user", "content": "first question\nmore"}},
        {"type": "assistant", "timestamp": "2026-01-01T10:00:05Z",
         "message": {"id": "m", "role": "assistant",
                     "content": [{"type": "text", "text": "answer"}]}},
        {"type": "summary", "summary": "x"},
    ]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    found = transcript.conversation(path)
    assert found is not None
    assert (found.session_id, found.first_prompt, found.messages) == ("abc", "first question",
                                                                      2)
    assert (found.started, found.last_activity) == ("2026-01-01T10:00:00Z",
                                                    "2026-01-01T10:00:05Z")


def test_auth_names_the_credential_and_never_prints_a_secret(
        cli: Cli, private_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN",
                 "CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX",
                 "CLAUDE_CODE_USE_FOUNDRY"):
        monkeypatch.delenv(name, raising=False)
    result = cli("auth")
    assert result.code == 1 and "no credential found" in result.out

    creds = private_home / ".claude" / ".credentials.json"
    creds.parent.mkdir()
    soon = time.time() + 3 * 3600
    creds.write_text(json.dumps({"claudeAiOauth": {
        "accessToken": "sk-ant-oat-SECRET", "expiresAt": int(soon * 1000),
        "subscriptionType": "max"}}))
    before = creds.read_bytes()
    result = cli("auth")
    assert result.code == 0
    assert "Claude login in" in result.out and "subscription: max" in result.out
    assert "expires in" in result.out and "SECRET" not in result.out
    assert "expires in" in cli("ls").err  # the warning where people look
    data = json.loads(cli("auth", "--json").out)
    assert data["kind"] == "login" and abs(data["expires_at"] - soon) < 1
    assert "SECRET" not in json.dumps(data)
    assert creds.read_bytes() == before  # never written

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-api-SECRET")
    result = cli("auth")
    assert result.code == 0 and "ANTHROPIC_API_KEY in the environment" in result.out
    assert "SECRET" not in result.out


def test_expiry_warning_rules() -> None:
    now = 1_000_000.0
    login = auth.Credential("login", "x", now + 3600)
    assert "expires in 1.0 h" in (auth.expiry_warning(login, now) or "")
    assert "expired" in (auth.expiry_warning(auth.Credential("login", "x", now - 1), now) or "")
    assert auth.expiry_warning(auth.Credential("login", "x", now + 3 * 86400), now) is None
    renewable = auth.Credential("login", "x", now + 60, renewable=True)
    assert auth.expiry_warning(renewable, now) is None


def test_resume_keeps_the_group_and_the_system_prompt(
        cli: Cli, fake_claude: Path, tmux: object, tmp_path: Path) -> None:
    (tmp_path / "r").mkdir()
    assert cli("new", str(tmp_path / "r"), "--slug", "R", "--group", "g",
               "--append-system-prompt", "Be exact.").code == 0
    wait_until(lambda: slugs(cli, "--group", "g") == ["R"])
    wait_until(lambda: {v["slug"]: v["claude_session_id"] for v in
                        json.loads(cli("ls", "--json").out)}.get("R"),
               message="R's conversation id known")
    assert cli("kill", "R").code == 0
    result = cli("resume", "R")
    assert result.code == 0, result.err
    assert slugs(cli, "--group", "g") == ["R"]
    pid = wait_until(lambda: {v["slug"]: v["pid"] for v in
                              json.loads(cli("ls", "--json").out)}.get("R"))
    argv = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
    assert argv[argv.index("--append-system-prompt") + 1] == "Be exact."
