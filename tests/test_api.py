"""The Python API, and the pure parts of scripting: turn correlation, transcripts, prices,
the sessions file. The end-to-end tests drive the fake claude in a private tmux server."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from cbos import api, registry, transcript
from cbos.config import Config
from cbos.errors import CbosError, RefusedError
from cbos.events import HookEvent
from cbos.model import SessionView
from cbos.state import State
from cbos.tmux import Tmux
from tests.support import prompts

# -- turn correlation ---------------------------------------------------------------------

PANE = "%3"
PID = 4242


def ev(name: str, prompt_id: str = "", pane: str = PANE, pid: int | None = PID,
       **payload: Any) -> HookEvent:
    body: dict[str, Any] = {"hook_event_name": name, "session_id": "sid", **payload}
    if prompt_id:
        body["prompt_id"] = prompt_id
    return HookEvent(ts=1.0, name=name, pane=pane, slug="S", claude_pid=pid,
                     session_id="sid", payload=body)


def run(events: list[HookEvent]) -> api.TurnWatch:
    watch = api.TurnWatch(pane=PANE, claude_pid=PID)
    for event in events:
        watch = api.follow(watch, event)
    return watch


class Turn(NamedTuple):
    name: str
    events: list[HookEvent]
    kind: str | None  # the outcome, None = still waiting
    text: str = ""


TURNS = [
    Turn("plain reply", [ev("UserPromptSubmit", "p1", prompt="SAY hi"),
                         ev("Stop", "p1", last_assistant_message="hi")], "reply", "hi"),
    # The Stop of a turn that was already running when the prompt was typed.
    Turn("earlier turn's Stop before ours", [
        ev("Stop", "p0", last_assistant_message="old"),
        ev("UserPromptSubmit", "p1", prompt="SAY new"),
        ev("Stop", "p1", last_assistant_message="new")], "reply", "new"),
    Turn("earlier turn's Stop after our prompt", [
        ev("UserPromptSubmit", "p1", prompt="SAY new"),
        ev("Stop", "p0", last_assistant_message="old")], None),
    Turn("background task turn first", [
        ev("UserPromptSubmit", "t1", prompt="<task-notification>\n<task-id>b1</task-id>"),
        ev("Stop", "t1", last_assistant_message="OK"),
        ev("UserPromptSubmit", "p1", prompt="mine"),
        ev("Stop", "p1", last_assistant_message="yours")], "reply", "yours"),
    Turn("other pane and other claude", [
        ev("UserPromptSubmit", "x", pane="%9", prompt="SAY a"),
        ev("Stop", "x", pane="%9", last_assistant_message="a"),
        ev("UserPromptSubmit", "y", pid=99, prompt="SAY b"),
        ev("Stop", "y", pid=99, last_assistant_message="b")], None),
    Turn("subagent stop is not the end", [
        ev("UserPromptSubmit", "p1", prompt="AGENT x"),
        ev("Stop", "p1", agent_id="a1", last_assistant_message="sub"),
        ev("SubagentStop", "p1", agent_id="a1")], None),
    Turn("api error", [ev("UserPromptSubmit", "p1", prompt="FAIL"),
                       ev("StopFailure", "p1", error="server_error",
                          last_assistant_message="API Error: 500")],
         "failed", "API error server_error: API Error: 500"),
    Turn("permission", [ev("UserPromptSubmit", "p1", prompt="WRITE x"),
                        ev("PreToolUse", "p1", tool_name="Write"),
                        ev("PermissionRequest", "p1", tool_name="Write",
                           tool_input={"file_path": "/p/x"})],
         "permission", "asks to use Write: /p/x"),
    Turn("question", [ev("UserPromptSubmit", "p1", prompt="ASK q"),
                      ev("PermissionRequest", "p1", tool_name="AskUserQuestion",
                         tool_input={"questions": [{"question": "Pick one?"}]})],
         "permission", "asks: Pick one?"),
    Turn("auto mode dialog", [ev("UserPromptSubmit", "p1", prompt="RUN x"),
                              ev("Notification", "p1", notification_type="agent_needs_input",
                                 message="Auto mode can't check")],
         "permission", "Auto mode can't check"),
    Turn("claude exits", [ev("UserPromptSubmit", "p1", prompt="EXIT"),
                          ev("SessionEnd", "p1", reason="prompt_input_exit")],
         "exited", "claude exited (prompt_input_exit)"),
    Turn("/clear is not an exit", [ev("SessionEnd", reason="clear")], None),
    Turn("no prompt yet", [ev("Notification", notification_type="idle_prompt")], None),
]


@pytest.mark.parametrize("case", TURNS, ids=[t.name for t in TURNS])
def test_follow_takes_only_the_stop_of_our_prompt(case: Turn) -> None:
    watch = run(case.events)
    if case.kind is None:
        assert watch.outcome is None
    else:
        assert watch.outcome is not None
        assert (watch.outcome.kind, watch.outcome.text) == (case.kind, case.text)


def view(state: State, reason: str = "r", pid: int | None = PID) -> SessionView:
    return SessionView(slug="S", path="/p", state=state, reason=reason, since=0.0, pid=pid,
                       claude_session_id="sid", tmux="S:1.0", pane_id=PANE, adopted=False)


def test_judge_reads_what_no_hook_reports() -> None:
    started = run([ev("UserPromptSubmit", "p1", prompt="x")])
    fresh = api.TurnWatch(pane=PANE, claude_pid=PID)
    # Esc or a denied permission: the status file says idle, no Stop came.
    out = api.judge(started, view(State.WAITING, "interrupted (Esc)")).outcome
    assert out is not None and (out.kind, out.text) == ("interrupted", "interrupted (Esc)")
    # Before our prompt started, "waiting" is the previous turn's.
    assert api.judge(fresh, view(State.WAITING)).outcome is None
    assert api.judge(started, view(State.THINKING)).outcome is None
    for watch in (fresh, started):
        gone = api.judge(watch, None).outcome
        assert gone is not None and gone.kind == "exited"
        dead = api.judge(watch, view(State.IDLE, "claude not running", pid=None)).outcome
        assert dead is not None and dead.kind == "exited"
        asked = api.judge(watch, view(State.PERMISSION, "dialog: trust")).outcome
        assert asked is not None and asked.kind == "permission"


def test_chat_blocker_names_what_to_do() -> None:
    assert api.chat_blocker(view(State.WAITING)) is None
    assert api.chat_blocker(view(State.IDLE, "no turn yet")) is None
    for state, words in ((State.THINKING, "busy"), (State.WORKING, "busy"),
                         (State.PERMISSION, "cbos answer S"), (State.EXITED, "cbos resume S")):
        problem = api.chat_blocker(view(state))
        assert problem is not None and words in problem
    problem = api.chat_blocker(view(State.IDLE, "claude not running", pid=None))
    assert problem is not None and "not running" in problem
    # Past SessionEnd the process lives on for its hooks, but reads no prompt.
    problem = api.chat_blocker(view(State.IDLE, "claude is exiting (quit at the prompt)"))
    assert problem is not None and "not running" in problem


def test_conversation_of_prefers_the_newest_word() -> None:
    entry = registry.Entry(path="/proj", session_id="from-file", args=("--model", "x"),
                           updated=100.0)
    newer = HookEvent(200.0, "SessionStart", "%1", "S", 1, "from-events",
                      {"cwd": "/elsewhere"})
    older = HookEvent(50.0, "SessionStart", "%1", "S", 1, "old-events", {"cwd": "/e"})
    found = api.conversation_of("S", None, None, entry, newer)
    assert found is not None and found.session_id == "from-events"  # a /clear cbos missed
    assert found.path == "/proj" and found.args == ("--model", "x")
    found = api.conversation_of("S", None, None, entry, older)
    assert found is not None and found.session_id == "from-file"
    found = api.conversation_of("S", "live", "/pane", None, older)
    assert found is not None and (found.session_id, found.path) == ("live", "/pane")
    found = api.conversation_of("S", None, None, None, older)
    assert found is not None and found.path == "/e"
    assert api.conversation_of("S", None, None, None, None) is None
    events = [older, HookEvent(300.0, "Stop", "%2", "T", 2, "t-id", {}), newer]
    assert api.latest_event(events, "S") is newer


# -- transcripts -----------------------------------------------------------------------------


def assistant(text: str, message_id: str, model: str = "claude-opus-5-5", inp: int = 10,
              out: int = 20, write: int = 0, read: int = 0, **extra: Any) -> dict[str, Any]:
    return {"type": "assistant", "timestamp": "2026-01-01T00:00:00Z", **extra,
            "message": {"id": message_id, "model": model, "role": "assistant",
                        "content": [{"type": "text", "text": text}],
                        "usage": {"input_tokens": inp, "output_tokens": out,
                                  "cache_creation_input_tokens": write,
                                  "cache_read_input_tokens": read}}}


def user(content: Any, **extra: Any) -> dict[str, Any]:
    return {"type": "user", "message": {"role": "user", "content": content}, **extra}


def write_jsonl(path: Path, items: list[dict[str, Any]], mode: str = "w") -> None:
    with path.open(mode, encoding="utf-8") as handle:
        for item in items:
            handle.write(json.dumps(item, separators=(",", ":")) + "\n")


def test_prices_by_family_and_unknown_models() -> None:
    million = transcript.Tokens(input=1_000_000)
    assert transcript.cost_of("claude-opus-5-5", million) == pytest.approx(4.0)
    assert transcript.cost_of("claude-sonnet-5-5", million) == pytest.approx(2.0)
    assert transcript.cost_of("claude-haiku-5-5", transcript.Tokens(input=50_000)) == \
        pytest.approx(0.005)
    # Haiku's long prompts are priced higher, on every token of that request.
    assert transcript.cost_of("claude-haiku-5-5", transcript.Tokens(
        input=150_000, output=1_000_000)) == pytest.approx(0.075 + 2.5)
    assert transcript.cost_of("mystery-model", million) is None
    every = transcript.Tokens(1_000_000, 1_000_000, 1_000_000, 1_000_000)
    assert transcript.cost_of("claude-opus-5-5", every) == pytest.approx(4 + 20 + 5 + 0.2)


def test_usage_counts_each_message_once_and_unknown_models_have_no_cost(
        tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    write_jsonl(path, [
        user("SAY hi"),
        # One API response written as two lines (text, then tool_use): counted once.
        assistant("a", "m1", inp=100, out=1), assistant("b", "m1", inp=100, out=50),
        user([{"type": "tool_result", "tool_use_id": "t", "content": "x" * 5000}]),
        assistant("c", "m2", inp=10, out=10, read=1000),
        assistant("", "m3", model="<synthetic>", inp=0, out=0),
    ])
    usage = transcript.UsageCache().usage(path)
    assert usage is not None
    assert usage.tokens == transcript.Tokens(110, 60, 0, 1000)
    assert usage.messages == 3 and usage.model == "claude-opus-5-5"
    assert usage.cost_usd == pytest.approx((110 * 4 + 60 * 20 + 1000 * 0.2) / 1e6)
    write_jsonl(path, [assistant("d", "m4", model="mystery", inp=5, out=5)], "a")
    unknown = transcript.UsageCache().usage(path)
    assert unknown is not None and unknown.cost_usd is None
    assert unknown.to_json()["cost_usd"] is None and unknown.to_json()["total_tokens"] == 1180


def test_usage_cache_reads_only_what_was_appended(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    write_jsonl(path, [user("p"), assistant("a", "m1", inp=1, out=1)])
    cache = transcript.UsageCache()
    first = cache.usage(path)
    assert first is not None and first.messages == 1
    size = path.stat().st_size
    assert cache.bytes_read == size
    assert cache.usage(path) == first and cache.bytes_read == size  # unchanged: no read
    write_jsonl(path, [assistant("b", "m2", inp=2, out=2)], "a")
    grown = cache.usage(path)
    assert grown is not None and grown.tokens.input == 3
    assert cache.bytes_read == path.stat().st_size  # only the new line was read
    # A line still being written is not counted until its newline arrives.
    line = json.dumps(assistant("c", "m3", inp=4, out=4), separators=(",", ":"))
    with path.open("a") as handle:
        handle.write(line[:30])
    partial = cache.usage(path)
    assert partial is not None and partial.tokens.input == 3
    with path.open("a") as handle:
        handle.write(line[30:] + "\n")
    done = cache.usage(path)
    assert done is not None and done.tokens.input == 7
    # Replaced by a shorter file: read again from the start.
    write_jsonl(path, [assistant("z", "m9", inp=1000, out=1)])
    again = cache.usage(path)
    assert again is not None and again.tokens.input == 1000 and again.messages == 1
    path.unlink()
    assert cache.usage(path) is None


def test_session_usage_adds_subagents(tmp_path: Path) -> None:
    main = tmp_path / "abc.jsonl"
    write_jsonl(main, [assistant("a", "m1", inp=1, out=1)])
    sub = tmp_path / "abc" / "subagents"
    sub.mkdir(parents=True)
    write_jsonl(sub / "agent-1.jsonl", [assistant("s", "m2", inp=10, out=10)])
    usage = transcript.UsageCache().session_usage(main)
    assert usage is not None and usage.tokens.input == 11 and usage.messages == 2


def test_find_uses_the_payload_path_then_searches_by_id(tmp_path: Path) -> None:
    home = tmp_path / "claude"
    folder = home / "projects" / "-any-name-at-all"
    folder.mkdir(parents=True)
    sid = "0f0e0d0c-1111-2222-3333-444455556666"
    (folder / f"{sid}.jsonl").write_text("")
    hinted = tmp_path / f"{sid}.jsonl"
    hinted.write_text("")
    assert transcript.find(sid, hinted, home=home) == hinted
    assert transcript.find("1f0e0d0c-1111-2222-3333-444455556666", home=home) is None
    assert transcript.find(sid, tmp_path / "other.jsonl", home=home) in (
        hinted, folder / f"{sid}.jsonl")
    assert transcript.find("../../etc/passwd", home=home) is None


def test_messages_keep_prompts_and_replies_unless_full() -> None:
    items = [
        user("Caveat: the messages below were generated by the user", isMeta=True),
        user("SAY hi", timestamp="T1"),
        assistant("Running it.", "m1"),
        {"type": "assistant", "message": {"id": "m1", "content": [
            {"type": "tool_use", "id": "t", "name": "Bash", "input": {"command": "ls"}}]}},
        user([{"type": "tool_result", "tool_use_id": "t", "content": "a\nb"}]),
        {"type": "assistant", "message": {"id": "m2", "content": [
            {"type": "thinking", "thinking": "hmm"}, {"type": "text", "text": "done"}]}},
        user("<task-notification>\n<summary>bg done</summary>\n</task-notification>"),
        assistant("OK", "m3"),
        user([{"type": "text", "text": "[Request interrupted by user]"}]),
        user([{"type": "text", "text": "look"}, {"type": "image", "source": {}}]),
        {"type": "summary", "summary": "x"},
        "not even an object",
    ]
    short = transcript.messages(items)  # type: ignore[arg-type]
    assert [(m.kind, m.text) for m in short] == [
        ("prompt", "SAY hi"), ("text", "Running it.\n\ndone\n\nOK"),
        ("prompt", "look\n[image]")]
    assert short[0].timestamp == "T1"
    full = transcript.messages(items, full=True)  # type: ignore[arg-type]
    assert [m.kind for m in full] == [
        "meta", "prompt", "text", "tool_use", "tool_result", "thinking", "text", "meta",
        "text", "meta", "prompt"]
    assert full[3].text == "Bash: ls" and full[4].text == "a\nb"


def test_turn_usage_is_the_first_prompt_s_turn_only() -> None:
    items = [
        assistant("earlier", "m0", inp=999),  # before our prompt: not ours
        user("SAY mine"),
        assistant("Running it.", "m1", inp=1, out=1),
        user([{"type": "tool_result", "tool_use_id": "t", "content": "x"}]),
        assistant("the answer", "m2", inp=2, out=2),
        user("next prompt"),
        assistant("later", "m3", inp=500),
    ]
    usage, reply = transcript.turn_usage(items)
    assert usage is not None and usage.tokens.input == 3 and usage.messages == 2
    assert reply == "the answer"
    assert transcript.turn_usage(items[:1]) == (None, "")


# -- the sessions file ------------------------------------------------------------------------


def test_session_args_drop_what_picks_the_conversation() -> None:
    args = ["--settings", "/s.json", "--resume", "abc", "--fork-session", "--model", "x",
            "--session-id=zz", "-c", "--permission-mode", "plan", "-r", "def"]
    assert registry.session_args(args) == ("--model", "x", "--permission-mode", "plan")
    assert registry.resume_id(["--model", "x", "--resume", "abc"]) == "abc"
    assert registry.resume_id(["--resume=abc"]) == "abc"
    assert registry.resume_id(["--resume", "abc", "--fork-session"]) == ""
    assert registry.resume_id(["--resume", "--model", "x"]) == ""


def test_registry_file_is_private_atomic_and_lenient(config: Config) -> None:
    registry.record_start(config, "A", Path("/a"), ["--resume", "id-a", "--model", "m"],
                          {"K": "V"})
    registry.record(config, "A", transcript_path="/t.jsonl")
    registry.record(config, "NOPE", transcript_path="/x")  # unknown, no path: ignored
    entries = registry.load(config)
    assert set(entries) == {"A"}
    entry = entries["A"]
    assert (entry.path, entry.session_id, entry.args, dict(entry.env),
            entry.transcript_path) == ("/a", "id-a", ("--model", "m"), {"K": "V"}, "/t.jsonl")
    assert stat.S_IMODE(config.sessions_file.stat().st_mode) == 0o600
    leftovers = [p.name for p in config.sessions_file.parent.iterdir() if ".tmp" in p.name]
    assert leftovers == []
    config.sessions_file.write_text('{"sessions": {"B": {"path": 3}, "C": {"path": "/c", '
                                    '"args": "oops", "updated": true}}}')
    assert registry.load(config) == {"C": registry.Entry(path="/c")}
    config.sessions_file.write_text("not json")
    assert registry.load(config) == {}


def _record_many(state_home: str, prefix: str) -> None:
    os.environ["XDG_STATE_HOME"] = state_home
    from cbos import config as config_mod

    cfg = config_mod.load()
    for n in range(25):
        registry.record_start(cfg, f"{prefix}{n}", Path("/p"), [], None)


def test_registry_updates_from_two_processes_are_not_lost(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state_home = str(tmp_path / "state")
    monkeypatch.setenv("XDG_STATE_HOME", state_home)
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_record_many, args=(state_home, p)) for p in "XY"]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
        assert worker.exitcode == 0
    from cbos import config as config_mod

    assert len(registry.load(config_mod.load())) == 50


# -- the Python API, end to end -------------------------------------------------------------


@pytest.fixture
def prompt_log(quiet_fake: Path) -> Path:
    return quiet_fake


def test_python_api_drives_a_session_end_to_end(
        fake_claude: Path, tmux: Tmux, tmp_path: Path, prompt_log: Path) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    cb = api.Cbos()
    session = cb.new(project, slug="PY", args=["--model", "sonnet"], env={"PY_MARK": "1"})
    assert session.slug == "PY" and session.state is State.IDLE
    assert [s.slug for s in cb.sessions()] == ["PY"]
    with pytest.raises(CbosError, match="no session named 'PX'"):
        cb.get("PX")

    assert session.chat("SAY hello from python", timeout=30) == "hello from python"
    result = session.chat_result("RUN echo hi", timeout=30)
    assert result.reply == "done" and result.duration_s > 0
    assert result.usage is not None and result.usage.model == "claude-sonnet-5-5"
    assert result.usage.messages == 2 and result.usage.cost_usd is not None
    assert result.session_id == session.view.claude_session_id
    assert [m.text for m in session.history()] == [
        "SAY hello from python", "hello from python", "RUN echo hi", "Running it.\n\ndone"]
    assert any(m.kind == "tool_result" for m in session.history(full=True))

    usage = session.usage()
    assert usage["messages"] == 3 and usage["output_tokens"] > 0
    assert usage["rss_bytes"] > 0 and usage["cpu_seconds"] >= 0

    session.send("WAIT 30")
    assert session.wait("thinking", timeout=15).state is State.THINKING
    with pytest.raises(RefusedError, match="busy"):
        session.chat("SAY not now", timeout=5)
    session.interrupt()
    session.wait(["waiting", "idle"], timeout=15)
    with pytest.raises(api.WaitTimeout):
        session.wait(State.WORKING, timeout=0.5)
    assert prompts(prompt_log) == ["SAY hello from python", "RUN echo hi", "WAIT 30"]

    session.kill()
    assert cb.sessions() == []
    back = cb.resume("PY")
    assert back.chat("SAY still here", timeout=30) == "still here"
    texts = [m.text for m in back.history()]
    assert texts[0] == "SAY hello from python" and texts[-1] == "still here"
    assert back.view.claude_session_id == result.session_id


def test_new_waits_for_the_composer_and_reports_a_claude_that_dies(
        tmux: Tmux, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = tmp_path / "claude"
    broken.write_text("#!/bin/sh\necho 'claude: cannot start'\nexit 3\n")
    broken.chmod(0o755)
    monkeypatch.setenv("CBOS_CLAUDE_COMMAND", str(broken))
    (tmp_path / "p").mkdir()
    with pytest.raises(CbosError, match="BROKEN started, but claude exited at start"):
        api.Cbos().new(tmp_path / "p", slug="BROKEN", timeout=10)


def test_wait_composer_times_out_with_a_hint(tmux: Tmux, tmp_path: Path) -> None:
    pane = tmux.cmd("new-session", "-d", "-P", "-F", "#{pane_id}", "-s", "quiet",
                    "sleep 60")[0]
    problems = api.wait_composer(tmux, {"quiet": pane}, 0.3)
    assert "no prompt on screen within 0.3s" in problems["quiet"]
    assert "cbos buffer quiet" in problems["quiet"]


def test_up_file_parses_defaults_and_relative_paths(tmp_path: Path) -> None:
    from cbos.cli.scripting import parse_up

    (tmp_path / "a").mkdir()
    (tmp_path / "b c").mkdir()
    text = """
[defaults]
args = ["--permission-mode", "acceptEdits"]
env = { SHARED = "1", OVER = "default" }

[[session]]
slug = "A"
path = "a"
prompt = "SAY hi"
args = ["--model", "sonnet"]
env = { OVER = "mine" }

[[session]]
path = "b c"
"""
    first, second = parse_up(text, tmp_path)
    assert first.slug == "A" and first.path == (tmp_path / "a").resolve()
    assert first.args == ("--permission-mode", "acceptEdits", "--model", "sonnet")
    assert dict(first.env) == {"SHARED": "1", "OVER": "mine"} and first.prompt == "SAY hi"
    assert second.slug == "b-c" and second.prompt is None
    assert second.args == ("--permission-mode", "acceptEdits")
