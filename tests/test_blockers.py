"""Every recorded blocker (fixtures/.../blockers/) replayed through state.infer: the hooks
that fired, Claude's status file and the screen give the state a person must see."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from cbos import state as st
from cbos.dialog import blocking_notice, parse_dialog
from cbos.state import Signals, State, StatusFile
from tests.test_state import fold_all, to_event

BLOCKERS = Path(__file__).parent / "fixtures" / "claude-code-2.1.328" / "blockers"


def load(name: str, after: bool = False) -> tuple[Any, ...]:
    folder = BLOCKERS / name
    prefix = "after_" if after else ""
    lines = (folder / f"{prefix}events.jsonl").read_text(encoding="utf-8").splitlines()
    events = [to_event(json.loads(line)) for line in lines if line.strip()]
    if after:  # the events before the answer come first
        before = (folder / "events.jsonl").read_text(encoding="utf-8").splitlines()
        events = [to_event(json.loads(line)) for line in before if line.strip()] + events
    files = json.loads((folder / f"{prefix}sessions.json").read_text(encoding="utf-8"))
    screen = (folder / ("after.txt" if after else "screen.txt")).read_text(encoding="utf-8")
    return events, files, screen


def status(files: dict[str, Any]) -> StatusFile | None:
    for data in files.values():
        return StatusFile(pid=data["pid"], session_id=data["sessionId"], cwd=data["cwd"],
                          status=data["status"], waiting_for=data.get("waitingFor"),
                          tmux=data["tmux"], proc_start=None,
                          status_updated_at=data["statusUpdatedAt"] / 1000,
                          started_at=data["startedAt"] / 1000)
    return None


def verdict(name: str, after: bool = False) -> st.Verdict:
    events, files, screen = load(name, after)
    sf = status(files)
    pid = sf.pid if sf is not None else 4242
    started = sf.started_at if sf is not None and sf.started_at else 1796244300.0
    now = max([e.ts for e in events] + [sf.status_updated_at or 0 if sf else 0, started]) + 1.5
    return st.infer(Signals(now=now, track=fold_all(events), status=sf, claude_pid=pid,
                            claude_started=started, dialog=parse_dialog(screen),
                            notice=blocking_notice(screen)))


class Expect(NamedTuple):
    state: State
    reason: str
    after_state: State
    after_reason: str


EXPECTED = {
    # Before SessionStart and before any status file: only the screen tells.
    "trust": Expect(State.PERMISSION,
                    "dialog: Quick safety check: Is this a project you created or one you trust?",
                    State.IDLE, "no turn yet"),
    "mcp-json": Expect(State.PERMISSION, "dialog: New MCP server found in this project: demo",
                       State.IDLE, "no turn yet"),
    # PermissionRequest(ExitPlanMode); Esc rejected the plan (no hook; the file says idle).
    "plan-approval": Expect(State.PERMISSION, "asks to approve the plan",
                            State.WAITING, "permission denied: ExitPlanMode"),
    "rate-limit": Expect(State.WAITING, "API error 429: rate limited", State.WAITING,
                         'API error 429: rate limited · "API Error: Request rejected (429)'),
    "no-credentials": Expect(State.WAITING, "not logged in: run /login", State.WAITING,
                             "not logged in: run /login"),
}


def test_every_blocker_is_expected() -> None:
    assert {p.name for p in BLOCKERS.iterdir() if p.is_dir()} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_blocker_state_and_after_its_answer(name: str) -> None:
    expect = EXPECTED[name]
    found = verdict(name)
    assert found.state is expect.state and found.reason.startswith(expect.reason), found
    later = verdict(name, after=True)
    assert later.state is expect.after_state, later
    assert later.reason.startswith(expect.after_reason), later


def test_a_blocked_session_needs_its_person() -> None:
    """Never idle/"no turn yet", never busy: waiting sorts with the sessions that need
    their person (attention order, notifications, session_waiting)."""
    for name in ("rate-limit", "no-credentials"):
        found = verdict(name)
        assert found.state not in (State.IDLE, State.THINKING, State.WORKING)
        assert st.ATTENTION_ORDER.index(found.state) < st.ATTENTION_ORDER.index(State.WORKING)


def test_a_turn_that_ends_well_makes_the_notice_stale() -> None:
    events, _files, screen = load("no-credentials")
    base = events[0]
    prompt = replace(base, ts=base.ts + 5, name="UserPromptSubmit",
                     payload={**base.payload, "hook_event_name": "UserPromptSubmit",
                              "prompt": "hi"})
    stop = replace(base, ts=base.ts + 6, name="Stop",
                   payload={**base.payload, "hook_event_name": "Stop",
                            "last_assistant_message": "hello"})
    found = st.infer(Signals(now=base.ts + 7, track=fold_all([*events, prompt, stop]),
                             claude_pid=base.claude_pid, notice=blocking_notice(screen)))
    assert found.state is State.WAITING and found.reason == 'done: "hello"'


@pytest.mark.parametrize(("error", "message", "text"), [
    ("rate_limit", "API Error: Request rejected (429) · mock failure 429",
     "API error 429: rate limited"),
    ("unknown", "API Error: 400 mock failure 400", "API error 400: request failed"),
    ("overloaded", "API Error: 529 Overloaded", "API error 529: overloaded"),
    ("authentication_failed", "OAuth token has expired",
     "API error: credentials expired or invalid: run /login"),
    ("something_new", "", "API error: something new"),
])
def test_api_error_words(error: str, message: str, text: str) -> None:
    assert st.api_error_text(error, message) == text
