"""What each session needs from its person: the State, with a reason and a start time.

Three layers, pure where decisions are made:

- :func:`fold` reduces hook events, one at a time, into a :class:`Track` (what the hooks
  said about one claude process in one pane).
- :func:`read_status_file` reads Claude's own ``~/.claude/sessions/<pid>.json``, the only
  signal when no hook fires (a denied permission, Esc; README "Claude's own status file").
- :func:`infer` fuses a Track, the status file, the process table, the pane and the dialog on
  screen (:class:`Signals`) into a :class:`Verdict`.

Facts cited as ``timeline:<scenario>`` come from the recordings of Claude Code 2.1.328 in
``tests/fixtures/claude-code-2.1.328/`` (timeline.md, events_all.jsonl).
"""

from __future__ import annotations

import enum
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from cbos.events import HookEvent
from cbos.procs import Proc, ProcTable

if TYPE_CHECKING:  # annotations only: the status line never reads a dialog
    from cbos.dialog import Dialog


class State(enum.StrEnum):
    WAITING = "waiting"  # the turn ended (or cannot start: not logged in); needs the person
    PERMISSION = "permission"  # Claude asks to approve a tool or answer, or a dialog is open
    THINKING = "thinking"  # prompt submitted, the model is generating, no tool running
    WORKING = "working"  # a tool is running
    IDLE = "idle"  # no turn yet since claude started, or claude is not running in the pane
    EXITED = "exited"  # claude ended and its pane is dead

    @property
    def icon(self) -> str:
        return ICONS[self]


ATTENTION_ORDER: Final = (State.PERMISSION, State.WAITING, State.WORKING, State.THINKING,
                          State.IDLE, State.EXITED)
ICONS: Final[Mapping[State, str]] = MappingProxyType({
    State.WAITING: "●", State.PERMISSION: "⚠", State.THINKING: "◐", State.WORKING: "◑",
    State.IDLE: "○", State.EXITED: "✗",
})

CLOCK_SLACK = 0.02  # seconds: hook timestamps vs the status file's, see _from_hooks
EXITING = "claude is exiting"  # reason prefix once SessionEnd came but the process lives
SETTLED = 2.0  # seconds a status file must have said idle to overrule an open turn
REASON_WIDTH = 72  # longest quoted text in a reason; the rest becomes "…"


# --------------------------------------------------------------------------- the Track


class Phase(enum.StrEnum):
    """Where the main conversation's turn is, as far as the hooks tell."""

    NONE = "none"  # no turn since claude started, /clear or resume
    PROMPTED = "prompted"  # UserPromptSubmit (or a tool finished): the model is generating
    TOOL = "tool"  # PreToolUse without its PostToolUse yet
    STOPPED = "stopped"  # Stop
    FAILED = "failed"  # StopFailure (API error)
    INTERRUPTED = "interrupted"  # PostToolUseFailure with is_interrupt
    COMPACTED = "compacted"  # a manual /compact finished (no UserPromptSubmit/Stop for it)
    ENDED = "ended"  # SessionEnd other than clear: claude is exiting


IN_TURN: Final = frozenset({Phase.PROMPTED, Phase.TOOL})
FINISHED: Final = frozenset({Phase.STOPPED, Phase.FAILED, Phase.INTERRUPTED, Phase.COMPACTED})


@dataclass(frozen=True)
class PendingTool:
    """A tool call PreToolUse announced and no PostToolUse has ended yet."""

    name: str
    input: Mapping[str, Any]
    ts: float
    tool_use_id: str = ""


@dataclass(frozen=True)
class PendingPermission:
    """A permission claude asked for and the person has not answered yet."""

    tool: str  # "" when only a Notification told us (no PermissionRequest)
    input: Mapping[str, Any]
    ts: float
    agent_id: str = ""  # set when a subagent asks
    message: str = ""  # Notification message (auto mode's agent_needs_input)


@dataclass(frozen=True)
class BackgroundTask:
    """A shell or subagent claude left running in the background."""

    id: str
    kind: str  # "shell", "subagent", ...
    description: str


@dataclass(frozen=True)
class Track:
    """Everything the hooks told us about one claude process in one pane."""

    pane: str = ""
    claude_pid: int | None = None
    session_id: str = ""
    start_source: str = ""  # SessionStart source: startup, resume, clear
    started_ts: float | None = None  # SessionStart (startup/resume/clear)
    phase: Phase = Phase.NONE
    since: float = 0.0  # when the phase began
    evidence_ts: float = 0.0  # newest event that set or confirmed the phase (vs status file)
    prompt: str = ""  # the prompt of the current or last turn
    task_summary: str = ""  # <summary> of a <task-notification> turn
    tools: tuple[PendingTool, ...] = ()  # tools started and not finished (parallel calls)
    last_tool: str = ""  # "Bash: echo hi", the last tool that finished
    permission: PendingPermission | None = None
    writing: str = ""  # last line of assistant text streamed in this turn (MessageDisplay)
    last_message: str = ""  # Stop / StopFailure last_assistant_message
    last_stop_ts: float | None = None
    error: str = ""  # StopFailure error
    background: tuple[BackgroundTask, ...] = ()  # running, per the last Stop
    subagents: tuple[str, ...] = ()  # agent ids between SubagentStart and SubagentStop
    compacting: str = ""  # PreCompact trigger ("manual", "auto") until compaction ends
    compact_ts: float | None = None
    end_reason: str = ""  # SessionEnd reason
    last_event: str = ""
    last_event_ts: float = 0.0
    activity_ts: float = 0.0  # newest event that shows claude doing something
    events: int = 0

    @property
    def tool(self) -> PendingTool | None:
        return self.tools[-1] if self.tools else None


_TRACK_FIELDS: Final = frozenset(f.name for f in fields(Track))


def _evolve(track: Track, **changes: Any) -> Track:
    """``dataclasses.replace`` for a Track, without re-running its 28-field ``__init__``.

    fold makes two of these per event and a board folds thousands of events at start-up
    (``cbos ls``, the status line), where ``replace`` was most of the fold's cost. Track has
    no ``__post_init__`` and no slots, so copying its ``__dict__`` is the same object.
    """
    unknown = changes.keys() - _TRACK_FIELDS
    if unknown:
        raise TypeError(f"Track has no field {sorted(unknown)}")
    new = object.__new__(Track)
    new.__dict__.update(track.__dict__, **changes)
    return new


# Events that say nothing about the turn (they fire from outside or at start-up).
_AMBIENT = frozenset({"ConfigChange", "FileChanged", "InstructionsLoaded", "CwdChanged",
                      "PreModelSwitch", "PostModelSwitch", "DirectoryAdded", "Setup"})
# Patterns as text, compiled (and cached by re) on first use: most starts never need them.
_TASK_FIELD = r"(?s)<(task-id|summary|status)>(.*?)</\1>"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _set_phase(track: Track, phase: Phase, ts: float, *, restart: bool = False,
               **changes: Any) -> Track:
    """Enter ``phase`` at ``ts``; staying inside a turn's phase keeps its start time."""
    keep = phase == track.phase and phase in IN_TURN and not restart
    since = track.since if keep else ts
    return _evolve(track, phase=phase, since=since, evidence_ts=max(track.evidence_ts, ts),
                   **changes)


def fold(track: Track | None, event: HookEvent) -> Track:
    """The Track after ``event``. Pure; events arrive in events-file order.

    A different claude pid in the pane starts a new Track (exit_ctrlc: a new claude after
    /exit). Timestamps are not monotonic in the file (timeline:slow_stream has a
    MessageDisplay 4 ms older than the Stop before it), so nothing here sorts by them.
    """
    if (track is None
            or (event.claude_pid is not None and track.claude_pid is not None
                and event.claude_pid != track.claude_pid)
            or (event.pane and track.pane and event.pane != track.pane)):
        track = Track(pane=event.pane, claude_pid=event.claude_pid,
                      session_id=event.session_id, since=event.ts)
    ts, p = event.ts, event.payload
    track = _evolve(
        track, pane=track.pane or event.pane,
        claude_pid=track.claude_pid if track.claude_pid is not None else event.claude_pid,
        session_id=event.session_id or track.session_id,
        last_event=event.name, last_event_ts=max(track.last_event_ts, ts),
        activity_ts=(track.activity_ts if event.name in _AMBIENT
                     else max(track.activity_ts, ts)),
        events=track.events + 1,
    )
    agent = _text(p.get("agent_id"))
    handler = _HANDLERS.get(event.name)
    return handler(track, ts, p, agent) if handler else track


def _session_start(t: Track, ts: float, p: Mapping[str, Any], agent: str) -> Track:
    source = _text(p.get("source"))
    if source == "compact":  # timeline:compact: PreCompact, SubagentStop, SessionStart, PostCompact
        return t
    # startup, resume, clear (a new session_id in the same pid: timeline:clear)
    return _evolve(_reset_turn(t), phase=Phase.NONE, since=ts, evidence_ts=ts,
                   start_source=source or "startup", started_ts=ts, end_reason="",
                   background=(), subagents=(), last_message="", last_stop_ts=None,
                   prompt="", compacting="")


def _session_end(t: Track, ts: float, p: Mapping[str, Any], agent: str) -> Track:
    reason = _text(p.get("reason"))
    if reason == "clear":  # SessionStart(clear) follows at once with the new session_id
        return _evolve(_reset_turn(t), phase=Phase.NONE, since=ts, evidence_ts=ts,
                       start_source="clear", started_ts=ts, last_message="", prompt="")
    return _set_phase(_reset_turn(t), Phase.ENDED, ts, end_reason=reason or "other")


def _reset_turn(t: Track) -> Track:
    return _evolve(t, tools=(), permission=None, writing="", task_summary="", error="",
                   last_tool="")


def _prompt(t: Track, ts: float, p: Mapping[str, Any], agent: str) -> Track:
    if agent:
        return t
    prompt = _text(p.get("prompt"))
    summary, background = "", t.background
    if prompt.lstrip().startswith("<task-notification>"):
        # A background task finished and re-entered as a turn (timeline:bg_bash, agent).
        fields = dict(re.findall(_TASK_FIELD, prompt))
        summary = fields.get("summary", "").strip() or "a background task finished"
        done = fields.get("task-id", "")
        background = tuple(task for task in t.background if task.id != done)
    # restart: a prompt after an Esc (no hook fired) begins a new turn all the same.
    return _set_phase(_reset_turn(t), Phase.PROMPTED, ts, restart=True, prompt=prompt,
                      task_summary=summary, background=background, compacting="")


def _pre_tool(t: Track, ts: float, p: Mapping[str, Any], agent: str) -> Track:
    if agent:  # a subagent's tool: the main turn is unchanged (its Agent tool is pending)
        return t
    tool = PendingTool(_text(p.get("tool_name")), _mapping(p.get("tool_input")), ts,
                       _text(p.get("tool_use_id")))
    return _set_phase(t, Phase.TOOL, ts, tools=(*t.tools, tool), writing="")


def _permission(t: Track, ts: float, p: Mapping[str, Any], agent: str) -> Track:
    # ~0.1 s after PreToolUse, no tool_use_id (timeline:write_allow, ask_user).
    ask = PendingPermission(_text(p.get("tool_name")), _mapping(p.get("tool_input")), ts,
                            agent)
    if agent:
        return _evolve(t, permission=ask, evidence_ts=max(t.evidence_ts, ts))
    phase = t.phase if t.phase in IN_TURN else Phase.TOOL
    return _set_phase(t, phase, ts, permission=ask)


def _post_tool(t: Track, ts: float, p: Mapping[str, Any], agent: str) -> Track:
    if agent:
        if t.permission is not None and t.permission.agent_id == agent:
            return _evolve(t, permission=None, evidence_ts=max(t.evidence_ts, ts))
        return t
    name, use_id = _text(p.get("tool_name")), _text(p.get("tool_use_id"))
    done = next((x for x in reversed(t.tools) if use_id and x.tool_use_id == use_id),
                next((x for x in reversed(t.tools) if x.name == name), None))
    tools = tuple(x for x in t.tools if x is not done)
    last = _tool_line(name, _mapping(p.get("tool_input")))
    if p.get("is_interrupt") is True:  # not recorded; Esc on a tool ends the turn
        return _set_phase(_reset_turn(t), Phase.INTERRUPTED, ts, last_tool=last)
    permission = t.permission if t.permission is not None and t.permission.agent_id else None
    phase = Phase.TOOL if tools else Phase.PROMPTED
    return _set_phase(t, phase, ts, tools=tools, permission=permission, last_tool=last)


def _post_batch(t: Track, ts: float, p: Mapping[str, Any], agent: str) -> Track:
    # timeline:deny_rule: PreToolUse then PostToolBatch with no PostToolUse at all.
    if agent or t.phase not in IN_TURN:
        return t
    return _set_phase(t, Phase.PROMPTED, ts, tools=(), permission=None)


def _denied(t: Track, ts: float, p: Mapping[str, Any], agent: str) -> Track:
    # PermissionDenied (auto mode's classifier; not recorded): the model goes on.
    return _post_batch(t, ts, p, agent)


def _notification(t: Track, ts: float, p: Mapping[str, Any], agent: str) -> Track:
    kind, message = _text(p.get("notification_type")), _text(p.get("message"))
    if kind in ("permission_prompt", "agent_needs_input"):
        # permission_prompt: 6.4 s after PermissionRequest, only while it is still open.
        # agent_needs_input: auto mode's dialog, which has no PermissionRequest (README).
        ask = t.permission
        if ask is None:
            tool = t.tool
            ask = PendingPermission(tool.name if tool else "", tool.input if tool else {}, ts,
                                    message=message if kind == "agent_needs_input" else "")
        phase = t.phase if t.phase in IN_TURN else Phase.TOOL
        return _set_phase(t, phase, ts, permission=ask)
    if kind == "idle_prompt" and t.phase in IN_TURN and t.permission is None:
        # Comes ~5 s after Stop; seen mid-turn it means the Stop never reached us.
        return _set_phase(_reset_turn(t), Phase.STOPPED, ts, last_stop_ts=ts)
    return t


def _message_display(t: Track, ts: float, p: Mapping[str, Any], agent: str) -> Track:
    # Streams only assistant text, and may land after its Stop (timeline:slow_stream).
    if agent or t.phase != Phase.PROMPTED:
        return t
    lines = [line.strip() for line in _text(p.get("delta")).splitlines() if line.strip()]
    return _evolve(t, writing=lines[-1]) if lines else t


def _stop(t: Track, ts: float, p: Mapping[str, Any], agent: str) -> Track:
    if agent:
        return t
    running = tuple(
        BackgroundTask(_text(x.get("id")), _text(x.get("type")), _text(x.get("description")))
        for x in p.get("background_tasks") or () if isinstance(x, Mapping)
        and x.get("status", "running") == "running")
    return _set_phase(_reset_turn(t), Phase.STOPPED, ts, last_stop_ts=ts, background=running,
                      last_message=_text(p.get("last_assistant_message")), compacting="")


def _stop_failure(t: Track, ts: float, p: Mapping[str, Any], agent: str) -> Track:
    return _set_phase(_reset_turn(t), Phase.FAILED, ts, last_stop_ts=ts,
                      error=_text(p.get("error")) or "unknown", compacting="",
                      last_message=_text(p.get("last_assistant_message")))


def _subagent_start(t: Track, ts: float, p: Mapping[str, Any], agent: str) -> Track:
    return _evolve(t, subagents=(*t.subagents, agent)) if agent else t


def _subagent_stop(t: Track, ts: float, p: Mapping[str, Any], agent: str) -> Track:
    # Never ends the main turn (timeline:agent; the compaction agent too, agent_type "").
    return _evolve(t, subagents=tuple(a for a in t.subagents if a != agent),
                   background=tuple(b for b in t.background if b.id != agent))


def _pre_compact(t: Track, ts: float, p: Mapping[str, Any], agent: str) -> Track:
    return _evolve(t, compacting=_text(p.get("trigger")) or "manual", compact_ts=ts,
                   evidence_ts=max(t.evidence_ts, ts))


def _post_compact(t: Track, ts: float, p: Mapping[str, Any], agent: str) -> Track:
    t = _evolve(t, compacting="", evidence_ts=max(t.evidence_ts, ts))
    if t.phase in IN_TURN:  # auto compaction inside a turn: the turn goes on
        return t
    return _set_phase(t, Phase.COMPACTED, ts)


def _elicitation(t: Track, ts: float, p: Mapping[str, Any], agent: str) -> Track:
    # An MCP server asks the person for input (not recorded): a dialog is open.
    server = _text(p.get("mcp_server_name")) or "an MCP server"
    ask = PendingPermission("", {}, ts, agent, message=f"{server} asks for input")
    return _evolve(t, permission=ask, evidence_ts=max(t.evidence_ts, ts))


def _elicitation_result(t: Track, ts: float, p: Mapping[str, Any], agent: str) -> Track:
    if t.permission is not None and not t.permission.tool:
        return _evolve(t, permission=None, evidence_ts=max(t.evidence_ts, ts))
    return t


_HANDLERS: Final = {
    "SessionStart": _session_start,
    "SessionEnd": _session_end,
    "UserPromptSubmit": _prompt,
    "PreToolUse": _pre_tool,
    "PermissionRequest": _permission,
    "PostToolUse": _post_tool,
    "PostToolUseFailure": _post_tool,
    "PostToolBatch": _post_batch,
    "PermissionDenied": _denied,
    "Notification": _notification,
    "MessageDisplay": _message_display,
    "Stop": _stop,
    "StopFailure": _stop_failure,
    "SubagentStart": _subagent_start,
    "SubagentStop": _subagent_stop,
    "PreCompact": _pre_compact,
    "PostCompact": _post_compact,
    "Elicitation": _elicitation,
    "ElicitationResult": _elicitation_result,
}


# --------------------------------------------------------------------- the status file


@dataclass(frozen=True)
class StatusFile:
    """Claude's ``sessions/<pid>.json`` (session_pidfile_*.json); undocumented, read leniently."""

    pid: int
    session_id: str
    cwd: str
    status: str  # idle, busy, waiting, shell
    waiting_for: str | None  # "permission prompt", "input needed", "dialog open"
    tmux: str | None  # "session:@window.%pane"
    proc_start: str | None  # field 22 of /proc/<pid>/stat, as Claude wrote it
    status_updated_at: float | None  # seconds (the file has milliseconds)
    started_at: float | None = None  # seconds


_MAX_STATUS_BYTES = 1 << 16


def _ms(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    return float(value) / 1000.0


def read_status_file(path: Path) -> StatusFile | None:
    """The status file at ``path``; ``None`` if missing, partial, or not what we know."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(_MAX_STATUS_BYTES + 1)
        if len(raw) > _MAX_STATUS_BYTES:
            return None
        data = json.loads(raw)
    except (OSError, ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if not isinstance(data, dict):
        return None
    pid, session_id, status = data.get("pid"), data.get("sessionId"), data.get("status")
    if (isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0
            or not isinstance(session_id, str) or not isinstance(status, str) or not status):
        return None
    if path.stem.isdigit() and int(path.stem) != pid:
        return None  # <pid>.json naming another pid: not a file we understand
    proc_start = data.get("procStart")
    if isinstance(proc_start, int) and not isinstance(proc_start, bool):
        proc_start = str(proc_start)
    waiting_for, tmux, cwd = data.get("waitingFor"), data.get("tmux"), data.get("cwd")
    return StatusFile(
        pid=pid, session_id=session_id, cwd=cwd if isinstance(cwd, str) else "",
        status=status, waiting_for=waiting_for if isinstance(waiting_for, str) else None,
        tmux=tmux if isinstance(tmux, str) else None,
        proc_start=proc_start if isinstance(proc_start, str) else None,
        status_updated_at=_ms(data.get("statusUpdatedAt")) or _ms(data.get("updatedAt")),
        started_at=_ms(data.get("startedAt")),
    )


def status_dir(environ: Mapping[str, str]) -> Path:
    """Where Claude keeps its status files: ``$CLAUDE_CONFIG_DIR/sessions`` or ~/.claude/."""
    config_dir = environ.get("CLAUDE_CONFIG_DIR", "")
    if config_dir:
        return Path(os.path.expanduser(config_dir)) / "sessions"
    home = environ.get("HOME") or os.path.expanduser("~")
    return Path(home) / ".claude" / "sessions"


def proc_start_ticks(pid: int) -> str | None:
    """Start time of ``pid`` in clock ticks since boot (field 22 of /proc/<pid>/stat)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return stat_start_field(handle.read().decode("utf-8", "replace"))
    except OSError:
        return None


def stat_start_field(stat: str) -> str | None:
    """Field 22 (starttime) of a /proc/<pid>/stat line, as text."""
    # comm (field 2) may hold spaces and parentheses; fields after the last ")" start at 3.
    _, paren, rest = stat.rpartition(")")
    fields = rest.split()
    if not paren or len(fields) < 20 or not fields[19].isdigit():
        return None
    return fields[19]


def status_consistent(sf: StatusFile, claude: Proc) -> bool:
    """Whether ``sf`` belongs to the live ``claude`` process (pid, and procStart vs /proc).

    Without /proc (or without procStart in the file) only the pid can be compared.
    """
    if sf.pid != claude.pid:
        return False
    ticks = proc_start_ticks(claude.pid)
    if ticks is None or sf.proc_start is None:
        return True
    return sf.proc_start == ticks


# ------------------------------------------------------------------------ the signals


@dataclass(frozen=True)
class ToolProc:
    """A process under claude (not a hook): a tool, a background shell, an MCP server."""

    pid: int
    command: str
    started: float = 0.0  # create time (epoch seconds); 0.0 = unknown


_EVAL = r"\beval\s+'((?:[^']|'\\''|'\"'\"')*)'"


def _human_command(proc: Proc, table: ProcTable) -> str:
    """What the person asked for, not Claude's wrapper around it.

    Claude runs Bash as ``/bin/bash -c source …/shell-snapshots/… && … eval '<cmd>' …``
    (README "Process tree"); the command is inside ``eval '…'``, or else it is the
    wrapper's child (ps_tool_running.txt: ``sleep 6`` under the bash wrapper).
    """
    command = proc.command
    if "shell-snapshots" not in command and " eval " not in command:
        return command
    match = re.search(_EVAL, command)
    if match:
        return match.group(1).replace("'\\''", "'").replace("'\"'\"'", "'")
    for pid in table.children.get(proc.pid, ()):
        child = table.procs.get(pid)
        if child is not None:
            return child.command
    return command


def tool_procs(table: ProcTable, claude: Proc) -> tuple[ToolProc, ...]:
    """The tool processes under ``claude`` as :class:`ToolProc`, oldest first."""
    found = [ToolProc(p.pid, _human_command(p, table), p.create_time)
             for p in table.tools_of(claude)]
    return tuple(sorted(found, key=lambda t: (t.started, t.pid)))


@dataclass(frozen=True)
class Signals:
    """Everything :func:`infer` looks at, as plain data gathered at one instant."""

    now: float
    track: Track | None = None
    status: StatusFile | None = None  # only if status_consistent() with the live claude
    claude_pid: int | None = None  # the live claude in the pane; None = not running
    claude_started: float | None = None
    tools: tuple[ToolProc, ...] = ()
    pane_dead: bool = False
    dead_status: int | None = None
    dead_signal: int | None = None
    dead_since: float | None = None
    last_output: float | None = None  # newest output in the pane's log
    dialog: Dialog | None = None  # parse_dialog() of the screen, when it was read
    notice: str = ""  # blocking_notice() of the screen: "not logged in: run /login"
    retry: str = ""  # retry_notice() of the screen: claude retrying the API, mid-turn
    dialog_since: float | None = None  # when cbos first read this dialog off the screen
    stall_seconds: float = 600.0  # 0 disables the stall rule

    @property
    def claude_alive(self) -> bool:
        return self.claude_pid is not None


@dataclass(frozen=True)
class Verdict:
    """A session's state, why, and since when: what infer() decides."""

    state: State
    reason: str
    since: float


# -------------------------------------------------------------------------- reasons


def _clip(text: str, width: int = REASON_WIDTH) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0] if lines else ""
    if len(first) > width or len(lines) > 1:
        return first[:width].rstrip() + "…"
    return first


def _clip_path(path: str, width: int = REASON_WIDTH) -> str:
    """A long path loses its start, never its file name: that is what a person checks."""
    if len(path) <= width:
        return path
    return "…" + path[-(width - 1):]


def _tool_subject(name: str, tool_input: Mapping[str, Any]) -> str:
    """The part of a tool call a person recognises: its command, file, pattern, question."""
    if name == "AskUserQuestion":
        questions = [q for q in tool_input.get("questions") or () if isinstance(q, Mapping)]
        if questions:
            more = f" (+{len(questions) - 1} more)" if len(questions) > 1 else ""
            return _clip(_text(questions[0].get("question"))) + more
    for key in ("file_path", "notebook_path", "path"):
        value = tool_input.get(key)
        if isinstance(value, str) and value.strip():
            return _clip_path(value.strip())
    for key in ("command", "url", "query", "pattern", "description", "prompt", "skill"):
        value = tool_input.get(key)
        if isinstance(value, str) and value.strip():
            return _clip(value)
    for value in tool_input.values():
        if isinstance(value, str) and value.strip():
            return _clip(value)
    return ""


def _tool_line(name: str, tool_input: Mapping[str, Any]) -> str:
    subject = _tool_subject(name, tool_input)
    return f"{name}: {subject}" if subject else name


def _ask_reason(ask: PendingPermission) -> str:
    if ask.tool == "AskUserQuestion":
        return f"asks: {_tool_subject(ask.tool, ask.input) or 'a question'}"
    if ask.tool == "ExitPlanMode":
        return "asks to approve the plan"
    if ask.tool:
        subject = _tool_subject(ask.tool, ask.input)
        reason = f"asks to use {ask.tool}: {subject}" if subject else f"asks to use {ask.tool}"
        return f"{reason} (auto mode can't check it)" if ask.message else reason
    return _clip(ask.message) if ask.message else "needs your permission"


def _dialog_reason(dialog: Dialog) -> str:
    if dialog.kind == "question":
        return f"asks: {_clip(dialog.question)}"
    if dialog.kind == "dialog":
        question = dialog.question
        if len(question) > REASON_WIDTH and "?" in question:
            # Too long for a reason: the sentence that asks ("Is this a directory you
            # created or one you trust?"), without the ones that lead to it.
            asking = [part for part in re.split(r"(?<=[.!?])\s+", question) if "?" in part]
            question = asking[-1]
        return f"dialog: {_clip(question or dialog.title)}"
    return _clip(dialog.question or dialog.title or "a dialog is open")


def _background(track: Track | None) -> str:
    if track is None:
        return ""
    shells = sum(1 for b in track.background if b.kind == "shell")
    agents = len(set(track.subagents) | {b.id for b in track.background if b.kind == "subagent"})
    others = sum(1 for b in track.background if b.kind not in ("shell", "subagent"))
    parts = [f"{n} {word}{'s' if n > 1 else ''}" for n, word in
             ((shells, "shell"), (agents, "agent"), (others, "task")) if n]
    return f"background: {', '.join(parts)} running" if parts else ""


def _joined(*parts: str) -> str:
    return " · ".join(part for part in parts if part)


def _finished_reason(track: Track) -> str:
    if track.phase == Phase.FAILED:
        message = _clip(track.last_message, 48)
        return _joined(api_error_text(track.error, track.last_message),
                       f'"{message}"' if message else "")
    if track.phase == Phase.INTERRUPTED:
        return "interrupted (Esc)"
    if track.phase == Phase.COMPACTED:
        return "compacted"
    message = _clip(track.last_message)
    return f'done: "{message}"' if message else "done"


# StopFailure's ``error`` in words a person acts on (2.1.328 sends these names; the
# recording saw "rate_limit" for a 429 and "unknown" for a 400).
_API_ERRORS: Final = {
    "rate_limit": "rate limited", "overloaded": "overloaded", "overloaded_error": "overloaded",
    "authentication_failed": "credentials expired or invalid: run /login",
    "authentication_error": "credentials expired or invalid: run /login",
    "billing_error": "billing problem: check your plan", "invalid_request": "request rejected",
    "server_error": "server error", "max_output_tokens": "reply too long",
    "unknown": "request failed",
}
_HTTP_CODE = r"(?:API Error:?\s*|\()([1-5]\d\d)\b"


def api_error_text(error: str, message: str) -> str:
    """``API error 429: rate limited``: the HTTP status Claude printed (if any) and the
    cause, from StopFailure's ``error`` and ``last_assistant_message``."""
    match = re.search(_HTTP_CODE, message)
    code = f" {match.group(1)}" if match else ""
    words = _API_ERRORS.get(error, error.replace("_", " ") or "request failed")
    return f"API error{code}: {words}"


_END_REASONS: Final = {"prompt_input_exit": "quit at the prompt", "logout": "logged out",
                       "other": "terminated"}


def _end_text(track: Track | None) -> str:
    if track is None or track.phase != Phase.ENDED:
        return ""
    return _END_REASONS.get(track.end_reason, track.end_reason)


# ------------------------------------------------------------------------ inference


def infer(signals: Signals) -> Verdict:
    """The state a person should see for one session, with its reason and start time.

    A pure function of the signals: cbos started mid-turn or after claude exited gets the
    right state at once from the folded backlog and the current snapshot.
    """
    s = signals
    track = s.track
    if track is not None and track.claude_pid is not None and s.claude_pid is not None \
            and track.claude_pid != s.claude_pid:
        track = None  # the hooks were about an older claude in this pane
    if s.pane_dead:
        return _exited(s, track)
    if not s.claude_alive:
        ended = _end_text(track)
        since = (track.since if track is not None and track.phase == Phase.ENDED
                 else s.dead_since or (track.last_event_ts if track else None) or s.now)
        return Verdict(State.IDLE, _joined("claude not running in the pane",
                                           f"it {ended}" if ended else ""), since)
    sf = s.status if s.status is not None and s.status.pid == s.claude_pid else None
    verdict = _from_hooks(s, track, sf) if track is not None else _without_hooks(s, sf)
    return _retrying(s, _stalled(s, track, _blocked(s, track, verdict)))


def _blocked(s: Signals, t: Track | None, verdict: Verdict) -> Verdict:
    """A session that cannot go on until its person acts (blockers/no-credentials: the
    screen says ``Not logged in · run /login``, every prompt would fail) waits for them,
    whatever the hooks say: it is never "no turn yet". A turn that ended well since
    proves the notice stale."""
    if not s.notice or verdict.state not in (State.IDLE, State.WAITING):
        return verdict
    if t is not None and t.phase not in (Phase.NONE, Phase.FAILED):
        return verdict
    detail = _finished_reason(t) if t is not None and t.phase == Phase.FAILED else ""
    return Verdict(State.WAITING, _joined(s.notice, detail), verdict.since)


def _exited(s: Signals, track: Track | None) -> Verdict:
    if s.dead_status is not None:
        reason = f"claude exited with status {s.dead_status}"
    elif s.dead_signal is not None:
        reason = f"claude was killed by signal {s.dead_signal}"
    else:
        reason = "claude exited"
    ended = _end_text(track)
    if ended:
        reason += f" ({ended})"
    since = s.dead_since or (track.last_event_ts if track is not None and track.phase ==
                             Phase.ENDED else None) or s.now
    return Verdict(State.EXITED, reason, since)


def _process_for(tools: tuple[ToolProc, ...], tool: PendingTool | None, after: float,
                 ) -> ToolProc | None:
    """The process running ``tool`` (matched by its command), or one started after ``after``.

    Older processes are background shells or MCP servers, not the tool at hand.
    """
    if tool is not None and tool.name == "Bash":
        command = _text(tool.input.get("command")).strip()
        if command:
            for proc in reversed(tools):
                if command in proc.command and (not proc.started or proc.started >= after - 1):
                    return proc
    fresh = [p for p in tools if p.started and p.started >= after - 0.5]
    return fresh[-1] if fresh else None


def _running(name: str, subject: str, proc: ToolProc) -> str:
    what = f"{name} running" if name else "running"
    return f"{what}: {_clip(subject or proc.command)} (pid {proc.pid})"


def _from_hooks(s: Signals, t: Track, sf: StatusFile | None) -> Verdict:
    hooks = _track_verdict(s, t)
    # Hook times come from /proc/uptime (10 ms steps, rounded down) and the file's from
    # Claude's clock: a file written just after a hook can look a few ms older or newer.
    # Only a change clearly after the last hook counts as news the hooks did not carry.
    file_newer = (sf is not None and sf.status_updated_at is not None
                  and sf.status_updated_at > t.evidence_ts + CLOCK_SLACK)
    # "waiting" is news whatever the clocks say: no hook but PermissionRequest explains it,
    # and auto mode's dialogs fire none (the file can even be stamped within the same
    # 10 ms as the PreToolUse before it).
    file_waits = sf is not None and sf.status == "waiting" and t.permission is None
    # An Esc within CLOCK_SLACK of the last hook leaves the file "idle" with a stamp that
    # does not look newer; a turn that is really running keeps the file "busy", so idle
    # for a while under a track that says "in turn" means the turn ended unreported.
    file_settled = (sf is not None and sf.status in ("idle", "shell")
                    and sf.status_updated_at is not None and t.phase in IN_TURN
                    and s.now - max(sf.status_updated_at, t.evidence_ts) > SETTLED)
    if sf is None or sf.status_updated_at is None or not (
            file_newer or file_waits or file_settled):
        return _with_dialog(s, t, hooks)
    # The status file changed after the last hook that set the phase: something happened
    # that fires no hook (Esc, a denied or granted permission, a dialog: README).
    at = sf.status_updated_at
    if sf.status in ("idle", "shell"):
        extra = ("background shell running" if sf.status == "shell" and not _background(t)
                 else "")
        if t.permission is not None:
            ask = t.permission
            subject = _tool_line(ask.tool, ask.input) if ask.tool else "the dialog"
            return Verdict(State.WAITING, _joined(f"permission denied: {subject}", extra), at)
        if t.phase in IN_TURN or t.compacting:
            return Verdict(State.WAITING, _joined("interrupted (Esc)", extra), at)
        if hooks.state == State.WAITING and extra:
            return replace(hooks, reason=_joined(hooks.reason, extra))
        return hooks
    if sf.status == "busy":
        if t.permission is not None:
            # Granted: the tool runs before its PostToolUse arrives (timeline:write_allow,
            # 11_after_permission_granted: busy 66 ms before PostToolUse).
            ask = t.permission
            if ask.tool == "AskUserQuestion":
                return Verdict(State.THINKING, f"answered: {_tool_subject(ask.tool, ask.input)}",
                               at)
            tool = t.tool if t.tool is not None and t.tool.name == ask.tool else None
            proc = _process_for(s.tools, tool, ask.ts)
            if proc is not None:
                return Verdict(State.WORKING, _running(ask.tool, _tool_subject(
                    ask.tool, ask.input), proc), at)
            return Verdict(State.WORKING, _tool_line(ask.tool, ask.input) if ask.tool
                           else "permission given", at)
        if t.phase in IN_TURN or t.compacting:
            return hooks
        return _busy_from_file(s, sf, "")
    if sf.status == "waiting":
        if t.permission is not None:
            return hooks
        # No PermissionRequest: auto mode's dialogs, /add-dir (README; screens/19).
        if s.dialog is not None and not (s.dialog.kind == "permission" and t.tool):
            reason = _dialog_reason(s.dialog)
        elif t.tool is not None:
            reason = _ask_reason(PendingPermission(t.tool.name, t.tool.input, at))
        else:
            reason = sf.waiting_for or "waiting for you"
        return Verdict(State.PERMISSION, reason, at)
    return _with_dialog(s, t, hooks)


def _track_verdict(s: Signals, t: Track) -> Verdict:
    """The state from the hooks (and the process table) alone."""
    if t.phase == Phase.ENDED:
        return Verdict(State.IDLE, f"{EXITING} ({_end_text(t)})", t.since)
    if t.permission is not None:
        ask = t.permission
        tool = t.tool if t.tool is not None and t.tool.name == ask.tool else None
        if ask.tool == "Bash":  # granted: its process appears before PostToolUse
            proc = _process_for(s.tools, tool, ask.ts)
            if proc is not None and (not proc.started or proc.started >= ask.ts):
                return Verdict(State.WORKING, _running("Bash", _tool_subject(
                    "Bash", ask.input), proc), proc.started or ask.ts)
        return Verdict(State.PERMISSION, _ask_reason(ask), ask.ts)
    if t.compacting:
        return Verdict(State.THINKING, f"compacting ({t.compacting})",
                       t.compact_ts or t.since)
    if t.phase == Phase.TOOL and t.tool is not None:
        tool = t.tool
        more = f" (+{len(t.tools) - 1} more)" if len(t.tools) > 1 else ""
        proc = _process_for(s.tools, tool, tool.ts)
        if proc is not None:
            return Verdict(State.WORKING, _running(tool.name, _tool_subject(
                tool.name, tool.input), proc) + more, t.since)
        return Verdict(State.WORKING, _tool_line(tool.name, tool.input) + more, t.since)
    if t.phase in IN_TURN:  # PROMPTED (or TOOL without a known tool)
        fresh = [p for p in s.tools if p.started and p.started >= t.since]
        if fresh:  # a tool runs whose PreToolUse we did not get
            return Verdict(State.WORKING, _running("", "", fresh[-1]), fresh[-1].started)
        if t.task_summary:
            reason = f"thinking about: {_clip(t.task_summary)}"
        elif t.writing:
            reason = f'writing: "{_clip(t.writing)}"'
        elif t.last_tool:
            reason = f"thinking after {_clip(t.last_tool)}"
        elif t.prompt:
            reason = f'thinking about "{_clip(t.prompt)}"'
        else:
            reason = "thinking"
        return Verdict(State.THINKING, reason, t.since)
    if t.phase in FINISHED:
        return Verdict(State.WAITING, _joined(_finished_reason(t), _background(t)), t.since)
    # Phase.NONE
    if t.start_source == "clear":
        reason = "new conversation (/clear)"
    elif t.start_source == "resume":
        reason = "no turn yet (resumed conversation)"
    else:
        reason = "no turn yet"
    return Verdict(State.IDLE, reason, t.started_ts or t.since or s.claude_started or s.now)


def _with_dialog(s: Signals, t: Track | None, verdict: Verdict) -> Verdict:
    """A dialog on screen needs the person, unless a tool is visibly running already."""
    if s.dialog is None or verdict.state in (State.PERMISSION, State.EXITED):
        return verdict
    if verdict.state == State.WORKING and "(pid " in verdict.reason:
        return verdict  # the screen lags: the tool it asked about runs
    since = t.evidence_ts if t is not None and t.evidence_ts else verdict.since
    if s.dialog.kind == "permission" and t is not None and t.tool is not None:
        # The dialog is up before its PermissionRequest hook has landed (or in auto mode,
        # without one): the pending tool says what is asked, as the hook would.
        ask = PendingPermission(t.tool.name, t.tool.input, since)
        return Verdict(State.PERMISSION, _ask_reason(ask), since)
    return Verdict(State.PERMISSION, _dialog_reason(s.dialog), since)


def _busy_from_file(s: Signals, sf: StatusFile, suffix: str) -> Verdict:
    at = sf.status_updated_at or s.now
    fresh = [p for p in s.tools if not p.started or p.started >= at - 1]
    if fresh:
        proc = fresh[-1]
        return Verdict(State.WORKING, _joined(_running("", "", proc),
                                              "from Claude's status file" + suffix),
                       proc.started or at)
    return Verdict(State.THINKING, f"from Claude's status file: busy{suffix}", at)


def _without_hooks(s: Signals, sf: StatusFile | None) -> Verdict:
    """No hook event from this claude: the status file and the processes alone."""
    suffix = " (no hook events)"
    if sf is None:
        if s.dialog is not None:
            # A startup dialog (blockers/trust): nothing dates it but the read that found
            # it; claude's start would be too early (keys in its first second are lost).
            return Verdict(State.PERMISSION, _dialog_reason(s.dialog),
                           s.dialog_since or s.claude_started or s.now)
        if s.tools:
            proc = s.tools[-1]
            return Verdict(State.WORKING, _running("", "", proc) + suffix,
                           proc.started or s.claude_started or s.now)
        return Verdict(State.IDLE, "no turn yet", s.claude_started or s.now)
    at = sf.status_updated_at or sf.started_at or s.claude_started or s.now
    if sf.status == "busy":
        return _busy_from_file(s, sf, suffix)
    if sf.status == "waiting":
        reason = (_dialog_reason(s.dialog) if s.dialog is not None
                  else f"from Claude's status file: {sf.waiting_for or 'waiting'}{suffix}")
        return Verdict(State.PERMISSION, reason, at)
    if sf.status == "shell":
        return Verdict(State.WAITING,
                       "from Claude's status file: idle, background shell running" + suffix, at)
    if s.dialog is not None:
        return Verdict(State.PERMISSION, _dialog_reason(s.dialog), at)
    if sf.status == "idle":
        # Fresh claude writes "idle" ~0.1 s after it starts (01_idle_startup); a later
        # change means at least one turn (or a dialog) happened since.
        started = sf.started_at or s.claude_started
        if started is not None and sf.status_updated_at is not None \
                and sf.status_updated_at - started > 2.0:
            return Verdict(State.WAITING, "from Claude's status file: idle" + suffix, at)
        return Verdict(State.IDLE, "no turn yet (from Claude's status file)" + suffix, at)
    return Verdict(State.IDLE, f"from Claude's status file: {sf.status}" + suffix, at)


def _retrying(s: Signals, verdict: Verdict) -> Verdict:
    """A turn whose requests fail and are retried still counts as thinking or working (no
    hook fires until the retries run out), but the reason says so, or a session offline
    for minutes would read "thinking about …"."""
    if not s.retry or verdict.state not in (State.WORKING, State.THINKING):
        return verdict
    return replace(verdict, reason=_joined(s.retry, verdict.reason))


def _stalled(s: Signals, t: Track | None, verdict: Verdict) -> Verdict:
    """working/thinking with no output and no event for ``stall_seconds``: say so."""
    if s.stall_seconds <= 0 or verdict.state not in (State.WORKING, State.THINKING):
        return verdict
    last = max(verdict.since, s.last_output or 0.0, t.activity_ts if t is not None else 0.0)
    quiet = s.now - last
    if quiet < s.stall_seconds:
        return verdict
    span = f"{int(quiet // 60)} min" if quiet >= 60 else f"{int(quiet)} s"
    return replace(verdict, reason=_joined(f"stalled for {span}", verdict.reason))
