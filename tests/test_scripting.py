"""The scripting commands end to end: chat, history, resume, fork, up, group sends, usage
in ls, and stalled sessions; fake claude in a private tmux server, hooks via --settings."""

from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from cbos import config as config_mod
from cbos import sessions
from cbos.panes import PaneSession
from cbos.tmux import Tmux
from tests.conftest import CliResult
from tests.support import Cli, received, wait_until


@pytest.fixture(autouse=True)
def prompt_log(quiet_fake: Path) -> Path:
    """Every test here: prompts reported, no idle notification muddling states."""
    return quiet_fake


def prompts_and_pids(path: Path) -> list[tuple[str, int]]:
    """(prompt, claude pid) of each prompt the fake received."""
    return [(entry["prompt"], entry["pid"]) for entry in received(path)]


def views(cli: Cli) -> dict[str, dict[str, Any]]:
    result = cli("ls", "--json")
    assert result.code == 0, result.err
    return {v["slug"]: v for v in json.loads(result.out)}


def screen(tmux: Tmux, slug: str) -> str:
    return tmux.capture(sessions.find(tmux, config_mod.load(), slug).pane.pane_id,
                        colours=False)


def ready(tmux: Tmux, slug: str) -> PaneSession:
    """The session once claude shows its composer (keys typed earlier can be lost)."""
    wait_until(lambda: "❯\u00a0" in screen(tmux, slug), message=f"{slug} composer")
    return sessions.find(tmux, config_mod.load(), slug)


def start(cli: Cli, tmux: Tmux, tmp_path: Path, slug: str, *claude_args: str,
          ) -> PaneSession:
    project = tmp_path / slug.lower()
    project.mkdir(exist_ok=True)
    args = ["new", str(project), "--slug", slug]
    if claude_args:
        args += ["--", *claude_args]
    result = cli(*args)
    assert result.code == 0, result.err
    return ready(tmux, slug)


def pid_of(session: PaneSession) -> int:
    assert session.claude is not None, f"no claude in {session.slug}"
    return session.claude.pid


def cmdline(session: PaneSession) -> list[str]:
    return Path(f"/proc/{pid_of(session)}/cmdline").read_text().split("\0")


def state(cli: Cli, slug: str, wanted: str, reason: str = "", timeout: float = 15,
          ) -> dict[str, Any]:
    def check() -> dict[str, Any]:
        view = views(cli).get(slug) or {}
        return view if view.get("state") == wanted and reason in view["reason"] else {}
    return wait_until(check, timeout=timeout, message=f"{slug} {wanted} ({reason})")


def one_line(err: str) -> bool:
    return err.count("\n") == 1 and err.startswith("cbos: ")


# -- chat --------------------------------------------------------------------------------------


def test_chat_prints_the_reply_and_json_figures(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path, prompt_log: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    start(cli, tmux, tmp_path, "CHAT")
    result = cli("chat", "CHAT", "SAY", "hello", "there")
    assert result == CliResult(0, "hello there\n", "")

    result = cli("chat", "CHAT", "--json", "RUN echo hi")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["reply"] == "done" and data["slug"] == "CHAT"
    assert 0 < data["duration_s"] < 30
    assert data["session_id"] == views(cli)["CHAT"]["claude_session_id"]
    assert Path(data["transcript_path"]).name == f"{data['session_id']}.jsonl"
    usage = data["usage"]
    # The turn had two API responses (the tool call, then the answer); earlier turns and
    # the tool result are not counted.
    assert usage["messages"] == 2 and usage["model"] == "claude-opus-5-5"
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert usage["cache_read_input_tokens"] == 6400
    expected = (usage["input_tokens"] * 4 + usage["output_tokens"] * 20
                + usage["cache_read_input_tokens"] * 0.2) / 1e6
    assert usage["cost_usd"] == pytest.approx(expected, abs=1e-6)

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"SAY from stdin\n")))
    assert cli("chat", "CHAT", "-") == CliResult(0, "from stdin\n", "")
    assert [p for p, _ in prompts_and_pids(prompt_log)] == ["SAY hello there", "RUN echo hi",
                                                   "SAY from stdin"]


def test_chat_right_after_new_waits_until_claude_reads_its_terminal(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path, prompt_log: Path) -> None:
    (tmp_path / "quick").mkdir()
    assert cli("new", str(tmp_path / "quick"), "--slug", "QUICK").code == 0
    result = cli("chat", "QUICK", "--timeout", "20", "SAY first thing")
    assert result == CliResult(0, "first thing\n", "")
    assert [p for p, _ in prompts_and_pids(prompt_log)] == ["SAY first thing"]


def test_chat_cost_is_null_for_an_unknown_model(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path) -> None:
    start(cli, tmux, tmp_path, "ODD", "--model", "mystery-1")
    data = json.loads(cli("chat", "ODD", "--json", "SAY x").out)
    assert data["usage"]["model"] == "mystery-1" and data["usage"]["cost_usd"] is None
    assert data["usage"]["output_tokens"] > 0


def test_chat_times_out_and_leaves_the_turn_running(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path) -> None:
    start(cli, tmux, tmp_path, "SLOWPOKE")
    began = time.monotonic()
    result = cli("chat", "SLOWPOKE", "--timeout", "1", "WAIT 30")
    assert result.code == 1 and result.out == ""
    assert "no reply within 1s" in result.err and "cbos interrupt SLOWPOKE" in result.err
    assert one_line(result.err)
    assert time.monotonic() - began < 10
    assert views(cli)["SLOWPOKE"]["state"] == "thinking"  # nothing was stopped


def test_chat_refuses_a_busy_session_and_takes_only_its_own_reply(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path, prompt_log: Path) -> None:
    start(cli, tmux, tmp_path, "BUSY")
    assert cli("send", "BUSY", "SLOW 1.5").code == 0
    state(cli, "BUSY", "thinking")
    result = cli("chat", "BUSY", "SAY too early")
    assert result.code == 1 and "BUSY is busy" in result.err
    assert "cbos wait BUSY" in result.err and one_line(result.err)
    assert cli("wait", "BUSY", "--state", "waiting", "--timeout", "15").code == 0
    assert cli("chat", "BUSY", "SAY after") == CliResult(0, "after\n", "")
    assert [p for p, _ in prompts_and_pids(prompt_log)] == ["SLOW 1.5", "SAY after"]


def test_chat_stops_at_a_permission_prompt(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path, prompt_log: Path) -> None:
    start(cli, tmux, tmp_path, "PERM")
    result = cli("chat", "PERM", "WRITE out.txt")
    assert result.code == 1 and result.out == ""
    assert "PERM asks to use Write" in result.err and "out.txt" in result.err
    assert "cbos answer PERM" in result.err and one_line(result.err)
    state(cli, "PERM", "permission")  # the dialog waits for a person
    again = cli("chat", "PERM", "SAY hello?")
    assert again.code == 1 and "asking for permission" in again.err
    assert [p for p, _ in prompts_and_pids(prompt_log)] == ["WRITE out.txt"]  # nothing typed in
    # A question is a permission a script cannot answer either.
    assert cli("answer", "PERM", "1").code == 0
    state(cli, "PERM", "waiting")
    asked = cli("chat", "PERM", "ASK Pick one?")
    assert asked.code == 1 and "PERM asks: Pick one?" in asked.err


def test_chat_reports_claude_exiting_and_api_errors(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path) -> None:
    start(cli, tmux, tmp_path, "FAILS")
    failed = cli("chat", "FAILS", "FAIL 500")
    assert failed.code == 1 and "the turn failed: API error server_error" in failed.err
    interrupted = cli("chat", "FAILS", "--timeout", "30", "WRITE denied.txt")
    assert interrupted.code == 1
    assert cli("answer", "FAILS", "no").code == 0  # denied: no hook fires at all
    state(cli, "FAILS", "waiting", "permission denied")
    exited = cli("chat", "FAILS", "EXIT 3")
    assert exited.code == 1 and "claude exited" in exited.err
    assert "cbos resume FAILS" in exited.err and one_line(exited.err)
    dead = cli("chat", "FAILS", "SAY anyone?")
    assert dead.code == 1 and "not running" in dead.err


def test_chat_sees_an_interrupt_that_fires_no_hook(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path) -> None:
    start(cli, tmux, tmp_path, "ESC")
    import threading

    outcome: list[CliResult] = []
    chat = threading.Thread(target=lambda: outcome.append(
        cli("chat", "ESC", "--timeout", "30", "RUN sleep 30")))
    chat.start()
    try:
        state(cli, "ESC", "working")
        tmux.cmd("send-keys", "-t", sessions.find(tmux, config_mod.load(), "ESC").pane.pane_id,
                 "Escape")
    finally:
        chat.join(40)
    assert outcome and outcome[0].code == 1
    assert "ended without a reply (interrupted (Esc))" in outcome[0].err


def test_chat_unknown_session_and_empty_text(cli: Cli, fake_claude: Path, tmux: Tmux,
                                            tmp_path: Path) -> None:
    start(cli, tmux, tmp_path, "REAL")
    assert cli("chat", "NOPE", "hi").code == 2
    result = cli("chat", "REAL", " ")
    assert result.code == 2 and "empty" in result.err
    assert cli("chat", "REAL", "bell\a").code == 2


# -- history -----------------------------------------------------------------------------------


def test_history_shows_prompts_and_replies_and_more_with_full(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path) -> None:
    start(cli, tmux, tmp_path, "HIST")
    assert cli("chat", "HIST", "SAY first words").code == 0
    assert cli("chat", "HIST", "RUN echo tool-output").code == 0
    assert cli("chat", "HIST", "SLOW 0.2").code == 0
    text = cli("history", "HIST")
    assert text.code == 0, text.err
    assert text.out.startswith("❯ SAY first words\n\n● first words\n\n❯ RUN echo tool-output")
    assert "tool-output\n\n● Running it.\n\n  done" in text.out
    assert "chunk 19" not in text.out and "more lines; --full shows all" in text.out
    full = cli("history", "HIST", "--full").out
    assert "→ Bash: echo tool-output" in full and "⎿ tool-output" in full
    assert "chunk 19 of slow reply." in full
    data = json.loads(cli("history", "HIST", "--json").out)
    assert data["session_id"] == views(cli)["HIST"]["claude_session_id"]
    assert [(m["role"], m["kind"]) for m in data["messages"]][:2] == [
        ("user", "prompt"), ("assistant", "text")]
    assert all(m["kind"] in ("prompt", "text") for m in data["messages"])
    assert data["messages"][0]["timestamp"]


def test_history_without_a_conversation_yet(cli: Cli, fake_claude: Path, tmux: Tmux,
                                           tmp_path: Path) -> None:
    start(cli, tmux, tmp_path, "FRESH")
    result = cli("history", "FRESH")
    assert result.code == 1 and "no transcript" in result.err and one_line(result.err)
    assert cli("history", "NOPE").code == 2


# -- resume ------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["kill-session", "kill-server"])
def test_resume_after_the_tmux_session_is_gone(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path, prompt_log: Path,
        how: str) -> None:
    first = start(cli, tmux, tmp_path, "BACK", "--model", "sonnet")
    assert cli("chat", "BACK", "SAY remember me").code == 0
    session_id = views(cli)["BACK"]["claude_session_id"]
    if how == "kill-session":
        assert cli("kill", "BACK").code == 0
    else:  # tmux itself went away (a reboot, `tmux kill-server`)
        tmux.cmd("kill-server")
    assert "BACK" not in views(cli)

    result = cli("resume", "BACK")
    assert result.code == 0, result.err
    assert result.out == f"resumed BACK in a new tmux session (conversation {session_id})\n"
    again = ready(tmux, "BACK")
    argv = cmdline(again)
    assert argv[argv.index("--resume") + 1] == session_id
    assert "--model" in argv and "sonnet" in argv  # started as the original was
    assert again.path == first.path and again.pane.owned
    assert "remember me" in screen(tmux, "BACK")  # claude shows the old conversation
    assert views(cli)["BACK"]["claude_session_id"] == session_id
    assert cli("chat", "BACK", "SAY and more") == CliResult(0, "and more\n", "")
    texts = [m["text"] for m in json.loads(cli("history", "BACK", "--json").out)["messages"]]
    assert texts == ["SAY remember me", "remember me", "SAY and more", "and more"]


def test_resume_after_claude_exited_respawns_the_pane_in_place(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path) -> None:
    first = start(cli, tmux, tmp_path, "PHOENIX")
    assert cli("chat", "PHOENIX", "SAY before exit").code == 0
    session_id = views(cli)["PHOENIX"]["claude_session_id"]
    assert cli("send", "PHOENIX", "/exit").code == 0
    state(cli, "PHOENIX", "exited")
    log = config_mod.load().log_path("PHOENIX")
    size = log.stat().st_size

    result = cli("resume", "PHOENIX")
    assert result.code == 0, result.err
    assert "resumed PHOENIX in its pane" in result.out
    again = ready(tmux, "PHOENIX")
    assert again.pane.pane_id == first.pane.pane_id and not again.pane.dead
    argv = cmdline(again)
    assert argv[argv.index("--resume") + 1] == session_id
    assert again.pane.piped
    wait_until(lambda: log.stat().st_size > size, message="the log goes on")
    assert cli("chat", "PHOENIX", "SAY after exit").code == 0
    assert "before exit" in cli("history", "PHOENIX").out


def test_resume_follows_clear_to_the_new_conversation(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path) -> None:
    start(cli, tmux, tmp_path, "CLR")
    assert cli("chat", "CLR", "SAY old talk").code == 0
    old = views(cli)["CLR"]["claude_session_id"]
    assert cli("send", "CLR", "/clear").code == 0
    new = wait_until(lambda: (views(cli)["CLR"]["claude_session_id"] or old) != old
                     and views(cli)["CLR"]["claude_session_id"], message="new id")
    remembered = json.loads(config_mod.load().sessions_file.read_text())
    assert remembered["sessions"]["CLR"]["session_id"] == new
    assert cli("chat", "CLR", "SAY new talk").code == 0
    assert cli("kill", "CLR").code == 0
    result = cli("resume", "CLR")
    assert result.code == 0 and new in result.out
    again = ready(tmux, "CLR")
    argv = cmdline(again)
    assert argv[argv.index("--resume") + 1] == new


def test_resume_refuses_a_running_claude_and_unknown_slugs(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path) -> None:
    start(cli, tmux, tmp_path, "ALIVE")
    result = cli("resume", "ALIVE")
    assert result.code == 1 and "ALIVE: claude is still running (pid" in result.err
    assert one_line(result.err)
    unknown = cli("resume", "GHOST")
    assert unknown.code == 2 and "knows no session named 'GHOST'" in unknown.err
    assert cli("resume", "bad slug").code == 2


def test_new_with_resume_continues_a_conversation(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path) -> None:
    start(cli, tmux, tmp_path, "ORIG")
    assert cli("chat", "ORIG", "SAY carried over").code == 0
    session_id = views(cli)["ORIG"]["claude_session_id"]
    assert cli("kill", "ORIG").code == 0
    project = tmp_path / "orig"
    result = cli("new", str(project), "--slug", "AGAIN", "--resume", session_id)
    assert result.code == 0, result.err
    again = ready(tmux, "AGAIN")
    argv = cmdline(again)
    assert argv[argv.index("--resume") + 1] == session_id
    assert "carried over" in cli("history", "AGAIN").out


# -- fork --------------------------------------------------------------------------------------


def test_fork_branches_the_conversation_into_a_new_session(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path) -> None:
    source = start(cli, tmux, tmp_path, "TRUNK")
    assert cli("chat", "TRUNK", "SAY shared past").code == 0
    trunk_id = views(cli)["TRUNK"]["claude_session_id"]
    result = cli("fork", "TRUNK", "BRANCH")
    assert result == CliResult(0, "BRANCH\n", "")
    branch = ready(tmux, "BRANCH")
    argv = cmdline(branch)
    assert argv[argv.index("--resume") + 1] == trunk_id and "--fork-session" in argv
    assert branch.path == source.path
    branch_id = wait_until(lambda: views(cli)["BRANCH"]["claude_session_id"],
                           message="the branch's id")
    assert branch_id != trunk_id
    assert cli("chat", "BRANCH", "SAY only on the branch").code == 0
    assert cli("chat", "TRUNK", "SAY only on the trunk").code == 0
    branch_history = cli("history", "BRANCH").out
    trunk_history = cli("history", "TRUNK").out
    assert "shared past" in branch_history and "only on the branch" in branch_history
    assert "only on the trunk" not in branch_history
    assert "only on the branch" not in trunk_history
    taken = cli("fork", "TRUNK", "BRANCH")
    assert taken.code == 2 and "is taken" in taken.err
    assert cli("fork", "NOPE", "X").code == 2


# -- up ----------------------------------------------------------------------------------------


def test_up_starts_sessions_sends_first_prompts_and_leaves_running_ones(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path, prompt_log: Path) -> None:
    running = start(cli, tmux, tmp_path, "RUNNING")
    (tmp_path / "work" / "b").mkdir(parents=True)
    (tmp_path / "work" / "c").mkdir()
    file = tmp_path / "work" / "team.toml"
    file.write_text(f"""
[defaults]
env = {{ TEAM = "yes" }}

[[session]]
slug = "RUNNING"
path = "{tmp_path / 'running'}"
prompt = "SAY must not arrive"

[[session]]
slug = "BEE"
path = "b"
prompt = "SAY from up"
args = ["--permission-mode", "acceptEdits"]
env = {{ UP_MARK = "bee" }}

[[session]]
slug = "SEE"
path = "c"
""")
    result = cli("up", str(file))
    assert result.code == 0, result.err
    assert result.out.splitlines() == ["RUNNING: already running, left alone", "SEE: started",
                                       "BEE: started, prompt sent"]
    bee = sessions.find(tmux, config_mod.load(), "BEE")
    wait_until(lambda: ("SAY from up", pid_of(bee)) in prompts_and_pids(prompt_log),
               message="first prompt arrived")
    assert all(pid != pid_of(running) for _, pid in prompts_and_pids(prompt_log))
    argv = cmdline(bee)
    assert argv[argv.index("--permission-mode") + 1] == "acceptEdits"
    environ = Path(f"/proc/{pid_of(bee)}/environ").read_bytes().split(b"\0")
    assert b"UP_MARK=bee" in environ and b"TEAM=yes" in environ
    see = ready(tmux, "SEE")
    assert Path(see.path) == (tmp_path / "work" / "c").resolve()
    again = cli("up", str(file))  # idempotent: everything is running now
    assert again.code == 0 and again.out.count("already running, left alone") == 3


class BadUp(NamedTuple):
    body: str
    expect: str


BAD_UP = [
    BadUp('[[session]]\nslug = "B"\npath = "p"\npromt = "typo"\n',
          "session 2 (B): unknown key 'promt'"),
    BadUp('[[session]]\nslug = "B"\n', "session 2 (B): path is required"),
    BadUp('[[session]]\nslug = "B"\npath = "missing"\n', "does not exist"),
    BadUp('[[session]]\nslug = "A"\npath = "p"\n', "session 2 (A): slug A is already used"),
    BadUp('[[session]]\nslug = "B"\npath = "p"\nargs = "--model x"\n',
          "args must be a list of strings"),
    BadUp('[[session]]\nslug = "B"\npath = "p"\nargs = ["--resume", "x"]\n',
          "args may not hold --resume"),
    BadUp('[[session]]\nslug = "B"\npath = "p"\nenv = { N = 1 }\n',
          "env N must be a string"),
    BadUp('[[session]]\nslug = "bad slug"\npath = "p"\n', "invalid slug 'bad slug'"),
    BadUp('[[session]]\nslug = "B"\npath = "p"\nprompt = "x\\u0007"\n',
          "prompt: the text has control character"),
    BadUp('[[session]\nslug = "B"\n', "not valid TOML"),
    BadUp('[other]\n', "the file: unknown key 'other'"),
]


@pytest.mark.parametrize("case", BAD_UP, ids=[c.expect for c in BAD_UP])
def test_up_checks_the_whole_file_before_starting_anything(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path, case: BadUp) -> None:
    (tmp_path / "p").mkdir()
    file = tmp_path / "bad.toml"
    # A good first entry: it must not start when a later one is wrong.
    file.write_text(f'[[session]]\nslug = "A"\npath = "p"\n\n{case.body}')
    result = cli("up", str(file))
    assert result.code == 2 and result.out == ""
    assert case.expect in result.err and str(file) in result.err, result.err
    assert one_line(result.err)
    assert tmux.list_panes() == []


def test_up_without_sessions_or_file(cli: Cli, tmux: Tmux, tmp_path: Path) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text("# nothing\n")
    result = cli("up", str(empty))
    assert result.code == 2 and "no sessions" in result.err
    missing = cli("up", str(tmp_path / "nope.toml"))
    assert missing.code == 2 and "no such file" in missing.err


# -- group sends -------------------------------------------------------------------------------


def test_send_and_interrupt_reach_a_group_and_report_each(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path, prompt_log: Path) -> None:
    pids = {slug: pid_of(start(cli, tmux, tmp_path, slug)) for slug in ("GA", "GB", "GC")}

    def got(text: str) -> set[str]:
        return {slug for slug, pid in pids.items() if (text, pid) in prompts_and_pids(prompt_log)}

    result = cli("send", "GA,GB", "SAY pair")
    assert result == CliResult(0, "GA: sent\nGB: sent\n", "")
    wait_until(lambda: got("SAY pair") == {"GA", "GB"}, message="the pair got it")
    for slug in pids:
        state(cli, slug, "waiting" if slug != "GC" else "idle")

    assert cli("send", "GC", "RUN sleep 30").code == 0
    state(cli, "GC", "working")
    result = cli("send", "--state", "waiting", "SAY only waiting")
    assert result == CliResult(0, "GA: sent\nGB: sent\n", "")
    wait_until(lambda: got("SAY only waiting") == {"GA", "GB"}, message="waiting ones")

    result = cli("interrupt", "--state", "working")
    assert result.code == 0 and result.out == ""  # one session: no per-session report
    state(cli, "GC", "waiting", "interrupted")
    for slug in ("GA", "GB"):
        state(cli, slug, "waiting")

    result = cli("send", "--state", "waiting,idle", "SAY everyone")
    assert result == CliResult(0, "GA: sent\nGB: sent\nGC: sent\n", "")
    wait_until(lambda: got("SAY everyone") == set(pids), message="all got it")

    none = cli("send", "--state", "permission", "SAY nobody")
    assert none.code == 1 and "no session matched" in none.err
    unknown = cli("send", "GA,NOPE", "SAY never")
    assert unknown.code == 2 and "no session named 'NOPE'" in unknown.err
    assert got("SAY never") == set() and got("SAY nobody") == set()

    assert cli("send", "GB", "WRITE blocked.txt").code == 0
    state(cli, "GB", "permission")
    mixed = cli("send", "GA,GB", "SAY careful")
    assert mixed.code == 1 and mixed.out == "GA: sent\n"
    assert "GB: failed: GB is asking for permission" in mixed.err
    wait_until(lambda: got("SAY careful") == {"GA"}, message="only GA typed into")

    for slug in ("GA", "GC"):
        assert cli("send", slug, "RUN sleep 30").code == 0
        state(cli, slug, "working")
    both = cli("interrupt", "GA,GC")
    assert both == CliResult(0, "GA: interrupted\nGC: interrupted\n", "")
    for slug in ("GA", "GC"):
        state(cli, slug, "waiting", "interrupted")


def test_send_and_interrupt_all(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path, prompt_log: Path) -> None:
    for slug in ("AA", "AB"):
        start(cli, tmux, tmp_path, slug)
    assert cli("send", "--all", "SAY everyone") == CliResult(0, "AA: sent\nAB: sent\n", "")
    wait_until(lambda: [p for p, _ in prompts_and_pids(prompt_log)] == ["SAY everyone"] * 2,
               message="both got it")
    for slug in ("AA", "AB"):
        state(cli, slug, "waiting")
    assert cli("send", "--all", "RUN sleep 30").code == 0
    for slug in ("AA", "AB"):
        state(cli, slug, "working")
    assert cli("interrupt", "--all") == CliResult(0, "AA: interrupted\nAB: interrupted\n", "")
    for slug in ("AA", "AB"):
        state(cli, slug, "waiting", "interrupted")


# -- usage in ls -------------------------------------------------------------------------------


def test_ls_shows_usage_from_the_transcript_and_the_process_tree(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path) -> None:
    start(cli, tmux, tmp_path, "COSTLY")
    start(cli, tmux, tmp_path, "QUIET")
    replies = [json.loads(cli("chat", "COSTLY", "--json", prompt).out)["usage"]
               for prompt in ("SAY one", "RUN echo two")]
    usage = views(cli)["COSTLY"]["usage"]
    for key in ("input_tokens", "output_tokens", "cache_read_input_tokens", "messages"):
        assert usage[key] == sum(r[key] for r in replies), key
    assert usage["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in replies), abs=1e-5)
    assert usage["model"] == "claude-opus-5-5"
    assert usage["rss_bytes"] > 1 << 20 and usage["cpu_seconds"] >= 0
    quiet = views(cli)["QUIET"]["usage"]
    assert quiet["total_tokens"] is None and quiet["cost_usd"] is None  # no transcript yet
    assert quiet["rss_bytes"] > 0
    table = cli("ls").out.splitlines()
    assert table[0].split() == ["SLUG", "STATE", "AGE", "TOKENS", "COST", "MEM", "REASON",
                                "PATH"]
    costly = next(line for line in table if "COSTLY" in line)
    assert f"{usage['total_tokens'] / 1000:.1f}k" in costly
    assert f"${usage['cost_usd']:.3f}" in costly and "M " in costly
    quiet_row = next(line for line in table if "QUIET" in line).split()
    assert quiet_row[4:6] == ["-", "-"]


# -- stalled sessions --------------------------------------------------------------------------


def test_a_silent_working_session_is_reported_stalled(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CBOS_STALL_SECONDS", "2")
    start(cli, tmux, tmp_path, "STUCK")
    start(cli, tmux, tmp_path, "FINE")
    assert cli("send", "STUCK", "RUN sleep 30").code == 0
    working = state(cli, "STUCK", "working")
    assert "stalled" not in working["reason"]
    stalled = state(cli, "STUCK", "working", "stalled for", timeout=15)
    assert stalled["reason"].startswith("stalled for ")
    assert "sleep 30" in stalled["reason"]  # what it is stuck on stays in the reason
    assert "stalled" not in views(cli)["FINE"]["reason"]  # idle is not stalled


def test_the_engine_reports_a_stall_despite_the_spinner(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import select

    from cbos.engine import Engine

    monkeypatch.setenv("CBOS_STALL_SECONDS", "2")
    start(cli, tmux, tmp_path, "SPIN")
    assert cli("send", "SPIN", "RUN sleep 30").code == 0
    state(cli, "SPIN", "working")
    engine = Engine(config_mod.load(), tmux)
    engine.start()

    def stalled() -> bool:
        ready, _, _ = select.select(engine.fds(), [], [], 0.2)
        for fd in ready:
            engine.on_readable(fd)
        engine.tick()
        view = engine.view("SPIN")
        return view is not None and "stalled for" in view.reason

    try:
        wait_until(stalled, timeout=8, message="the engine says stalled")
    finally:
        engine.close()
