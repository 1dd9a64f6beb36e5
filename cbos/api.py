"""Scripting Claude Code sessions from Python, over the same core as the CLI and the TUI.

Every session is still an interactive ``claude`` in its own tmux session: a person can
watch (``cbos attach``), answer or take over any of them while a script drives it::

    from cbos.api import Cbos

    cb = Cbos()                                   # tmux's default server; Cbos("x") = -L x
    auth = cb.new("~/code/auth", slug="AUTH")     # returns once claude shows its composer
    print(auth.chat("Which functions in src/auth.ts have no tests?"))
    auth.send("add the missing tests")            # fire and forget
    auth.wait("waiting", timeout=900)             # the turn ended
    for message in auth.history():
        print(message.role, message.text[:80])
    auth.kill()

How :meth:`Session.chat` finds its answer: it opens the hook events file before typing,
then waits for this pane's ``UserPromptSubmit`` (the first one after the send that is not a
``<task-notification>``), and takes the ``Stop`` whose ``prompt_id`` is that prompt's.
A Stop of a turn that was already running, or of a background task's turn, is never
mistaken for the reply. A busy session is refused rather than waited for: its current turn
is someone's work, and the caller can ``wait("waiting")`` first if that is what they mean.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cbos import config as config_mod
from cbos import delegation, hooks, registry, sessions, transcript
from cbos.core import Core
from cbos.dialog import composer_shown, parse_dialog
from cbos.errors import CbosError, NotFoundError, RefusedError, TmuxError, UsageError
from cbos.events import HookEvent, read_recent
from cbos.model import SessionView
from cbos.panes import PaneSession
from cbos.state import EXITING, State
from cbos.tmux import Tmux
from cbos.waiting import FALLBACK_REFRESH, Wakeups, wait_for

READY_TIMEOUT = 60.0
READY_POLL = 0.1


class WaitTimeout(CbosError):
    """The session did not get there in time (it goes on; nothing was stopped)."""


class ChatTimeout(WaitTimeout):
    """No reply within the time allowed."""


class PermissionNeeded(RefusedError):
    """Claude asks a question or for a permission that a script cannot answer for a person."""


class ClaudeExited(CbosError):
    """claude ended (or its pane went away) before the reply."""


class TurnFailed(CbosError):
    """The turn ended without a reply: an API error, an interrupt, a denied permission."""


# -- following one turn (pure) --------------------------------------------------------------


@dataclass(frozen=True)
class TurnOutcome:
    """How the turn our prompt started ended (or why it cannot be followed)."""

    kind: str  # reply, failed, permission, exited, interrupted
    text: str = ""  # the reply, or what went wrong
    event: HookEvent | None = None


@dataclass(frozen=True)
class TurnWatch:
    """What the events said so far about the turn our prompt started, in one pane."""

    pane: str
    claude_pid: int | None = None
    started: HookEvent | None = None  # our UserPromptSubmit
    outcome: TurnOutcome | None = None

    @property
    def prompt_id(self) -> str:
        if self.started is None:
            return ""
        value = self.started.payload.get("prompt_id")
        return value if isinstance(value, str) else ""


def _same_claude(watch: TurnWatch, event: HookEvent) -> bool:
    if event.pane != watch.pane:
        return False
    return watch.claude_pid is None or event.claude_pid in (None, watch.claude_pid)


def _ours(watch: TurnWatch, event: HookEvent) -> bool:
    """Whether an event belongs to our turn (same prompt id when both have one)."""
    theirs = event.payload.get("prompt_id")
    return not (watch.prompt_id and isinstance(theirs, str) and theirs
                and theirs != watch.prompt_id)


def follow(watch: TurnWatch, event: HookEvent) -> TurnWatch:
    """The watch after one event read after the prompt was typed (events in file order)."""
    if watch.outcome is not None or not _same_claude(watch, event):
        return watch
    payload = event.payload
    agent = payload.get("agent_id")
    if event.name == "SessionEnd" and payload.get("reason") != "clear":
        reason = payload.get("reason") or "other"
        return replace(watch, outcome=TurnOutcome("exited", f"claude exited ({reason})", event))
    if watch.started is None:
        prompt = payload.get("prompt")
        if (event.name == "UserPromptSubmit" and not agent and isinstance(prompt, str)
                and not prompt.lstrip().startswith("<task-notification>")):
            return replace(watch, started=event)
        return watch
    if not _ours(watch, event):
        return watch
    if event.name == "Stop" and not agent:
        text = payload.get("last_assistant_message")
        reply = text if isinstance(text, str) else ""
        return replace(watch, outcome=TurnOutcome("reply", reply, event))
    if event.name == "StopFailure":
        error = payload.get("error") or "unknown"
        text = payload.get("last_assistant_message")
        detail = f": {text}" if isinstance(text, str) and text else ""
        return replace(watch, outcome=TurnOutcome("failed", f"API error {error}{detail}", event))
    if event.name == "PermissionRequest":
        return replace(watch, outcome=TurnOutcome("permission", _asks(payload), event))
    if event.name == "Notification" and payload.get("notification_type") in (
            "permission_prompt", "agent_needs_input"):
        message = payload.get("message") or "needs your permission"
        return replace(watch, outcome=TurnOutcome("permission", str(message), event))
    return watch


def _asks(payload: Mapping[str, Any]) -> str:
    """What a PermissionRequest asks, in words: "asks to use Write: /x/y.txt"."""
    tool = payload.get("tool_name")
    tool_input = payload.get("tool_input")
    details: Mapping[str, Any] = tool_input if isinstance(tool_input, Mapping) else {}
    if tool == "AskUserQuestion":
        questions = details.get("questions")
        first = questions[0] if isinstance(questions, list) and questions else {}
        question = first.get("question") if isinstance(first, Mapping) else None
        return f"asks: {question}" if isinstance(question, str) else "asks a question"
    name = tool if isinstance(tool, str) and tool else "a tool"
    subject = next((v for k in ("command", "file_path", "path", "url", "pattern")
                    if isinstance(v := details.get(k), str) and v), "")
    return f"asks to use {name}: {subject}" if subject else f"asks to use {name}"


def judge(watch: TurnWatch, view: SessionView | None) -> TurnWatch:
    """What the session's state says when the events have not decided (no hook fires for
    Esc or a denied permission; a pane can vanish without a SessionEnd)."""
    if watch.outcome is not None:
        return watch
    if view is None or view.state is State.EXITED or view.pid is None:
        reason = view.reason if view is not None else "its tmux pane is gone"
        return replace(watch, outcome=TurnOutcome("exited", reason))
    if view.state is State.PERMISSION:
        return replace(watch, outcome=TurnOutcome("permission", view.reason))
    if watch.started is not None and view.state in (State.WAITING, State.IDLE):
        return replace(watch, outcome=TurnOutcome("interrupted", view.reason))
    return watch


def chat_blocker(view: SessionView) -> str | None:
    """Why a prompt cannot be chatted into this session now; None when it can."""
    slug = view.slug
    # A claude past its SessionEnd still runs its hooks for a moment; it reads no prompt.
    if view.state is State.EXITED or view.pid is None or view.reason.startswith(EXITING):
        return (f"{slug}: claude is not running ({view.reason}); "
                f"`cbos resume {slug}` brings its conversation back")
    if view.state is State.PERMISSION:
        return (f"{slug} is asking for permission ({view.reason}); answer it first with "
                f"`cbos answer {slug} CHOICE`")
    if view.state in (State.THINKING, State.WORKING):
        return (f"{slug} is busy ({view.state.value}: {view.reason}); wait for the turn to "
                f"end (`cbos wait {slug} --state waiting`) or interrupt it, then chat")
    return None


# -- chat -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatResult:
    slug: str
    reply: str
    duration_s: float
    session_id: str
    transcript_path: str
    usage: transcript.Usage | None  # of this turn, when the transcript has it

    def to_json(self) -> dict[str, Any]:
        return {"slug": self.slug, "reply": self.reply,
                "duration_s": round(self.duration_s, 3), "session_id": self.session_id,
                "transcript_path": self.transcript_path,
                "usage": self.usage.to_json() if self.usage is not None else None}


def reports_hooks(config: config_mod.Config, core: Core, slug: str) -> bool:
    """Whether this claude sends cbos its hook events (chat cannot see a reply otherwise)."""
    session = core.session(slug)
    if session.claude is None:
        return False
    track = core.board.track_for(session)
    if track is not None and track.claude_pid == session.claude.pid:
        return True
    settings = str(config.state_dir / hooks.SESSION_SETTINGS_NAME)
    return settings in session.claude.cmdline or hooks.installed_globally(config)


def _size(path: Path | None) -> int:
    try:
        return path.stat().st_size if path is not None else 0
    except OSError:
        return 0


@dataclass
class _TurnFollower:
    """Following a typed prompt's turn, one pass at a time (chat and delegated turns)."""

    core: Core
    wake: Wakeups
    slug: str
    status_file: str  # the watched claude's own status file: only its changes count
    clock: Callable[[], float]
    last_refresh: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self.last_refresh = self.clock()

    def step(self, watch: TurnWatch) -> tuple[TurnWatch, list[HookEvent]]:
        """Status files and processes when due, then the new events; what the state says
        when the events have not decided. Returns the watch and the events read."""
        refresh = (self.status_file in self.wake.changed
                   or self.clock() - self.last_refresh >= FALLBACK_REFRESH)
        if refresh:
            # Status files first, events second: Claude writes a hook's event before it
            # updates its status file, so an "idle" seen here has its Stop read below.
            self.wake.changed.clear()
            self.core.refresh()
            self.last_refresh = self.clock()
        fresh = self.wake.read()
        self.core.board.apply_events(fresh)
        for event in fresh:
            watch = follow(watch, event)
        if refresh and watch.outcome is None:
            try:
                watch = judge(watch, self.core.view(self.slug))
            except NotFoundError:
                watch = judge(watch, None)
        return watch, fresh

    def wait(self, deadline: float) -> None:
        """Until something changes, the next fallback refresh, or ``deadline``."""
        now = self.clock()
        self.wake.wait(min(deadline - now, FALLBACK_REFRESH - (now - self.last_refresh)))


def _ready_for_prompt(config: config_mod.Config, core: Core, wake: Wakeups, slug: str,
                      seconds: float, unseen: str) -> tuple[PaneSession, SessionView]:
    """Start following a turn: the events up to where ``wake``'s tail starts, then the
    checks that make typing safe (not busy, no dialog, its composer on screen, its hooks
    reported to cbos; ``unseen`` says what is lost without them)."""
    core.refresh(wake.events.backlog)
    session = core.session(slug)
    view = core.view(slug)
    problem = chat_blocker(view)
    if problem is not None:
        raise RefusedError(problem)
    if view.state is State.IDLE:
        # A claude that just started may not read its terminal yet: keys typed now
        # could be lost. Its composer on screen says it is ready.
        late = wait_composer(core.tmux, {slug: session.pane.pane_id},
                             min(max(seconds, 0.0), READY_TIMEOUT))
        if late:
            raise RefusedError(f"{slug} is not ready for a prompt: {late[slug]}")
    if not reports_hooks(config, core, slug):
        raise RefusedError(
            f"{slug} does not report hook events to cbos (claude was started outside cbos), "
            f"so {unseen}; run `cbos hooks install` and restart it")
    return session, view


def chat(config: config_mod.Config, tmux: Tmux, slug: str, text: str, timeout: float,
         clock: Callable[[], float] = time.monotonic) -> ChatResult:
    """Type ``text`` into the session, wait for that turn's end, and return the reply."""
    sessions.check_text(text)
    if not text.strip():
        raise UsageError("the prompt is empty; give the text to send")
    deadline = clock() + timeout
    core = Core(config, tmux)
    with Wakeups(config, core.status_dir) as wake:
        session, view = _ready_for_prompt(config, core, wake, slug, deadline - clock(),
                                          "its reply cannot be seen")
        before = (transcript.find(view.claude_session_id) if view.claude_session_id
                  else None)
        offset = _size(before)
        core.board.apply_events(wake.read())  # what came before the send is not ours
        status_file = f"{view.pid}.json"  # only the watched claude's own counts
        start = clock()
        core.send_to(session.pane.pane_id, slug, view, text)
        watch = TurnWatch(pane=session.pane.pane_id, claude_pid=view.pid)
        follower = _TurnFollower(core, wake, slug, status_file, clock)
        while True:
            watch, _ = follower.step(watch)
            if watch.outcome is not None:
                break
            if clock() >= deadline:
                raise ChatTimeout(_timeout_message(slug, timeout, watch))
            follower.wait(deadline)
        duration = clock() - start
    return _result(config, slug, watch, duration, before, offset)


def _timeout_message(slug: str, timeout: float, watch: TurnWatch) -> str:
    if watch.started is None:
        return (f"{slug}: claude did not report the prompt within {timeout:g}s (no "
                f"UserPromptSubmit hook event); see `cbos buffer {slug}` and "
                "`cbos hooks status`")
    return (f"{slug}: no reply within {timeout:g}s; the turn goes on (see `cbos buffer "
            f"{slug}`; `cbos interrupt {slug}` stops it)")


def _result(config: config_mod.Config, slug: str, watch: TurnWatch, duration: float,
            before: Path | None, offset: int) -> ChatResult:
    outcome = watch.outcome
    assert outcome is not None
    if outcome.kind == "exited":
        raise ClaudeExited(f"{slug}: {outcome.text} before replying; `cbos resume {slug}` "
                           "brings the conversation back")
    if outcome.kind == "permission":
        raise PermissionNeeded(
            f"{slug} {outcome.text} and waits for an answer; answer it with `cbos answer "
            f"{slug} CHOICE` (or attach), then read the reply with `cbos history {slug}`")
    if outcome.kind == "failed":
        raise TurnFailed(f"{slug}: the turn failed: {outcome.text}")
    if outcome.kind == "interrupted":
        raise TurnFailed(f"{slug}: the turn ended without a reply ({outcome.text})")
    stop = outcome.event
    assert stop is not None
    session_id = stop.session_id
    hint = stop.payload.get("transcript_path")
    path = transcript.find(session_id, hint if isinstance(hint, str) else None)
    usage, text = None, ""
    if path is not None:
        start = offset if before is not None and path == before else 0
        with contextlib.suppress(OSError):
            usage, text = transcript.turn_usage(transcript.entries(path, start))
        registry.record(config, slug, transcript_path=str(path))
    reply = outcome.text or text
    return ChatResult(slug, reply, duration, session_id, str(path or ""), usage)


# -- waiting for a new claude --------------------------------------------------------------


def wait_composer(tmux: Tmux, panes: Mapping[str, str], timeout: float,
                  ) -> dict[str, str]:
    """Wait until each pane (by slug) shows Claude's empty composer; {slug: problem} for
    those that did not (claude exited, the pane vanished, a dialog came first, or time ran
    out). Startup dialogs (workspace trust, a project's MCP servers) fire no hook: only
    the screen tells, and waiting longer would not help."""
    pending = dict(panes)
    problems: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while pending:
        listing = {pane.pane_id: pane for pane in tmux.list_panes()}
        for slug, pane_id in list(pending.items()):
            pane = listing.get(pane_id)
            if pane is None or pane.dead:
                problems[slug] = ("its tmux pane went away" if pane is None else
                                  f"claude exited at start (see `cbos buffer {slug}`)")
                del pending[slug]
                continue
            try:
                screen = tmux.capture(pane_id, colours=False)
            except TmuxError:
                continue
            if composer_shown(screen):
                del pending[slug]
            elif (dialog := parse_dialog(screen)) is not None:
                problems[slug] = (f"a dialog waits before its prompt ({dialog.question}); "
                                  f"answer it with `cbos answer {slug} CHOICE` or attach")
                del pending[slug]
        if not pending:
            break
        if time.monotonic() >= deadline:
            for slug in pending:
                problems[slug] = (f"no prompt on screen within {timeout:g}s (a dialog may be "
                                  f"open: see `cbos buffer {slug}`)")
            break
        time.sleep(READY_POLL)  # a bounded start-up wait, not a steady-state poll
    return problems


# -- resume and fork ------------------------------------------------------------------------


@dataclass(frozen=True)
class ResumeTarget:
    """Which Claude conversation a slug had, and where it ran."""

    session_id: str
    path: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] | None = None


def latest_event(events: Iterable[HookEvent], slug: str) -> HookEvent | None:
    """The newest event of claude started as ``slug`` that names a conversation."""
    found = None
    for event in events:
        if event.slug == slug and event.session_id:
            found = event
    return found


def conversation_of(slug: str, view_id: str | None, pane_path: str | None,
                    entry: registry.Entry | None, event: HookEvent | None,
                    ) -> ResumeTarget | None:
    """Pick the conversation to continue: the live board's id, else the newer of what the
    sessions file and the events file last said (the events win when cbos was not running
    to see a /clear). The path is where cbos started it, else the pane's or the event's."""
    session_id = view_id or ""
    if not session_id:
        dated = []
        if entry is not None and entry.session_id:
            dated.append((entry.updated, entry.session_id))
        if event is not None:
            dated.append((event.ts, event.session_id))
        session_id = max(dated)[1] if dated else ""
    if not session_id:
        return None
    cwd = event.payload.get("cwd") if event is not None else None
    path = ((entry.path if entry is not None else "") or pane_path
            or (cwd if isinstance(cwd, str) else ""))
    if not path:
        return None
    return ResumeTarget(session_id, path, entry.args if entry is not None else (),
                        dict(entry.env) if entry is not None else {})


def _loaded(config: config_mod.Config, tmux: Tmux) -> tuple[Core, list[HookEvent]]:
    """A Core as `Core.load` makes it, keeping the events it read."""
    core = Core(config, tmux)
    events: list[HookEvent] = []

    def read() -> list[HookEvent]:
        events.extend(read_recent(config))
        return events

    core.refresh(read)  # status files first, then events (Core.load says why)
    return core, events


def _conversation(config: config_mod.Config, core: Core, events: list[HookEvent],
                  slug: str) -> ResumeTarget:
    live = core.board.sessions.get(slug)
    view = core.view(slug) if live is not None else None
    entry = registry.load(config).get(slug)
    event = latest_event(events, slug)
    if live is None and entry is None and event is None:
        raise NotFoundError(f"cbos knows no session named {slug!r}; see `cbos ls`")
    found = conversation_of(slug, view.claude_session_id if view else None,
                            live.path if live is not None else None, entry, event)
    if found is None:
        raise CbosError(f"cbos does not know which Claude conversation {slug} had (it never "
                        f"saw one start); start a new session with `cbos new`")
    if not Path(found.path).is_dir():
        raise CbosError(f"{slug}'s project directory {found.path} is gone; restore it, or "
                        "start a new session elsewhere")
    return found


def _claude_args(config: config_mod.Config, extra: Sequence[str]) -> list[str]:
    if hooks.installed_globally(config):
        return list(extra)
    return ["--settings", str(hooks.settings_for_session(config)), *extra]


def respawn(config: config_mod.Config, tmux: Tmux, pane_id: str, slug: str, path: str,
            args: Sequence[str], env: Mapping[str, str]) -> None:
    """Start claude again in a dead pane, in place (same pane id, same log).

    It can never kill a claude that came back in the meantime (see :meth:`Tmux.respawn`).
    """
    argv = sessions.claude_argv(config, _claude_args(config, args))
    full_env = {**config.claude_env, **env, "CBOS_SESSION": slug}
    config_mod.ensure_dirs(config)
    log = config.log_path(slug)
    config_mod.touch_private(log)
    tmux.respawn(pane_id, path, "exec " + shlex.join(argv), full_env)
    pane = tmux.pane(pane_id)
    if pane is not None and not pane.piped:
        # tmux 3.3a keeps a pane's pipe through its death and respawn; re-arm it where not.
        tmux.pipe(pane_id, log)


@dataclass(frozen=True)
class Resumed:
    slug: str
    session_id: str
    how: str  # "respawned" (in the same pane) or "recreated" (a new tmux session)


def resume(config: config_mod.Config, tmux: Tmux, slug: str) -> Resumed:
    """Restart claude with ``--resume <its conversation>`` where the session was."""
    sessions.validate_slug(slug)
    core, events = _loaded(config, tmux)
    live = core.board.sessions.get(slug)
    if live is not None and live.claude is not None:
        raise RefusedError(f"{slug}: claude is still running (pid {live.claude.pid}); there "
                           "is nothing to resume")
    found = _conversation(config, core, events, slug)
    args = ["--resume", found.session_id, *found.args]
    env = dict(found.env or {})
    if live is not None and not live.pane.dead:
        raise RefusedError(
            f"{slug}: claude is not running, but its pane still runs "
            f"{live.pane.current_command or 'something'}; type `claude --resume "
            f"{found.session_id}` there, or `cbos kill {slug}` and resume again")
    if live is not None:
        respawn(config, tmux, live.pane.pane_id, slug, found.path, args, env)
        registry.record_start(config, slug, Path(found.path), args, env)
        return Resumed(slug, found.session_id, "respawned")
    core.create(Path(found.path), slug, args, env)
    return Resumed(slug, found.session_id, "recreated")


def fork(config: config_mod.Config, tmux: Tmux, slug: str, new_slug: str) -> Resumed:
    """A new session that continues ``slug``'s conversation as a branch (a new id)."""
    sessions.validate_slug(slug)
    sessions.validate_slug(new_slug)
    core, events = _loaded(config, tmux)
    found = _conversation(config, core, events, slug)
    args = ["--resume", found.session_id, "--fork-session", *found.args]
    core.create(Path(found.path), new_slug, args, dict(found.env or {}))
    return Resumed(new_slug, found.session_id, "forked")


# -- history ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class History:
    slug: str
    session_id: str
    transcript_path: str
    messages: list[transcript.Message]

    def to_json(self) -> dict[str, Any]:
        return {"slug": self.slug, "session_id": self.session_id,
                "transcript_path": self.transcript_path,
                "messages": [m.to_json() for m in self.messages]}


def history(config: config_mod.Config, tmux: Tmux, slug: str, full: bool = False) -> History:
    """The conversation of a session (live, or one cbos remembers) from Claude's transcript."""
    sessions.validate_slug(slug)
    core, events = _loaded(config, tmux)
    found = _conversation(config, core, events, slug)
    hint = next((e.payload.get("transcript_path") for e in reversed(events)
                 if e.session_id == found.session_id and e.payload.get("transcript_path")),
                None)
    entry = registry.load(config).get(slug)
    if not isinstance(hint, str) and entry is not None and \
            entry.session_id == found.session_id:
        hint = entry.transcript_path or None
    path = transcript.find(found.session_id, hint if isinstance(hint, str) else None)
    if path is None:
        raise CbosError(f"{slug}: no transcript for conversation {found.session_id} yet "
                        "(Claude writes it with the first prompt)")
    try:
        messages = transcript.messages(transcript.entries(path), full=full)
    except OSError as exc:
        raise CbosError(f"cannot read {path}: {exc.strerror}") from None
    return History(slug, found.session_id, str(path), messages)


# -- delegation: one turn followed under a preset's limits ----------------------------------

ANSWER_TIMEOUT = 10.0  # for a dialog a hook announced to be drawn, and then to close
REPRESS_AFTER = 1.5  # Claude drops keys in a dialog's first second: press again after this
SCREEN_POLL = 0.1


def delegate(config: config_mod.Config, tmux: Tmux, path: Path, task: str, *,
             slug: str | None = None, preset_name: str = delegation.DEFAULT_PRESET,
             model: str | None = None, limits: delegation.Limits | None = None,
             context: str | None = None, group: str | None = None,
             env: Mapping[str, str] | None = None) -> delegation.Delegation:
    """Start a session under the preset, send ``task``, follow it under ``limits``."""
    sessions.check_text(task)
    if not task.strip():
        raise UsageError("the task is empty; say what the session should do")
    limits = limits if limits is not None else delegation.Limits()
    args = delegation.claude_args(preset_name, model, context)
    full_env = delegation.group_env(env, group)
    core = Core(config, tmux)
    started = time.monotonic()
    session = core.create(path, slug, args, full_env)
    problem = wait_composer(tmux, {session.slug: session.pane.pane_id},
                            min(READY_TIMEOUT, limits.timeout))
    record = delegation.Record(preset_name, limits, str(path.resolve()))
    delegation.save_record(config, session.slug, record)
    if problem:
        return delegation.Delegation(
            session.slug, "", "failed", "", 0.0, 0, time.monotonic() - started,
            (f"{session.slug} started, but {problem[session.slug]}; the task was not "
             f"sent: `cbos continue {session.slug} TASK` sends it under the same limits",))
    return run_turn(config, tmux, session.slug, task, record, started=started)


def continue_(config: config_mod.Config, tmux: Tmux, slug: str, text: str,
              ) -> delegation.Delegation:
    """Send a follow-up to a delegated session under its recorded (cumulative) limits."""
    sessions.validate_slug(slug)
    sessions.check_text(text)
    if not text.strip():
        raise UsageError("the text is empty; say what the session should do next")
    record = delegation.load_records(config).get(slug)
    if record is None:
        raise NotFoundError(f"{slug} was not started by `cbos delegate`, so it has no limits "
                            f"to continue under; use `cbos chat {slug} TEXT` instead")
    return run_turn(config, tmux, slug, text, record)


# -- following one turn under limits --------------------------------------------------------


@dataclass
class _LimitedTurn:
    """The state of one followed turn (mutable: one loop owns it)."""

    slug: str
    record: delegation.Record
    tally: delegation.Tally
    watch: TurnWatch
    session_id: str = ""
    violations: list[str] = field(default_factory=list)
    status: str | None = None
    reply: str = ""


def run_turn(config: config_mod.Config, tmux: Tmux, slug: str, text: str,
             record: delegation.Record, started: float | None = None,
             clock: Callable[[], float] = time.monotonic) -> delegation.Delegation:
    limits = record.limits
    start = started if started is not None else clock()
    deadline = clock() + limits.timeout
    core = Core(config, tmux)
    with Wakeups(config, core.status_dir) as wake:
        session, view = _ready_for_prompt(config, core, wake, slug, deadline - clock(),
                                          "its limits cannot be held")
        turn = _LimitedTurn(slug, record, delegation.Tally(),
                            TurnWatch(pane=session.pane.pane_id, claude_pid=view.pid),
                            session_id=view.claude_session_id or record.session_id)
        if turn.session_id:
            turn.tally.path = transcript.find(turn.session_id)
        if turn.tally.path is not None:
            wake.watch_file(turn.tally.path)
            turn.tally.update()
        if _over_limits(turn):  # a continue already over its limits sends nothing
            return _delegation_result(turn, start, clock)
        core.board.apply_events(wake.read())  # what came before the send is not ours
        status_file = f"{view.pid}.json"  # only the watched claude's own counts
        core.send_to(session.pane.pane_id, slug, view, text)
        _follow_limited(core, wake, status_file, turn, deadline, clock)
        if turn.session_id and turn.session_id != record.session_id:
            delegation.save_record(config, slug,
                                   replace(record, session_id=turn.session_id))
        return _delegation_result(turn, start, clock)


def _over_limits(turn: _LimitedTurn) -> bool:
    cost, model = turn.tally.cost()
    found = delegation.breach(turn.record.limits, cost, turn.tally.turns, model)
    if found is None:
        return False
    turn.status, violation = found
    turn.violations.append(violation)
    turn.reply = turn.tally.text
    return True


def _follow_limited(core: Core, wake: Wakeups, status_file: str, turn: _LimitedTurn,
                    deadline: float, clock: Callable[[], float]) -> None:
    pane = turn.watch.pane
    follower = _TurnFollower(core, wake, turn.slug, status_file, clock)
    while True:
        turn.watch, fresh = follower.step(turn.watch)
        if turn.tally.path is None:
            found = delegation.transcript_of(fresh, pane)
            if found is not None:
                turn.tally.path = found
                wake.watch_file(found)
        if turn.watch.started is not None and turn.watch.started.session_id:
            turn.session_id = turn.watch.started.session_id
        turn.tally.update()
        if _over_limits(turn):
            _stop_turn(core, turn)
            return
        if turn.watch.outcome is not None:
            _settle(core, turn)
            return
        now = clock()
        if now >= deadline:
            turn.status = "timeout"
            turn.violations.append(f"no reply within {turn.record.limits.timeout:g}s")
            turn.reply = turn.tally.text
            _stop_turn(core, turn)
            return
        follower.wait(deadline)


def _stop_turn(core: Core, turn: _LimitedTurn) -> None:
    """Ctrl+C in the pane: the turn stops, the session stays for a person to look at."""
    try:
        core.interrupt(turn.slug)
    except CbosError as exc:
        turn.violations.append(f"could not interrupt: {exc}")


def _settle(core: Core, turn: _LimitedTurn) -> None:
    outcome = turn.watch.outcome
    assert outcome is not None
    turn.tally.update()
    if outcome.kind == "reply":
        turn.status, turn.reply = "done", outcome.text or turn.tally.text
        return
    if outcome.kind == "permission":
        _beyond_preset(core, turn, outcome)
        return
    turn.status = "failed"
    turn.reply = turn.tally.text
    turn.violations.append({"exited": "claude exited before replying",
                            "interrupted": "the turn ended without a reply",
                            }.get(outcome.kind, "the turn failed") + f": {outcome.text}")


def _beyond_preset(core: Core, turn: _LimitedTurn, outcome: TurnOutcome) -> None:
    payload = outcome.event.payload if outcome.event is not None else {}
    tool_input = payload.get("tool_input")
    if turn.record.preset == "plan" and payload.get("tool_name") == "ExitPlanMode":
        # Plan mode's end: the plan is the answer; Esc declines carrying it out (as the
        # recording answered it). The hook's tool_input is empty in 2.1.328: the plan is
        # read from the transcript's tool call.
        plan = tool_input.get("plan") if isinstance(tool_input, Mapping) else None
        turn.tally.update()
        turn.status = "done"
        turn.reply = plan if isinstance(plan, str) and plan else (turn.tally.plan
                                                                 or turn.tally.text)
        _answer_dialog(core, turn, "esc")
        return
    turn.reply = turn.tally.text
    if turn.record.limits.on_permission == "wait":
        turn.status = "needs_permission"
        turn.violations.append(f"{outcome.text}; left for a person (`cbos answer "
                               f"{turn.slug} CHOICE`)")
        return
    turn.status = "denied"
    turn.violations.append(f"{outcome.text}: outside preset {turn.record.preset}, answered "
                           "no")
    _answer_dialog(core, turn, "no")


def _answer_dialog(core: Core, turn: _LimitedTurn, choice: str) -> None:
    """Answer the dialog once it is drawn (a hook can announce it first), then see it
    close; press again only if it is still open well after the last press (Claude drops
    keys in a dialog's first second), so a late redraw never gets a second answer that
    would land in the composer."""
    deadline = time.monotonic() + ANSWER_TIMEOUT
    pressed: float | None = None
    while time.monotonic() < deadline:
        core.refresh()
        try:
            view = core.view(turn.slug)
        except NotFoundError:
            return
        dialog = core._dialog_on_screen(turn.watch.pane)
        if dialog is None and pressed is not None:
            return
        if dialog is not None and (pressed is None
                                   or time.monotonic() - pressed >= REPRESS_AFTER):
            word = "esc" if choice == "no" and dialog.kind == "question" else choice
            core.answer_to(turn.watch.pane, turn.slug, view, word)
            pressed = time.monotonic()
        time.sleep(SCREEN_POLL)  # the screen has no event: a bounded look, then give up
    turn.violations.append(f"could not answer the dialog with {choice!r}; see `cbos buffer "
                           f"{turn.slug}`")


def _delegation_result(turn: _LimitedTurn, start: float, clock: Callable[[], float],
                       ) -> delegation.Delegation:
    cost, _ = turn.tally.cost()
    return delegation.Delegation(turn.slug, turn.session_id, turn.status or "failed",
                                 turn.reply, cost, turn.tally.turns, clock() - start,
                                 tuple(turn.violations))


# -- the objects -----------------------------------------------------------------------------


def _states(states: str | State | Iterable[str | State]) -> set[str]:
    items = [states] if isinstance(states, str | State) else list(states)
    names = {State(str(s).lower()).value for s in items}  # ValueError names a bad one
    if not names:
        raise UsageError("name at least one state to wait for")
    return names


class Cbos:
    """cbos on one tmux server: ``Cbos()`` is the configured one (``CBOS_TMUX_SOCKET`` or
    tmux's default), ``Cbos("name")`` the server of ``tmux -L name``.

    Every call looks afresh (one tmux listing, the new hook events): nothing goes stale,
    and nothing needs closing.
    """

    def __init__(self, socket_name: str | None = None, *,
                 config: config_mod.Config | None = None) -> None:
        cfg = config if config is not None else config_mod.load()
        if socket_name is not None:
            cfg = cfg.replace(tmux_socket=socket_name)
        self.config = cfg
        self.tmux = Tmux(cfg.tmux_socket)

    def core(self) -> Core:
        """A Core that has read the events and looked at tmux just now."""
        return Core(self.config, self.tmux).load()

    def sessions(self) -> list[Session]:
        return [Session(self, view.slug) for view in self.core().snapshot().sessions]

    def get(self, slug: str) -> Session:
        self.core().session(slug)  # NotFoundError, with close names, for a wrong slug
        return Session(self, slug)

    def new(self, path: str | os.PathLike[str], slug: str | None = None, *,
            args: Sequence[str] = (), env: Mapping[str, str] | None = None,
            system_prompt: str | None = None, group: str | None = None,
            wait: bool = True, timeout: float = READY_TIMEOUT) -> Session:
        """Start claude in ``path`` (a tmux session named ``slug``; default from git or the
        directory), with ``system_prompt`` appended to Claude's and a ``group`` label.
        With ``wait``, return once it shows its composer, so the first prompt is not typed
        before claude reads its terminal."""
        core = Core(self.config, self.tmux)
        args = [*args, *delegation.system_prompt_args(system_prompt)]
        env = delegation.group_env(env, group)
        session = core.create(Path(os.path.expanduser(path)), slug, args, env)
        if wait:
            problem = wait_composer(self.tmux, {session.slug: session.pane.pane_id}, timeout)
            if problem:
                raise CbosError(f"{session.slug} started, but {problem[session.slug]}")
        return Session(self, session.slug)

    def resume(self, slug: str, wait: bool = True, timeout: float = READY_TIMEOUT) -> Session:
        """Bring back a session whose claude exited or whose tmux session is gone."""
        resume(self.config, self.tmux, slug)
        return self._ready(slug, wait, timeout)

    def fork(self, slug: str, new_slug: str, wait: bool = True,
             timeout: float = READY_TIMEOUT) -> Session:
        """A new session ``new_slug`` continuing ``slug``'s conversation as a branch."""
        fork(self.config, self.tmux, slug, new_slug)
        return self._ready(new_slug, wait, timeout)

    def delegate(self, path: str | os.PathLike[str], task: str, *, slug: str | None = None,
                 preset: str = delegation.DEFAULT_PRESET, model: str | None = None,
                 max_cost: float | None = None, max_turns: int | None = None,
                 timeout: float = delegation.DEFAULT_TIMEOUT, context: str | None = None,
                 on_permission: str = "deny", group: str | None = None,
                 ) -> delegation.Delegation:
        """Run ``task`` in a new session under a preset and limits (see
        :mod:`cbos.delegation`); the result's ``session.continue_(text)`` follows up under
        the same limits. Never raises for a breach: read ``status``."""
        limits = delegation.Limits(max_cost, max_turns, timeout, on_permission)
        result = delegate(self.config, self.tmux, Path(os.path.expanduser(path)), task,
                          slug=slug, preset_name=preset, model=model, limits=limits,
                          context=context, group=group)
        return replace(result, session=Session(self, result.slug))

    def group(self, name: str) -> Group:
        """The sessions started with this group label."""
        return Group(self, delegation.check_group(name))

    def _ready(self, slug: str, wait: bool, timeout: float) -> Session:
        if wait:
            pane = self.core().session(slug).pane.pane_id
            problem = wait_composer(self.tmux, {slug: pane}, timeout)
            if problem:
                raise CbosError(f"{slug} started, but {problem[slug]}")
        return Session(self, slug)


class Session:
    """One session by slug; every property and call reads the current state."""

    def __init__(self, cbos: Cbos, slug: str) -> None:
        self.cbos = cbos
        self.slug = slug

    def __repr__(self) -> str:
        return f"Session({self.slug!r})"

    @property
    def view(self) -> SessionView:
        """State, reason, pid, conversation id, ... as `cbos ls --json` shows them."""
        return self.cbos.core().view(self.slug)

    @property
    def state(self) -> State:
        return self.view.state

    def send(self, text: str) -> None:
        """Type ``text`` and Enter (refused while a dialog is open)."""
        self.cbos.core().send(self.slug, sessions.check_text(text))

    def interrupt(self) -> None:
        """Ctrl+C in the pane, as a person would press it."""
        self.cbos.core().interrupt(self.slug)

    def answer(self, choice: str) -> None:
        """Answer the dialog on screen: an option number, yes, no or esc."""
        self.cbos.core().answer(self.slug, choice)

    def kill(self) -> None:
        """End the tmux session (the log and the conversation stay; `resume` brings it back)."""
        self.cbos.core().kill(self.slug)

    def wait(self, states: str | State | Iterable[str | State] = ("waiting",),
             timeout: float | None = None) -> SessionView:
        """Block until the session is in one of ``states``; raises WaitTimeout, or CbosError
        when claude exits first."""
        wanted = _states(states)
        reached = wait_for(Core(self.cbos.config, self.cbos.tmux), self.slug, wanted, timeout)
        if reached is None:
            raise WaitTimeout(f"{self.slug} did not reach {','.join(sorted(wanted))} within "
                              f"{timeout:g}s")
        return reached

    def chat(self, text: str, timeout: float = 600.0) -> str:
        """Send a prompt and return Claude's final reply for that turn.

        Refuses a busy session or one showing a dialog; raises ChatTimeout,
        PermissionNeeded (Claude asks something a script cannot answer for a person),
        ClaudeExited or TurnFailed (API error, interrupt, denied permission).
        """
        return self.chat_result(text, timeout).reply

    def chat_result(self, text: str, timeout: float = 600.0) -> ChatResult:
        """:meth:`chat` with the duration and the turn's tokens and cost."""
        return chat(self.cbos.config, self.cbos.tmux, self.slug, text, timeout)

    def history(self, full: bool = False) -> list[transcript.Message]:
        """The conversation's prompts and replies (with ``full``: tool calls, results, and
        Claude Code's own lines too)."""
        return history(self.cbos.config, self.cbos.tmux, self.slug, full).messages

    def continue_(self, text: str) -> delegation.Delegation:
        """A follow-up to a delegated session under its (cumulative) limits."""
        result = continue_(self.cbos.config, self.cbos.tmux, self.slug, text)
        return replace(result, session=self)

    def usage(self) -> dict[str, Any]:
        """Tokens and cost so far, and the claude process tree's memory and CPU."""
        core = self.cbos.core()
        view = core.view(self.slug)
        return transcript.usage_for(view.claude_session_id, view.pid, core.board.procs)


class Group:
    """Sessions sharing a group label (``cbos new --group``): an agent team to watch and
    stop together."""

    def __init__(self, cbos: Cbos, name: str) -> None:
        self.cbos = cbos
        self.name = name

    def __repr__(self) -> str:
        return f"Group({self.name!r})"

    def slugs(self) -> list[str]:
        core = self.cbos.core()
        return group_members(self.cbos.config, core, self.name)

    def sessions(self) -> list[Session]:
        return [Session(self.cbos, slug) for slug in self.slugs()]

    def status(self) -> dict[str, dict[str, Any]]:
        """Each member's state, reason and usage, by slug (``cbos ls --json``'s fields)."""
        core = self.cbos.core()
        members = group_members(self.cbos.config, core, self.name)
        snapshot = core.snapshot()
        found = {}
        for slug in members:
            view = snapshot.get(slug)
            if view is not None:
                found[slug] = {**view.to_json(),
                               "usage": transcript.usage_for(view.claude_session_id, view.pid,
                                                                 core.board.procs)}
        return found

    def stop_all(self) -> list[str]:
        """End every member's tmux session (logs and conversations stay); their slugs."""
        core = self.cbos.core()
        stopped = []
        for slug in group_members(self.cbos.config, core, self.name):
            with contextlib.suppress(NotFoundError):
                core.kill(slug)
                stopped.append(slug)
        return stopped


def group_members(config: config_mod.Config, core: Core, name: str) -> list[str]:
    """Live sessions whose remembered environment carries this group label."""
    entries = registry.load(config)
    live = [view.slug for view in core.snapshot().sessions]
    return [slug for slug in live
            if (entry := entries.get(slug)) is not None
            and entry.env.get(delegation.GROUP_ENV) == name]
