#!/usr/bin/env python3
"""A fake Claude Code 2.1.328 for cbos's tests (stdlib only, Linux).

It is an interactive TUI meant to run in a tmux pane, and it behaves like the real
``claude`` wherever cbos depends on it: hook payloads and their order, the status file
``<config>/sessions/<pid>.json``, the transcript, the process tree, the exit paths and the
screen cues. The reference is the recording of the real CLI in
``tests/fixtures/claude-code-2.1.328/`` (README.md, timeline.md/json, ``*.json`` payloads,
``variants/``, ``screens/``, ``session_pidfile_*.json``, ``ps_*.txt``); comments below
cite those files where the behaviour mirrors a recorded fact.

Prompts are a script for the fake model (first word, then the argument):

    SAY text     reply ``text``
    RUN cmd      Bash tool (``bash -c``, own process group, no controlling tty)
    BG cmd       Bash tool with run_in_background; completion re-enters as a
                 ``<task-notification>`` prompt
    WRITE path   Write tool behind a permission dialog (no dialog in acceptEdits/bypass)
    READ path    Read tool (fails like the recording when the file is missing)
    ASK question AskUserQuestion dialog (Alpha / Beta)
    PLAN text    ExitPlanMode behind the plan-approval dialog (blockers/plan-approval)
    AGENT prompt background subagent, then a ``<task-notification>`` prompt
    SLOW n       20 lines streamed over n s      WAIT n   nothing for n s, then a reply
    THINK n      a thinking spinner for n s      FAIL [code]  API error -> StopFailure
    OFFLINE n    n attempts to reach the API, one a second, said on the spinner row
                 (as Claude Code 2.1.332 does with no network), then a reply
    EXIT n       SessionEnd(prompt_input_exit), exit status n
    STEPS n      n model messages in a row, each running Bash ``sleep 0.3``, then a reply
    /clear /compact /exit (/quit)                anything else: reply ``echo: <first line>``

Environment knobs: FAKE_CLAUDE_SPEED (divides the delays that stand for model time),
FAKE_CLAUDE_IDLE_NOTIFY_S, FAKE_CLAUDE_PERMISSION_NOTIFY_S, FAKE_CLAUDE_DIALOG_GRACE_S,
FAKE_CLAUDE_LOG (JSON line per submitted prompt), FAKE_CLAUDE_LOGGED_OUT=1 (no
credentials: "Not logged in", every prompt fails), FAKE_CLAUDE_ERROR_LOG (tracebacks of
the fake's own bugs; default ``<config>/fake-claude-errors.log``), FAKE_CLAUDE_STARTUP_S
(seconds with no composer after the startup dialogs, keys typed meanwhile lost).
"""

from __future__ import annotations

import codecs
import contextlib
import datetime as dt
import hashlib
import heapq
import itertools
import json
import math
import os
import re
import secrets
import selectors
import shlex
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import termios
import time
import traceback
import tty
import unicodedata
import uuid
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

# Run as a script (the ``claude`` shim): the package is found from the project's root.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.fakeclaude import hooks as hook_rules
from tests.fakeclaude import screens, startup
from tests.fakeclaude import status as status_file

VERSION = "2.1.328"
DEFAULT_MODEL = "claude-opus-5-5"
MODEL_ALIASES = {
    "opus": "claude-opus-5-5",
    "sonnet": "claude-sonnet-5-5",
    "haiku": "claude-haiku-5-5",
}
EFFORT = "medium"
PERMISSION_MODES = ("default", "acceptEdits", "plan", "auto", "bypassPermissions", "dontAsk")
# What the footer says per mode. Only "manual mode on" (= "default") is recorded.
MODE_LABELS = {
    "default": "⏸ manual mode on",
    "acceptEdits": "⏵⏵ accept edits on",
    "plan": "⏸ plan mode on",
    "auto": "⏵⏵ auto mode on",
    "bypassPermissions": "⏵⏵ bypass permissions on",
    "dontAsk": "⏵⏵ don't ask on",
}

NBSP = "\u00a0"
MIDDOT = "\u00b7"
ELLIPSIS = "\u2026"
RULE = "─"
PROMPT_MARK = "\u276f"  # HEAVY RIGHT-POINTING ANGLE QUOTATION MARK ORNAMENT
DASHED = "╌"
# screens/14_after_esc_interrupt_stream.txt: "⎿" then a space and a NO-BREAK SPACE.
ELBOW = f"  ⎿ {NBSP}"
INTERRUPTED = f"{ELBOW}Interrupted {MIDDOT} What should Claude do instead?"
WRITE_CONTENT = "written by model backend\n"  # variants/PreToolUse.Write.json
ASK_OPTIONS = (("Alpha", "first option"), ("Beta", "second option"))
COMPACT_SUMMARY = (
    "<analysis>mock analysis</analysis>\n"
    "<summary>1. Primary Request and Intent: scripted recorded conversation "
    "(mock summary).</summary>"
)  # PostCompact.json

# Model time (seconds at FAKE_CLAUDE_SPEED=1), close to timeline.md: the first text came
# ~0.15-0.2 s after UserPromptSubmit, a tool call ~0.1 s, the reply after a tool ~0.1 s.
FIRST_TOKEN_S = 0.15
TOOL_CALL_S = 0.1
AFTER_TOOL_S = 0.1
API_RETRIES_S = 0.4  # timeline.md api_error: six retries within ~0.4 s, then StopFailure
SUBAGENT_S = 0.08
COMPACT_STEP_S = 0.05
ESC_TIMEOUT_S = 0.05  # a lone ESC is a key if nothing follows within this time
EXIT_CONFIRM_S = 2.0  # "Press Ctrl-C again to exit" window


CONTROL_KEYS = {
    "\r": "<enter>",
    "\n": "<nl>",
    "\x7f": "<bs>",
    "\x08": "<bs>",
    "\x03": "<c-c>",
    "\x04": "<c-d>",
    "\x15": "<c-u>",
    "\x17": "<c-w>",
    "\x0c": "<c-l>",
    "\t": "<tab>",
}
CSI_KEYS = {"A": "<up>", "B": "<down>", "C": "<right>", "D": "<left>", "Z": "<s-tab>"}
PRINTABLE_RUN = re.compile(r"[^\x00-\x1f\x7f]+")  # typed text, handled as one insertion
PASTE_END = "\x1b[201~"


def _env_float(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, ""))
    except ValueError:
        return default
    return value if math.isfinite(value) and value >= 0 else default


SPEED = _env_float("FAKE_CLAUDE_SPEED", 1.0) or 1.0
IDLE_NOTIFY_S = _env_float("FAKE_CLAUDE_IDLE_NOTIFY_S", 5.0)
PERMISSION_NOTIFY_S = _env_float("FAKE_CLAUDE_PERMISSION_NOTIFY_S", 6.4)
DIALOG_GRACE_S = _env_float("FAKE_CLAUDE_DIALOG_GRACE_S", 0.3)
# Claude Code 2.1.332 after its startup dialogs: ~5 s with no composer (it reaches for the
# network) while what is typed is lost. 0: the session begins at once.
STARTUP_S = _env_float("FAKE_CLAUDE_STARTUP_S", 0.0)


def model_time(seconds: float) -> float:
    """Scale a delay that stands for model time by FAKE_CLAUDE_SPEED."""
    return seconds / SPEED


def now_ms() -> int:
    return int(time.time() * 1000)


def iso_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def clock() -> str:
    """The "done 3:42 AM" time of screens/02_after_say_done.txt."""
    now = dt.datetime.now()
    return f"{now.hour % 12 or 12}:{now.minute:02d} {'AM' if now.hour < 12 else 'PM'}"


def fmt_num(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:g}"


def first_line(text: str) -> str:
    return text.split("\n", 1)[0]


def tool_use_id() -> str:
    # The recording's ids came from its mock backend ("toolu_mock..."); these look like
    # the real API's.
    alphabet = string.ascii_letters + string.digits
    return "toolu_01" + "".join(secrets.choice(alphabet) for _ in range(22))


def project_slug(path: str) -> str:
    """``~/.claude/projects/<slug>``: every character but [A-Za-z0-9] becomes "-".

    The recording only shows "/" (``-home-dev-proj``); the real CLI also maps ".", "_" ...
    """
    return re.sub(r"[^A-Za-z0-9]", "-", path)


def cell_width(ch: str) -> int:
    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def displayable(text: str) -> str:
    """One line of text made safe to print: tabs expanded, control characters shown."""
    out: list[str] = []
    for ch in text:
        code = ord(ch)
        if ch == "\t":
            out.append("    ")
        elif code < 0x20 or code == 0x7F:
            out.append("^" + chr(code ^ 0x40))
        elif 0x80 <= code < 0xA0:
            out.append("?")
        else:
            out.append(ch)
    return "".join(out)


def wrap_cells(text: str, width: int) -> list[str]:
    """Split a line into pieces of at most ``width`` terminal cells."""
    if width <= 0:
        return [""]
    pieces: list[str] = []
    current: list[str] = []
    used = 0
    for ch in text:
        w = cell_width(ch)
        if used + w > width and current:
            pieces.append("".join(current))
            current, used = [], 0
        current.append(ch)
        used += w
    pieces.append("".join(current))
    return pieces


def colour(line: str) -> str:
    """Colour the marks the real CLI colours (its orange ●, grey rules), after clipping.

    Only escapes are added, so cell widths are unchanged; `capture-pane -e` shows them.
    """
    if line.startswith("● "):
        return "\x1b[38;5;174m●\x1b[39m" + line[1:]
    if line.startswith("─"):
        return f"\x1b[38;5;244m{line}\x1b[39m"
    return line


def clip_cells(text: str, width: int) -> str:
    return wrap_cells(text, width)[0]


def partial_suffix(buf: str, marker: str) -> int:
    """Length of the longest end of ``buf`` that could start ``marker``."""
    for k in range(min(len(marker) - 1, len(buf)), 0, -1):
        if buf.endswith(marker[:k]):
            return k
    return 0


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def inside(path: str, directory: str) -> bool:
    try:
        return os.path.commonpath([os.path.abspath(path), os.path.abspath(directory)]) == (
            os.path.abspath(directory)
        )
    except ValueError:
        return False


# --------------------------------------------------------------------------- options


@dataclass
class Options:
    settings: str | None = None
    session_id: str | None = None
    resume: str | None = None
    continue_last: bool = False
    fork: bool = False
    permission_mode: str = "default"
    model: str = DEFAULT_MODEL
    prompt: str | None = None
    passthrough: list[str] = field(default_factory=list)  # for the "--resume" hint


# Flags of the real CLI that take a value (so the value is not read as the prompt).
VALUE_FLAGS = {
    "--settings", "--session-id", "--permission-mode", "--model", "--debug-file",
    "--append-system-prompt", "--system-prompt", "--system-prompt-file",
    "--append-system-prompt-file", "--output-format", "--input-format", "--fallback-model",
    "--agent", "--agents", "--setting-sources", "--max-turns", "--permission-prompt-tool",
    "--effort", "--name", "--json-schema", "--max-budget-usd", "--from-pr", "--teleport",
    "--remote", "--worktree", "-w", "--ide",
}
VARIADIC_FLAGS = {
    "--add-dir", "--mcp-config", "--allowedTools", "--allowed-tools", "--disallowedTools",
    "--disallowed-tools", "--tools", "--betas", "--plugin-dir",
}
SESSION_FLAGS = {"--session-id", "--resume", "-r", "--continue", "-c", "--fork-session"}


def parse_args(argv: list[str]) -> Options | int:
    """Parse the flags cbos may pass; unknown flags are accepted and ignored."""
    opts = Options()
    positional: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            positional.extend(argv[i:])
            break
        if not arg.startswith("-") or arg == "-":
            positional.append(arg)
            continue
        name, eq, inline = arg.partition("=")
        value: str | None = inline if eq else None
        keep = name not in SESSION_FLAGS
        start = i - 1
        if name in VALUE_FLAGS and value is None and i < len(argv):
            value = argv[i]
            i += 1
        if name in ("--version", "-v"):
            print(f"{VERSION} (Claude Code)")
            return 0
        if name in ("--help", "-h"):
            print("Usage: claude [options] [prompt]   (fake Claude Code for cbos tests)")
            return 0
        if name in ("--print", "-p"):
            print("fake claude: --print is not supported", file=sys.stderr)
            return 2
        if name == "--settings":
            opts.settings = value
        elif name == "--session-id":
            opts.session_id = value
        elif name in ("--resume", "-r"):
            if value is None and i < len(argv) and not argv[i].startswith("-"):
                value = argv[i]
                i += 1
            if value:
                opts.resume = value
            else:
                opts.continue_last = True
        elif name in ("--continue", "-c"):
            opts.continue_last = True
        elif name == "--fork-session":
            opts.fork = True
        elif name == "--permission-mode":
            mode = value or "default"
            opts.permission_mode = mode if mode in PERMISSION_MODES else "default"
        elif name == "--dangerously-skip-permissions":
            opts.permission_mode = "bypassPermissions"
        elif name == "--model":
            requested = value or DEFAULT_MODEL
            opts.model = MODEL_ALIASES.get(requested, requested)
        elif name in VARIADIC_FLAGS and value is None:
            while i < len(argv) and not argv[i].startswith("-"):
                i += 1
        if keep:
            opts.passthrough.extend(argv[start:i])
    if positional:
        opts.prompt = positional[0]
    return opts


# --------------------------------------------------------------------------- timers


class Timer:
    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Timers:
    """A heap of one-shot timers for the select() loop."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(time.monotonic() + max(0.0, delay), callback)
        heapq.heappush(self._heap, (timer.when, next(self._seq), timer))
        return timer

    def timeout(self) -> float | None:
        while self._heap and self._heap[0][2].cancelled:
            heapq.heappop(self._heap)
        if not self._heap:
            return None
        return max(0.0, self._heap[0][0] - time.monotonic())

    def run_due(self) -> None:
        now = time.monotonic()
        while self._heap and self._heap[0][0] <= now:
            _, _, timer = heapq.heappop(self._heap)
            if not timer.cancelled:
                timer.cancelled = True
                timer.callback()


# --------------------------------------------------------------------------- turns


@dataclass
class Block:
    """Lines of the conversation view; blocks are separated by one blank line."""

    lines: list[str]


@dataclass
class Sleep:
    seconds: float


@dataclass
class WaitProc:
    proc: subprocess.Popen[bytes]


@dataclass
class WaitDialog:
    dialog: Dialog


Step = Sleep | WaitProc | WaitDialog
Script = Generator[Step, Any, None]


@dataclass
class Answer:
    value: str | None


@dataclass
class Turn:
    """One prompt being worked on: a generator script driven by the event loop."""

    script: Script
    started: float
    turn_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    spinner: str | None = f"✻ Thinking{ELLIPSIS}"
    spinner_tag: str | None = None
    stopped: bool = False  # Stop hook done; the script is about to end
    timer: Timer | None = None
    proc: subprocess.Popen[bytes] | None = None
    tool_block: Block | None = None
    tool_label: str = ""


@dataclass
class BgTask:
    task_id: str
    kind: str  # "shell" or "subagent"
    description: str
    tool_use_id: str
    command: str = ""
    output_file: str = ""
    proc: subprocess.Popen[bytes] | None = None
    done: bool = False

    def payload(self) -> dict[str, object]:
        """An entry of Stop's background_tasks (timeline.json bg_bash, SubagentStop.json)."""
        if self.kind == "shell":
            return {
                "id": self.task_id,
                "type": "shell",
                "status": "running",
                "description": self.description,
                "command": self.command,
            }
        return {
            "id": self.task_id,
            "type": "subagent",
            "status": "running",
            "description": self.description,
            "agent_type": "general-purpose",
        }


@dataclass
class QueueItem:
    text: str
    notification: list[str] | None = None  # screen lines of a <task-notification> turn


class Dialog:
    """A dialog that replaces the composer box and takes every key while it is open."""

    waiting_for = "dialog open"
    notification = ("permission_prompt", "Claude needs your permission")

    def __init__(self, options: list[str]) -> None:
        self.options = options
        self.selected = 0
        self.shown_at = 0.0
        self.notify_timer: Timer | None = None

    def lines(self, cols: int) -> list[str]:
        raise NotImplementedError

    def key(self, key: str) -> Answer | None:
        raise NotImplementedError

    def move(self, key: str) -> bool:
        if key == "<up>":
            self.selected = (self.selected - 1) % len(self.options)
        elif key == "<down>":
            self.selected = (self.selected + 1) % len(self.options)
        else:
            return False
        return True


class WriteDialog(Dialog):
    """screens/09_permission_prompt.txt."""

    ANSWERS = ("yes", "yes_all", "no")

    def __init__(self, path: str, shown_path: str, create: bool, option2: str, auto: bool):
        super().__init__(["Yes", option2, "No"])
        self.path = path
        self.shown_path = shown_path
        self.create = create
        if auto:
            # README.md: auto mode shows the dialog with no PermissionRequest hook; the
            # status file says "dialog open" and agent_needs_input follows.
            self.waiting_for = "dialog open"
            self.notification = (
                "agent_needs_input",
                "Auto mode can't check actions in this session and needs your choice",
            )
        else:
            self.waiting_for = "permission prompt"  # session_pidfile_permission.json

    def lines(self, cols: int) -> list[str]:
        return screens.write_permission(
            cols, self.shown_path, os.path.basename(self.path), WRITE_CONTENT.splitlines(),
            self.options, self.selected, self.create)

    def key(self, key: str) -> Answer | None:
        if key in ("1", "2", "3"):
            return Answer(self.ANSWERS[int(key) - 1])
        if key == "<enter>":
            return Answer(self.ANSWERS[self.selected])
        if key == "<s-tab>":
            return Answer("yes_all")
        if key == "<esc>":
            return Answer("no")
        self.move(key)
        return None


class AskDialog(Dialog):
    """screens/13_ask_user_question.txt."""

    waiting_for = "input needed"  # timeline.md ask_user: waiting / input needed

    def __init__(self, question: str) -> None:
        labels = [label for label, _ in ASK_OPTIONS]
        super().__init__([*labels, "Type something.", "Chat about this"])
        self.question = question

    def lines(self, cols: int) -> list[str]:
        return screens.ask(cols, displayable(self.question), ASK_OPTIONS, self.selected)

    def key(self, key: str) -> Answer | None:
        if key in ("1", "2"):
            return Answer(ASK_OPTIONS[int(key) - 1][0])
        if key in ("3", "4"):
            self.selected = int(key) - 1
            return None
        if key == "<enter>":
            if self.selected < len(ASK_OPTIONS):
                return Answer(ASK_OPTIONS[self.selected][0])
            return Answer(None)
        if key == "<esc>":
            return Answer(None)
        self.move(key)
        return None


class StartupDialog(Dialog):
    """blockers/trust, blockers/mcp-json: drawn at the top of an empty screen, before
    SessionStart and before the status file; ↑/↓ and Enter, no numbers."""

    def __init__(self, draw: Callable[[int, int], list[str]], options: tuple[str, ...],
                 selected: int, done: Callable[[int | None], None]) -> None:
        super().__init__(list(options))
        self.draw = draw
        self.selected = selected
        self.done = done

    def lines(self, cols: int) -> list[str]:
        return self.draw(cols, self.selected)

    def key(self, key: str) -> Answer | None:
        if key == "<enter>":
            return Answer(str(self.selected))
        if key == "<esc>":
            return Answer(None)
        self.move(key)
        return None


class PlanDialog(Dialog):
    """blockers/plan-approval: ExitPlanMode. Taller than the recorded screen: its last
    rows (the footer) are drawn below the pane's last row."""

    waiting_for = "permission prompt"
    hidden_rows = 2

    def __init__(self) -> None:
        super().__init__(list(screens.PLAN_OPTIONS))

    def lines(self, cols: int) -> list[str]:
        return screens.plan_approval(cols, self.selected)

    def key(self, key: str) -> Answer | None:
        if key in ("1", "2"):
            return Answer("yes" if key == "1" else "no")
        if key == "<enter>":
            return Answer("yes" if self.selected == 0 else "no")
        if key == "<esc>":
            return Answer("no")
        self.move(key)
        return None


# --------------------------------------------------------------------------- the fake


class FakeClaude:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.pid = os.getpid()
        self.in_fd = 0
        self.out_fd = 1
        config = os.environ.get("CLAUDE_CONFIG_DIR")
        self.config_dir = Path(config) if config else Path.home() / ".claude"
        self.project_dir = os.getcwd()
        self.cwd = self.project_dir
        self.permission_mode = opts.permission_mode
        self.model = opts.model
        self.prompt_id: str | None = None  # absent from payloads before the first prompt
        self.last_uuid: str | None = None
        self.socket_path = f"/tmp/cc-socks/{self.pid}.sock"
        self.proc_start = self._proc_start()
        self.pid_domain = self._pid_domain()
        self.started_at = now_ms()
        self.tmux_target = self._tmux_target()
        self.cli_settings = self._parse_cli_settings()

        # Conversation and session id (--session-id / --resume / --fork-session).
        self.start_source = "startup"
        resume = opts.resume
        if resume is None and opts.continue_last:
            resume = self._latest_session()
        if resume is not None and opts.fork:
            self.session_id = opts.session_id or str(uuid.uuid4())
            self._fork_transcript(resume)
            self.start_source = "fork"
        elif resume is not None:
            self.session_id = resume
            self.start_source = "resume"
        else:
            self.session_id = opts.session_id or str(uuid.uuid4())
        self.name = f"{os.path.basename(self.project_dir) or 'root'}-" + (
            hashlib.sha1(self.session_id.encode()).hexdigest()[:2]
        )

        # Screen and input state.
        self.rows, self.cols = 24, 80
        self.blocks: list[Block] = []
        self.composer = ""
        self.prev_frame: list[str] | None = None
        self.dirty = True
        self.inbuf = ""
        self.in_paste = False
        self.paste_parts: list[str] = []
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.esc_timer: Timer | None = None
        self.exit_pending: str | None = None
        self.exit_timer: Timer | None = None

        # Work.
        self.timers = Timers()
        self.turn: Turn | None = None
        self.dialog: Dialog | None = None
        self.gates: list[StartupDialog] = []
        # blockers/no-credentials: no API key and no login (the fake has no credentials,
        # so a knob stands for their absence); every prompt fails with a 401.
        self.logged_out = os.environ.get("FAKE_CLAUDE_LOGGED_OUT") == "1"
        self.starting = False  # between the startup dialogs and the session (STARTUP_S)
        self.queue: list[QueueItem] = []
        self.bg: list[BgTask] = []
        self.reap: list[subprocess.Popen[bytes]] = []
        self.idle_timer: Timer | None = None
        self.tick_timer: Timer | None = None
        self.reload_instructions = False
        self.status: tuple[str, str | None] | None = None
        self.status_updated_at = 0
        self.exit_code: int | None = None
        self.resume_hint = False
        self.pending_signals: list[int] = []
        self.saved_tty: list[Any] | None = None
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = os.pipe()

    # ------------------------------------------------------------------ paths, identity

    @property
    def transcript_path(self) -> Path:
        return self._transcript_for(self.session_id)

    def _transcript_for(self, session_id: str) -> Path:
        slug = project_slug(self.project_dir)
        return self.config_dir / "projects" / slug / f"{session_id}.jsonl"

    @property
    def status_path(self) -> Path:
        return self.config_dir / "sessions" / f"{self.pid}.json"

    @property
    def tasks_dir(self) -> Path:
        base = Path(tempfile.gettempdir()) / f"claude-{os.getuid()}"
        return base / project_slug(self.project_dir) / self.session_id / "tasks"

    @staticmethod
    def _proc_start() -> str:
        """Field 22 (starttime) of /proc/self/stat: the real CLI's procStart exactly."""
        try:
            stat = Path("/proc/self/stat").read_text()
        except OSError:
            return "0"
        return stat.rsplit(")", 1)[1].split()[19]

    @staticmethod
    def _pid_domain() -> str:
        """session_pidfile_idle.json: "linux:<machine-id>:pid:[<pid namespace inode>]"."""
        machine = "unknown"
        for candidate in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
            with contextlib.suppress(OSError):
                machine = Path(candidate).read_text().strip() or machine
                break
        try:
            namespace = os.readlink("/proc/self/ns/pid")
        except OSError:
            namespace = "pid:[0]"
        return f"linux:{machine}:{namespace}"

    @staticmethod
    def _tmux_target() -> str | None:
        """The status file's "tmux": "<session>:@<window>.%<pane>" (session_pidfile_*.json)."""
        pane = os.environ.get("TMUX_PANE")
        if not pane or not shutil.which("tmux"):
            return None
        fmt = "#{session_name}:#{window_id}.#{pane_id}"
        try:
            done = subprocess.run(
                ["tmux", "display-message", "-p", "-t", pane, fmt],
                capture_output=True, text=True, timeout=3, check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        target = done.stdout.strip()
        return target if done.returncode == 0 and target else None

    def _parse_cli_settings(self) -> dict[str, Any] | None:
        raw = self.opts.settings
        if raw is None:
            return None
        if raw.lstrip().startswith("{"):
            try:
                data = json.loads(raw)
            except ValueError:
                return None
        else:
            data = read_json(Path(self.project_dir, raw))
        return data if isinstance(data, dict) else None

    def _latest_session(self) -> str | None:
        folder = self._transcript_for("x").parent
        try:
            files = sorted(folder.glob("*.jsonl"), key=lambda p: p.stat().st_mtime)
        except OSError:
            return None
        return files[-1].stem if files else None

    def _fork_transcript(self, source_id: str) -> None:
        """--resume X --fork-session: a new id whose transcript starts as a copy of X's."""
        source = self._transcript_for(source_id)
        target = self.transcript_path
        with contextlib.suppress(OSError):
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)

    # ------------------------------------------------------------------ status file

    def _current_status(self) -> tuple[str, str | None]:
        if self.dialog is not None:
            return "waiting", self.dialog.waiting_for
        if self.turn is not None and not self.turn.stopped:
            return "busy", None
        if any(task.kind == "shell" and not task.done for task in self.bg):
            return "shell", None  # README.md: idle, but a background shell task runs
        return "idle", None

    def _update_status(self, force: bool = False) -> None:
        status = self._current_status()
        if status == self.status and not force:
            return
        stamp = now_ms()
        if status != self.status:
            self.status = status
            self.status_updated_at = stamp
        self._write_status(stamp)

    def _write_status(self, stamp: int) -> None:
        """Same keys and order as session_pidfile_*.json (status.py)."""
        assert self.status is not None
        data = status_file.record(
            pid=self.pid, session_id=self.session_id, cwd=self.project_dir,
            started_at=self.started_at, proc_start=self.proc_start,
            pid_domain=self.pid_domain, tmux=self.tmux_target, socket_path=self.socket_path,
            name=self.name, status=self.status[0], waiting_for=self.status[1],
            updated_at=stamp, status_updated_at=self.status_updated_at)
        try:
            status_file.write(self.status_path, data)
        except OSError:
            self._log_error("status file")

    # ------------------------------------------------------------------ transcript

    def _tx_append(self, entry: dict[str, object]) -> None:
        line = json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n"
        path = self.transcript_path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode("utf-8", "replace"))
            finally:
                os.close(fd)
        except OSError:
            self._log_error("transcript")

    def _tx_user(self, content: object) -> None:
        entry_id = str(uuid.uuid4())
        self._tx_append({
            "type": "user",
            "message": {"role": "user", "content": content},
            "uuid": entry_id,
            "parentUuid": self.last_uuid,
            "sessionId": self.session_id,
            "timestamp": iso_now(),
            "cwd": self.cwd,
            "version": VERSION,
        })
        self.last_uuid = entry_id

    def _tx_assistant(self, content: list[dict[str, object]], stop_reason: str) -> None:
        entry_id = str(uuid.uuid4())
        size = len(json.dumps(content))
        self._tx_append({
            "type": "assistant",
            "message": {
                "id": "msg_01" + secrets.token_hex(11),
                "model": self.model,
                "role": "assistant",
                "type": "message",
                "content": content,
                "stop_reason": stop_reason,
                "usage": {
                    "input_tokens": 4 + size // 8,
                    "output_tokens": 1 + size // 4,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 3200,
                },
            },
            "uuid": entry_id,
            "parentUuid": self.last_uuid,
            "sessionId": self.session_id,
            "timestamp": iso_now(),
            "cwd": self.cwd,
            "version": VERSION,
        })
        self.last_uuid = entry_id

    def _tx_tool_result(self, tool_id: str, content: object, is_error: bool) -> None:
        self._tx_user([{"tool_use_id": tool_id, "type": "tool_result", "content": content,
                        "is_error": is_error}])

    def _load_history(self) -> None:
        """On --resume, show the earlier conversation and chain onto its last entry."""
        if self.start_source == "startup":
            return
        try:
            raw = self.transcript_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return
        for line in raw.splitlines()[-400:]:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if not isinstance(entry, dict):
                continue
            if isinstance(entry.get("uuid"), str):
                self.last_uuid = entry["uuid"]
            message = entry.get("message")
            if not isinstance(message, dict):
                continue
            content = message.get("content")
            if entry.get("type") == "user" and isinstance(content, str):
                self._add_prompt_block(content)
            elif entry.get("type") == "assistant" and isinstance(content, list):
                for part in content:
                    if isinstance(part, dict) and part.get("type") == "text":
                        self._add_text_block(str(part.get("text", "")))

    # ------------------------------------------------------------------ hooks

    def _payload(
        self,
        event: str,
        fields: dict[str, object],
        *,
        perm: bool = False,
        effort: bool = False,
        pre: dict[str, object] | None = None,
    ) -> dict[str, object]:
        """A hook payload with the recorded key order (see the fixture ``*.json`` files)."""
        payload: dict[str, object] = {
            "session_id": self.session_id,
            "transcript_path": str(self.transcript_path),
            "cwd": self.cwd,
        }
        if self.prompt_id is not None:
            payload["prompt_id"] = self.prompt_id
        if perm:
            payload["permission_mode"] = self.permission_mode
        if pre:
            payload.update(pre)
        if effort:
            payload["effort"] = {"level": EFFORT}
        payload["hook_event_name"] = event
        payload.update(fields)
        return payload

    def _settings_sources(self) -> list[dict[str, Any]]:
        """User, project and local settings, then --settings: all their hooks run."""
        sources: list[dict[str, Any]] = []
        project = Path(self.project_dir, ".claude")
        for path in (self.config_dir / "settings.json", project / "settings.json",
                     project / "settings.local.json"):
            data = read_json(path)
            if isinstance(data, dict):
                sources.append(data)
        if self.opts.settings is not None and not self.opts.settings.lstrip().startswith("{"):
            self.cli_settings = self._parse_cli_settings()  # a file: re-read like the others
        if self.cli_settings is not None:
            sources.append(self.cli_settings)
        return sources

    def _hook_commands(self, event: str, payload: dict[str, object]) -> list[tuple[str, float]]:
        return hook_rules.commands(self._settings_sources(), event, payload)

    def _child_env(self) -> dict[str, str]:
        """README.md "Hook process": claude's own env plus these."""
        env = dict(os.environ)
        env.update({
            "CLAUDE_PID": str(self.pid),
            "CLAUDE_CODE_SESSION_ID": self.session_id,
            "CLAUDE_PROJECT_DIR": self.project_dir,
            "CLAUDE_EFFORT": EFFORT,
            "CLAUDECODE": "1",
            "CLAUDE_CODE_ENTRYPOINT": "cli",
            "CLAUDE_CODE_MESSAGING_SOCKET": self.socket_path,
            "AI_AGENT": "claude-code_" + VERSION.replace(".", "-"),
        })
        return env

    def _hook(self, event: str, payload: dict[str, object]) -> list[tuple[int, str]]:
        """Run the event's hooks one after the other and wait for each (as recorded).

        Each runs as ``/bin/sh -c COMMAND`` (README.md: claude -> sh -> hook) with the
        compact JSON payload on stdin. Returns (exit status, stderr) per command.
        """
        commands = self._hook_commands(event, payload)
        if not commands:
            return []
        self._render()  # the screen is current while the hooks run
        data = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        env = self._child_env()
        return [self._run_hook(command, timeout, data, env) for command, timeout in commands]

    def _run_hook(
        self, command: str, timeout: float, data: bytes, env: dict[str, str]
    ) -> tuple[int, str]:
        # Files, not pipes: a hook that leaves a background child holding its stdout
        # open, or never reads stdin, cannot hang the fake.
        try:
            with tempfile.TemporaryFile() as stdin_file, \
                    tempfile.TemporaryFile() as out_file, \
                    tempfile.TemporaryFile() as err_file:
                stdin_file.write(data)
                stdin_file.seek(0)
                proc = subprocess.Popen(
                    ["/bin/sh", "-c", command],
                    stdin=stdin_file, stdout=out_file, stderr=err_file,
                    cwd=self.cwd if os.path.isdir(self.cwd) else None, env=env,
                )
                try:
                    code = proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    code = proc.wait()
                err_file.seek(0)
                return code, err_file.read(65536).decode("utf-8", "replace")
        except OSError as exc:
            self._log_error(f"hook {command!r}")
            return 1, str(exc)

    def _notify(self, kind: str, message: str) -> None:
        self._hook("Notification", self._payload(
            "Notification", {"message": message, "notification_type": kind}))

    def _pre_tool(self, name: str, tool_input: dict[str, object], tool_id: str) -> str | None:
        """PreToolUse; a hook exiting 2 blocks the tool (its stderr is the reason)."""
        results = self._hook("PreToolUse", self._payload(
            "PreToolUse",
            {"tool_name": name, "tool_input": tool_input, "tool_use_id": tool_id},
            perm=True, effort=True,
        ))
        for code, err in results:
            if code == 2:
                return err.strip() or "Blocked by hook"
        return None

    def _post_tool(self, name: str, tool_input: dict[str, object], tool_id: str,
                   response: object, duration_ms: int) -> None:
        self._hook("PostToolUse", self._payload("PostToolUse", {
            "tool_name": name,
            "tool_input": tool_input,
            "tool_response": response,
            "tool_use_id": tool_id,
            "duration_ms": duration_ms,
        }, perm=True, effort=True))

    def _post_tool_failure(self, name: str, tool_input: dict[str, object], tool_id: str,
                           error: str, duration_ms: int) -> None:
        self._hook("PostToolUseFailure", self._payload("PostToolUseFailure", {
            "tool_name": name,
            "tool_input": tool_input,
            "tool_use_id": tool_id,
            "error": error,
            "is_interrupt": False,
            "duration_ms": duration_ms,
        }, perm=True, effort=True))

    def _post_batch(self, name: str, tool_input: dict[str, object], tool_id: str,
                    response: object) -> None:
        self._hook("PostToolBatch", self._payload("PostToolBatch", {"tool_calls": [{
            "tool_name": name,
            "tool_input": tool_input,
            "tool_use_id": tool_id,
            "tool_response": response,
        }]}, perm=True, effort=True))

    def _message_display(self, delta: str, message_id: str, index: int, final: bool) -> None:
        """MessageDisplay: once per flushed batch of assistant text (MessageDisplay.json)."""
        turn_id = self.turn.turn_id if self.turn is not None else str(uuid.uuid4())
        self._hook("MessageDisplay", self._payload("MessageDisplay", {
            "turn_id": turn_id,
            "message_id": message_id,
            "index": index,
            "final": final,
            "delta": delta,
        }))

    # ------------------------------------------------------------------ screen

    def _add_block(self, lines: list[str]) -> Block:
        block = Block(lines)
        self.blocks.append(block)
        del self.blocks[:-300]
        self.dirty = True
        return block

    def _add_prompt_block(self, text: str) -> Block:
        lines = [line[:2000] for line in text.split("\n")[:200]]  # display only
        return self._add_block([f"{PROMPT_MARK} " + lines[0]] + ["  " + line for line in lines[1:]])

    def _add_text_block(self, text: str) -> Block:
        lines = text.split("\n")
        return self._add_block(["● " + lines[0]] + ["  " + line for line in lines[1:]])

    def _attach(self, line: str) -> None:
        """A line that belongs to the last block (no blank line before it)."""
        if self.blocks:
            self.blocks[-1].lines.append(line)
        else:
            self._add_block([line])
        self.dirty = True

    def _banner(self) -> Block:
        """screens/01_idle_startup.txt."""
        return Block([
            "",
            f" ▐▛███▛█   Claude Code v{VERSION}",
            f"▝▜██████▀  Opus 5.5 {MIDDOT} API Usage Billing",
            f" ▝▝   ▝▝   {self.project_dir}",
        ])

    def _spinner_line(self, turn: Turn) -> str:
        assert turn.spinner is not None
        seconds = int(time.monotonic() - turn.started)
        parts: list[str] = []
        if turn.spinner_tag == "running Stop hook":
            parts.append(turn.spinner_tag)
        if seconds:
            parts.append(f"{seconds}s")
        if turn.spinner_tag == "thinking":
            parts.append("thinking")
        return turn.spinner + (f" ({f' {MIDDOT} '.join(parts)})" if parts else "")

    def _bottom(self, cols: int) -> list[str]:
        """The composer box: screens/01 (idle), 05 (tool running), 06 (streaming)."""
        if self.dialog is not None:
            return self.dialog.lines(cols)
        turn = self.turn
        busy = turn is not None and not turn.stopped
        out: list[str] = []
        for item in self.queue:
            if item.notification is None:
                out.append(f"  ↳ queued: {displayable(first_line(item.text))}")
        if turn is not None and busy and turn.spinner is not None:
            out += [self._spinner_line(turn), ""]
        elif busy:
            out.append("")  # no spinner while text streams
        else:
            effort = f"◐ {EFFORT} {MIDDOT} /effort"
            if self.logged_out:  # blockers/no-credentials
                effort = f"Not logged in {MIDDOT} run /login"
            out.append(" " * max(0, cols - len(effort) - 2) + effort)
        out.append(RULE * cols)
        out += self._composer_lines(cols)
        out.append(RULE * cols)
        if self.exit_pending is not None:
            out.append(f"  Press {self.exit_pending} again to exit")  # screens/21_*
        else:
            mode = MODE_LABELS.get(self.permission_mode, MODE_LABELS["default"])
            hint = "esc to interrupt" if busy else "? for shortcuts"
            out.append(f"  {mode} {MIDDOT} {hint}")
        return out

    def _composer_lines(self, cols: int) -> list[str]:
        """The composer: PROMPT_MARK + NO-BREAK SPACE (not " "), then the text.

        Only the rows that fit are laid out, so a 100 KB prompt costs no more than a short
        one (screens/01_idle_startup.txt has "\u276f\u00a0" on the composer row).
        """
        room = max(1, self.rows // 3)
        lines = self.composer.split("\n")
        first = max(0, len(lines) - room)
        out: list[str] = []
        for index in range(first, len(lines)):
            prefix = PROMPT_MARK + NBSP if index == 0 else "  "
            out += wrap_cells(prefix + displayable(lines[index][-cols * room:]), cols)
        return out[-room:]

    def _frame(self) -> list[str]:
        rows, cols = self.rows, self.cols
        if isinstance(self.dialog, StartupDialog):  # blockers/trust: at the top, alone
            top = ["", *(clip_cells(line, cols) for line in self.dialog.lines(cols))][:rows]
            return top + [""] * (rows - len(top))
        bottom = [clip_cells(line, cols) for line in self._bottom(cols)]
        hidden = getattr(self.dialog, "hidden_rows", 0)
        if hidden and len(bottom) > hidden:
            bottom = bottom[:-hidden]  # blockers/plan-approval: below the last row
        if len(bottom) >= rows:
            return bottom[-rows:]
        room = rows - len(bottom)
        chunks: list[list[str]] = []
        used = 0
        for block in reversed(self.blocks):
            chunk: list[str] = []
            for line in block.lines:
                chunk += wrap_cells(displayable(line), cols)
            chunk.append("")
            chunks.append(chunk)
            used += len(chunk)
            if used >= room:
                break
        top = [line for chunk in reversed(chunks) for line in chunk][-room:]
        return top + [""] * (room - len(top)) + bottom

    def _render(self, full: bool = False) -> None:
        """Redraw the rows that changed, in place (cursor addressing, no scrolling)."""
        self.dirty = False
        if self.exit_code is not None and self.saved_tty is None:
            return
        if self.starting:
            return  # (STARTUP_S) the screen stays blank until the session begins
        frame = self._frame()
        out: list[str] = []
        previous = self.prev_frame
        if full or previous is None or len(previous) != len(frame):
            out.append("\x1b[H\x1b[2J")
            previous = [""] * len(frame)
        for row, line in enumerate(frame):
            if line != previous[row]:
                out.append(f"\x1b[{row + 1};1H\x1b[2K{colour(line)}")
        self.prev_frame = frame
        if out:
            self._write("".join(out))

    def _write(self, text: str) -> None:
        data = text.encode("utf-8", "replace")
        while data:
            try:
                written = os.write(self.out_fd, data)
            except OSError:
                return  # the tty is gone (SIGHUP)
            data = data[written:]

    def _resize(self) -> None:
        try:
            size = os.get_terminal_size(self.out_fd)
            self.cols, self.rows = max(20, size.columns), max(8, size.lines)
        except OSError:
            pass
        self._render(full=True)

    # ------------------------------------------------------------------ input

    def _on_stdin(self) -> None:
        try:
            data = os.read(self.in_fd, 65536)
        except OSError:
            data = b""
        if not data:
            self._shutdown(129, "other")  # the terminal went away: like SIGHUP
            return
        if self.starting:
            return  # no input handler yet: the real one loses these keys too
        self.inbuf += self.decoder.decode(data)
        self._parse_input()

    def _flush_escape(self) -> None:
        self.esc_timer = None
        self._parse_input(flush=True)

    def _parse_input(self, flush: bool = False) -> None:
        buf = self.inbuf
        i = 0
        while i < len(buf) and self.exit_code is None:
            if self.in_paste:
                end = buf.find(PASTE_END, i)
                if end < 0:
                    keep = len(buf) - partial_suffix(buf[i:], PASTE_END)
                    self.paste_parts.append(buf[i:keep])
                    i = keep
                    break
                self.paste_parts.append(buf[i:end])
                i = end + len(PASTE_END)
                self.in_paste = False
                self._on_paste("".join(self.paste_parts))
                self.paste_parts = []
                continue
            ch = buf[i]
            if ch == "\x1b":
                used, key = self._parse_escape(buf, i, flush)
                if used == 0:
                    break
                i += used
                if key == "<paste>":
                    self.in_paste = True
                    self.paste_parts = []
                elif key is not None:
                    self._on_key(key)
                continue
            if ch in CONTROL_KEYS:
                i += 1
                self._on_key(CONTROL_KEYS[ch])
            elif ord(ch) < 0x20:
                i += 1  # other control characters do nothing
            else:
                match = PRINTABLE_RUN.match(buf, i)
                assert match is not None
                i = match.end()
                self._on_text(match.group())
        self.inbuf = buf[i:]
        if self.inbuf.startswith("\x1b") and not self.in_paste and self.esc_timer is None:
            self.esc_timer = self.timers.call_later(ESC_TIMEOUT_S, self._flush_escape)

    @staticmethod
    def _parse_escape(buf: str, i: int, flush: bool) -> tuple[int, str | None]:
        """(characters used, key) for an escape sequence at buf[i]; (0, None) = incomplete."""
        n = len(buf)
        if i + 1 >= n:
            return (1, "<esc>") if flush else (0, None)
        nxt = buf[i + 1]
        if nxt == "[":
            j = i + 2
            while j < n and "0" <= buf[j] <= "?":
                j += 1
            while j < n and " " <= buf[j] <= "/":
                j += 1
            if j >= n:
                return (1, "<esc>") if flush else (0, None)
            params, final = buf[i + 2:j], buf[j]
            if final == "~" and params == "200":
                return j - i + 1, "<paste>"
            if final == "~" and params == "3":
                return j - i + 1, "<del>"
            return j - i + 1, CSI_KEYS.get(final) if "@" <= final <= "~" else None
        if nxt == "O":
            if i + 2 >= n:
                return (1, "<esc>") if flush else (0, None)
            return 3, CSI_KEYS.get(buf[i + 2])
        return 1, "<esc>"  # ESC followed by another key: a lone Esc, then that key

    def _on_paste(self, text: str) -> None:
        """Bracketed paste: literal text, newlines included (tmux sends CR for LF)."""
        if self.exit_code is not None or self.dialog is not None:
            return
        self.composer += text.replace("\r\n", "\n").replace("\r", "\n")
        self.exit_pending = None
        self.dirty = True

    def _on_text(self, text: str) -> None:
        """Typed characters (a run of them is inserted at once: 100 KB stays fast)."""
        if self.exit_code is not None:
            return
        if self.dialog is not None:
            for ch in text:
                if self.dialog is not None:
                    self._dialog_key(ch)
            return
        self.composer += text
        self.exit_pending = None
        self.dirty = True

    def _on_key(self, key: str) -> None:
        if self.exit_code is not None:
            return
        if self.dialog is not None:
            self._dialog_key(key)
            return
        busy = self.turn is not None and not self.turn.stopped
        if key == "<c-c>":
            if busy:
                self._interrupt()
            elif self.composer:
                self.composer = ""
            else:
                self._exit_press("Ctrl-C")
        elif key == "<c-d>":
            if not busy and not self.composer:
                self._exit_press("Ctrl-D")
        elif key == "<esc>":
            if busy:
                self._interrupt()
        elif key == "<enter>":
            if self.composer.endswith("\\"):
                self.composer = self.composer[:-1] + "\n"  # "\" + Enter: a newline
            else:
                self._submit_composer()
        elif key == "<nl>":
            self.composer += "\n"  # Ctrl+J (LF): a newline, as in the real CLI
        elif key == "<tab>":
            self.composer += "\t"
        elif key == "<bs>":
            self.composer = self.composer[:-1]
        elif key == "<c-u>":
            self.composer = self.composer[: self.composer.rfind("\n") + 1]
        elif key == "<c-w>":
            self.composer = re.sub(r"\S*\s*$", "", self.composer, count=1)
        elif key == "<c-l>":
            self._render(full=True)
        elif len(key) == 1:
            self.composer += key
            self.exit_pending = None
        self.dirty = True

    def _exit_press(self, name: str) -> None:
        """screens/21_after_one_ctrlc.txt: the first press only arms the exit."""
        if self.exit_pending == name:
            self._shutdown(0, "prompt_input_exit", resume_hint=True)
            return
        self.exit_pending = name
        if self.exit_timer is not None:
            self.exit_timer.cancel()
        self.exit_timer = self.timers.call_later(EXIT_CONFIRM_S, self._disarm_exit)

    def _disarm_exit(self) -> None:
        self.exit_pending = None
        self.dirty = True

    def _dialog_key(self, key: str) -> None:
        dialog = self.dialog
        assert dialog is not None
        if key == "<c-c>":
            self._interrupt()
            return
        # README.md "Behaviour worth knowing": dialogs ignore keys for a moment (~1 s).
        if time.monotonic() - dialog.shown_at < DIALOG_GRACE_S:
            return
        answer = dialog.key(key)
        self.dirty = True
        if answer is not None:
            self._close_dialog()
            if isinstance(dialog, StartupDialog):
                dialog.done(None if answer.value is None else int(answer.value))
            else:
                self._advance(answer.value)

    # ------------------------------------------------------------------ prompts

    def _log_prompt(self, text: str) -> None:
        """FAKE_CLAUDE_LOG: one JSON line per submitted prompt, one write, O_APPEND."""
        path = os.environ.get("FAKE_CLAUDE_LOG")
        if not path:
            return
        line = json.dumps({"prompt": text, "pid": self.pid, "ts": time.time()},
                          ensure_ascii=False) + "\n"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode("utf-8", "replace"))
            finally:
                os.close(fd)
        except OSError:
            self._log_error("prompt log")

    def _submit_composer(self) -> None:
        text = self.composer
        if not text.strip():
            return
        self.composer = ""
        self.exit_pending = None
        self._log_prompt(text)
        if self.turn is not None:
            self.queue.append(QueueItem(text))  # typed while busy: runs after this turn
            return
        self._submit(text)

    def _submit(self, text: str) -> None:
        command = text.strip()
        name, _, args = command.partition(" ")
        if name in ("/exit", "/quit"):
            self._add_prompt_block(command)
            self.prompt_id = str(uuid.uuid4())  # SessionEnd.prompt_input_exit: fresh id
            self._shutdown(0, "prompt_input_exit", resume_hint=True)
        elif name == "/clear":
            self._clear()
        elif name == "/compact":
            self._start_turn(text, self._c_compact(args.strip() or None), command=True)
        else:
            self._start_turn(text, self._script_for(text))

    def _script_for(self, prompt: str) -> Script:
        if self.logged_out:
            return self._t_fail(401)
        match = re.match(r"([A-Z]+)(?:[ \t]+(.*))?\Z", prompt, re.S)
        word, arg = (match.group(1), match.group(2) or "") if match else ("", "")
        if word != "SAY":
            arg = arg.strip()
        number = self._number(arg)
        if word == "SAY" and arg:
            return self._t_say(arg)
        if word == "RUN" and arg:
            return self._t_run(arg)
        if word == "BG" and arg:
            return self._t_bg(arg)
        if word == "WRITE" and arg:
            return self._t_write(arg)
        if word == "READ" and arg:
            return self._t_read(arg)
        if word == "ASK" and arg:
            return self._t_ask(arg)
        if word == "PLAN" and arg:
            return self._t_plan(arg)
        if word == "AGENT" and arg:
            return self._t_agent(arg)
        if word == "SLOW" and number is not None:
            return self._t_slow(number)
        if word == "WAIT" and number is not None:
            return self._t_wait(number)
        if word == "THINK" and number is not None:
            return self._t_think(number)
        if word == "OFFLINE" and number is not None:
            return self._t_offline(int(number))
        if word == "FAIL" and (number is not None or not arg):
            return self._t_fail(int(number) if number is not None else 400)
        if word == "STEPS" and number is not None:
            return self._t_steps(int(number))
        if word == "EXIT" and (number is not None or not arg):
            return self._t_exit(int(number) if number is not None else 0)
        return self._t_say(f"echo: {first_line(prompt)}")

    @staticmethod
    def _number(text: str) -> float | None:
        words = text.split()
        if not words:
            return None
        try:
            value = float(words[0])
        except ValueError:
            return None
        return value if math.isfinite(value) and value >= 0 else None

    def _start_turn(self, prompt: str, script: Script, *, command: bool = False,
                    notification: list[str] | None = None) -> None:
        """Every prompt turn starts with UserPromptSubmit and status busy."""
        self._cancel_idle()
        self.exit_pending = None
        self.prompt_id = str(uuid.uuid4())
        turn = Turn(script=script, started=time.monotonic())
        self.turn = turn
        if notification is not None:
            self._add_block(notification)
        else:
            self._add_prompt_block(prompt)
        self._update_status()
        self._schedule_tick()
        self._render()
        if not command:  # /compact has no UserPromptSubmit (timeline.md compact)
            self._tx_user(prompt)
            self._hook("UserPromptSubmit", self._payload(
                "UserPromptSubmit", {"prompt": prompt}, perm=True))
            if self.reload_instructions:
                self.reload_instructions = False
                self._instructions_loaded("compact")  # timeline.md cwd_change
        if self.turn is turn:
            self._advance(None)

    def _instructions_loaded(self, reason: str) -> None:
        path = Path(self.project_dir, "CLAUDE.md")
        if path.is_file():
            self._hook("InstructionsLoaded", self._payload("InstructionsLoaded", {
                "file_path": str(path), "memory_type": "Project", "load_reason": reason}))

    def _advance(self, value: object) -> None:
        """Run the current turn's script up to its next wait."""
        turn = self.turn
        if turn is None:
            return
        turn.timer = None
        turn.proc = None
        try:
            step = turn.script.send(value)
        except StopIteration:
            if self.turn is turn:
                self._finish_turn()
            return
        except Exception:
            self._log_error("turn script")
            if self.turn is turn:
                self._add_text_block("fake claude: internal error (see its error log)")
                self._finish_turn()
            return
        if self.turn is not turn:
            return
        if isinstance(step, Sleep):
            turn.timer = self.timers.call_later(step.seconds, lambda: self._resume(turn))
        elif isinstance(step, WaitProc):
            turn.proc = step.proc
            self._check_turn_proc()
        else:
            self._open_dialog(step.dialog)

    def _resume(self, turn: Turn) -> None:
        if self.turn is turn:
            self._advance(None)

    def _check_turn_proc(self) -> None:
        turn = self.turn
        if turn is not None and turn.proc is not None:
            code = turn.proc.poll()
            if code is not None:
                self._advance(code)

    def _finish_turn(self) -> None:
        self.turn = None
        self._update_status()
        self.dirty = True
        self._run_queue()

    def _run_queue(self) -> None:
        if self.turn is not None or self.dialog is not None or self.exit_code is not None:
            return
        if not self.queue:
            return
        item = self.queue.pop(0)
        if item.notification is not None:
            self._start_turn(item.text, self._t_after_task(), notification=item.notification)
        else:
            self._submit(item.text)
            self._run_queue()  # /clear is not a turn: keep going

    def _interrupt(self) -> None:
        """Esc / Ctrl+C during a turn: no hook fires, status flips to idle (README.md)."""
        turn = self.turn
        if turn is None:
            return
        self.turn = None
        if turn.timer is not None:
            turn.timer.cancel()
        if turn.proc is not None:
            self._kill_group(turn.proc)  # ps_after_tool_interrupt.txt: killed at once
        if self.dialog is not None:
            self._close_dialog()
        with contextlib.suppress(Exception):
            turn.script.close()
        if turn.tool_block is not None and turn.proc is not None:
            # screens/15_after_esc_interrupt_tool.txt
            turn.tool_block.lines[:] = ["  No result recorded for 1 call",
                                        f"{ELBOW}$ {turn.tool_label}", INTERRUPTED]
        else:
            self._attach(INTERRUPTED)  # screens/14_after_esc_interrupt_stream.txt
        self._tx_user([{"type": "text", "text": "[Request interrupted by user]"}])
        waiting = [item.text for item in self.queue if item.notification is None]
        if waiting:
            self.queue = [item for item in self.queue if item.notification is not None]
            self.composer = "\n".join([*waiting, self.composer]).rstrip("\n")
        self._update_status()
        self.dirty = True
        self._run_queue()

    def _open_dialog(self, dialog: Dialog) -> None:
        dialog.shown_at = time.monotonic()
        self.dialog = dialog
        kind, message = dialog.notification
        dialog.notify_timer = self.timers.call_later(
            PERMISSION_NOTIFY_S, lambda: self._dialog_notify(dialog, kind, message))
        self._update_status()
        self._render()

    def _dialog_notify(self, dialog: Dialog, kind: str, message: str) -> None:
        """README.md: permission_prompt 6.4 s after the dialog if it is still open."""
        if self.dialog is dialog:
            self._notify(kind, message)

    def _close_dialog(self) -> None:
        if self.dialog is not None and self.dialog.notify_timer is not None:
            self.dialog.notify_timer.cancel()
        self.dialog = None
        self.dirty = True

    def _schedule_tick(self) -> None:
        if self.tick_timer is None:
            self.tick_timer = self.timers.call_later(1.0, self._tick)

    def _tick(self) -> None:
        """Refresh the spinner's elapsed seconds while a turn runs."""
        self.tick_timer = None
        if self.turn is not None:
            self.dirty = True
            self._schedule_tick()

    def _schedule_idle(self) -> None:
        self._cancel_idle()
        self.idle_timer = self.timers.call_later(IDLE_NOTIFY_S, self._idle_notify)

    def _cancel_idle(self) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None

    def _idle_notify(self) -> None:
        """README.md: idle_prompt ~5 s after a turn ended with Stop (not after Esc/deny)."""
        self.idle_timer = None
        if self.turn is None and self.dialog is None and self.exit_code is None:
            self._notify("idle_prompt", "Claude is waiting for your input")

    # ------------------------------------------------------------------ turn pieces

    def _current(self) -> Turn:
        assert self.turn is not None
        return self.turn

    def _assistant(self, text: str, tool: tuple[str, dict[str, object], str] | None = None
                   ) -> Block:
        """Show a text reply ("● ...") and fire its MessageDisplay."""
        block = self._add_text_block(text)
        content: list[dict[str, object]] = [{"type": "text", "text": text}]
        if tool is not None:
            content.append({"type": "tool_use", "id": tool[2], "name": tool[0],
                            "input": tool[1]})
        self._tx_assistant(content, "tool_use" if tool is not None else "end_turn")
        self._message_display(text, str(uuid.uuid4()), 0, True)
        return block

    def _tx_tool_use(self, name: str, tool_input: dict[str, object], tool_id: str) -> None:
        self._tx_assistant([{"type": "tool_use", "id": tool_id, "name": name,
                             "input": tool_input}], "tool_use")

    def _stop(self, last: str) -> None:
        """End a turn: Stop, the done line, status idle, idle_prompt later."""
        turn = self._current()
        turn.spinner = f"✻ Thinking{ELLIPSIS}"
        turn.spinner_tag = "running Stop hook"  # screens/08b_after_thinking.txt
        self.dirty = True
        self._hook("Stop", self._payload("Stop", {
            "stop_hook_active": False,
            "last_assistant_message": last,
            "background_tasks": [task.payload() for task in self.bg if not task.done],
            "session_crons": [],
        }, perm=True, effort=True))
        seconds = int(time.monotonic() - turn.started)
        self._add_block([f"✻ Worked for {seconds}s {MIDDOT} done {clock()}"])
        turn.stopped = True
        # README.md: the status file lags the hooks; it says idle only after Stop ran.
        self._update_status()
        self._schedule_idle()

    def _end_quietly(self) -> None:
        """A denied permission: back to the composer, no hook at all (write_deny)."""
        self._tx_user([{"type": "text", "text": "[Request interrupted by user for tool use]"}])

    def _blocked(self, name: str, tool_input: dict[str, object], tool_id: str,
                 reason: str, block: Block) -> Script:
        """A PreToolUse hook exited 2: like timeline.md deny_rule (PostToolBatch, Stop)."""
        message = f"PreToolUse:{name} hook error: {reason}"
        block.lines[:] = ["  Did not run 1 call", f"{ELBOW}{block.lines[0][2:]}",
                          f"{ELBOW}Blocked by hook {MIDDOT} {first_line(reason)}"]
        self._tx_tool_result(tool_id, message, True)
        self._post_batch(name, tool_input, tool_id, message)
        yield Sleep(model_time(AFTER_TOOL_S))
        self._assistant("done (tool error)")
        self._stop("done (tool error)")

    # ------------------------------------------------------------------ scripts

    def _t_say(self, text: str) -> Script:
        """timeline.md say: UserPromptSubmit -> MessageDisplay -> Stop."""
        yield Sleep(model_time(FIRST_TOKEN_S))
        self._assistant(text)
        self._stop(text)

    def _t_wait(self, seconds: float) -> Script:
        """timeline.md wait_first_token: nothing for n s (spinner only), then a reply."""
        yield Sleep(model_time(seconds))
        reply = f"waited {fmt_num(seconds)} s"
        self._assistant(reply)
        self._stop(reply)

    def _t_think(self, seconds: float) -> Script:
        """timeline.md think: a thinking spinner, no MessageDisplay for the thinking."""
        turn = self._current()
        turn.spinner, turn.spinner_tag = f"· Mulling{ELLIPSIS}", "thinking"
        self.dirty = True
        yield Sleep(model_time(seconds))
        turn.spinner, turn.spinner_tag = f"✻ Thinking{ELLIPSIS}", None
        self._add_block([f"  Thought for {int(seconds)}s"])  # screens/08b_after_thinking.txt
        reply = f"thought for {fmt_num(seconds)} s"
        self._assistant(reply)
        self._stop(reply)

    def _t_offline(self, attempts: int) -> Script:
        """No route to the API: the spinner row counts the retries (seen live on 2.1.332;
        not in the 2.1.328 recordings), no hook fires, then the connection comes back."""
        turn = self._current()
        for attempt in range(1, attempts + 1):
            turn.spinner = (f"✻ Can't reach the API server — check your internet or DNS "
                            f"(ENOTFOUND) {MIDDOT} retrying in 1s {MIDDOT} attempt "
                            f"{attempt}/10")
            self.dirty = True
            yield Sleep(1.0)
        turn.spinner = f"✻ Thinking{ELLIPSIS}"
        self.dirty = True
        yield Sleep(model_time(1.0))
        self._assistant("back online")
        self._stop("back online")

    def _t_slow(self, seconds: float) -> Script:
        """timeline.md slow_stream: 20 lines, one MessageDisplay each, a final empty one."""
        turn = self._current()
        yield Sleep(model_time(FIRST_TOKEN_S))
        turn.spinner = None  # README.md: no spinner line while text streams
        message_id = str(uuid.uuid4())
        lines: list[str] = []
        block: Block | None = None
        for index in range(20):
            if index:
                yield Sleep(model_time(seconds / 20))
            line = f"chunk {index:02d} of slow reply."
            lines.append(line)
            if block is None:
                block = self._add_block([f"● {line}"])
            else:
                block.lines.append(f"  {line}")
                self.dirty = True
            self._message_display(line + "\n", message_id, index, False)
        self._message_display("", message_id, 20, True)
        text = "\n".join(lines)
        self._tx_assistant([{"type": "text", "text": text}], "end_turn")
        turn.spinner = f"✻ Thinking{ELLIPSIS}"
        self._stop(text)

    def _t_fail(self, code: int) -> Script:
        """timeline.md api_error: retries, then StopFailure; no Stop, no MessageDisplay."""
        yield Sleep(model_time(API_RETRIES_S))
        message = f"API Error: {code} mock failure {code}"
        if code == 429:  # blockers/rate-limit
            message = f"API Error: Request rejected (429) {MIDDOT} mock failure 429"
        elif code == 401 and self.logged_out:
            message = f"Invalid API key {MIDDOT} Please run /login"
        self._add_text_block(message)  # screens/17_after_api_error.txt
        self._tx_assistant([{"type": "text", "text": message}], "stop_sequence")
        if code == 429:
            error = "rate_limit"
        elif code in (401, 403):
            error = "authentication_failed"
        elif code >= 500:
            error = "server_error"
        else:
            error = "unknown"  # recorded for 400
        self._hook("StopFailure", self._payload(
            "StopFailure", {"error": error, "last_assistant_message": message}, effort=True))

    def _t_exit(self, code: int) -> Script:
        self._shutdown(code, "prompt_input_exit", resume_hint=True)
        return
        yield  # a generator

    def _spawn(self, cmd: str, stdout: IO[bytes], stderr: IO[bytes], cwd_file: str | None
               ) -> subprocess.Popen[bytes]:
        """``bash -c`` in a new session: own process group, no controlling terminal
        (ps_tool_running.txt: pgid = the bash pid, tpgid = -1)."""
        script = f"eval {shlex.quote(cmd)}"
        if cwd_file is not None:
            script += (f"\n__fake_claude_status=$?\npwd -P >| {shlex.quote(cwd_file)}"
                       "\nexit $__fake_claude_status")
        return subprocess.Popen(
            [shutil.which("bash") or "/bin/bash", "-c", script],
            stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
            cwd=self.cwd if os.path.isdir(self.cwd) else None,
            env=self._child_env(), start_new_session=True,
        )

    def _t_run(self, cmd: str) -> Script:
        """timeline.md run_echo / run_sleep (and cwd_change for ``cd``)."""
        turn = self._current()
        yield Sleep(model_time(FIRST_TOKEN_S))
        tool_id = tool_use_id()
        tool_input: dict[str, object] = {"command": cmd, "description": f"Run: {cmd}"}
        self._assistant("Running it.", ("Bash", tool_input, tool_id))
        label = first_line(cmd)
        block = self._add_block([f"● Run: {label}", f"  ⎿  $ {label}"])  # screens/05
        turn.tool_block, turn.tool_label = block, label
        reason = self._pre_tool("Bash", tool_input, tool_id)
        if reason is not None:
            yield from self._blocked("Bash", tool_input, tool_id, reason, block)
            return
        fd, cwd_file = tempfile.mkstemp(prefix="claude-", suffix="-cwd")
        os.close(fd)
        try:
            with tempfile.TemporaryFile() as out_file, tempfile.TemporaryFile() as err_file:
                started = time.monotonic()
                proc = self._spawn(cmd, out_file, err_file, cwd_file)
                code = yield WaitProc(proc)
                duration = int((time.monotonic() - started) * 1000)
                out_file.seek(0)
                err_file.seek(0)
                stdout = out_file.read(1 << 20).decode("utf-8", "replace").rstrip("\n")
                stderr = err_file.read(1 << 20).decode("utf-8", "replace").rstrip("\n")
            new_cwd = Path(cwd_file).read_text(errors="replace").strip()
        finally:
            with contextlib.suppress(OSError):
                os.unlink(cwd_file)
        turn.tool_block = None
        block.lines[:] = ["  Ran 1 shell command"]  # screens/04_after_run_echo.txt
        status = int(code) if isinstance(code, int) else 1
        if status < 0:
            status = 128 - status
        output = "\n".join(part for part in (stdout, stderr) if part)
        if status == 0:
            quiet = first_line(cmd).split()[:1] in (["cd"], ["mkdir"], ["touch"])
            response = {"stdout": stdout, "stderr": stderr, "interrupted": False,
                        "isImage": False, "noOutputExpected": quiet}
            self._post_tool("Bash", tool_input, tool_id, response, duration)
            result = output or "(Bash completed with no output)"
        else:
            result = f"Exit code {status}" + (f"\n{output}" if output else "")
            self._post_tool_failure("Bash", tool_input, tool_id, result, duration)
        if new_cwd and new_cwd != self.cwd and os.path.isdir(new_cwd):
            old, self.cwd = self.cwd, new_cwd
            self._hook("CwdChanged", self._payload(
                "CwdChanged", {"old_cwd": old, "new_cwd": new_cwd}))
        self._tx_tool_result(tool_id, result, status != 0)
        self._post_batch("Bash", tool_input, tool_id, result)
        yield Sleep(model_time(AFTER_TOOL_S))
        reply = "done" if status == 0 else "done (tool error)"
        self._assistant(reply)
        self._stop(reply)

    def _t_steps(self, count: int) -> Script:
        """A turn of ``count`` tool-using messages (what cbos delegate's --max-turns counts);
        each is a Bash ``sleep 0.3`` with its hooks and transcript lines."""
        for step in range(1, count + 1):
            yield Sleep(model_time(TOOL_CALL_S))
            tool_id = tool_use_id()
            tool_input: dict[str, object] = {"command": "sleep 0.3",
                                             "description": f"Step {step}"}
            self._assistant(f"Step {step}.", ("Bash", tool_input, tool_id))
            block = self._add_block([f"● Step {step}", "  ⎿  $ sleep 0.3"])
            reason = self._pre_tool("Bash", tool_input, tool_id)
            if reason is not None:
                yield from self._blocked("Bash", tool_input, tool_id, reason, block)
                return
            yield Sleep(0.3)
            self._post_tool("Bash", tool_input, tool_id, {
                "stdout": "", "stderr": "", "interrupted": False, "isImage": False,
                "noOutputExpected": True}, 300)
            self._tx_tool_result(tool_id, "(Bash completed with no output)", False)
            self._post_batch("Bash", tool_input, tool_id, "(Bash completed with no output)")
            block.lines[:] = ["  Ran 1 shell command"]
        yield Sleep(model_time(AFTER_TOOL_S))
        self._assistant(f"done in {count} steps")
        self._stop(f"done in {count} steps")

    def _t_bg(self, cmd: str) -> Script:
        """timeline.md bg_bash: the turn ends while the shell runs (status "shell")."""
        yield Sleep(model_time(TOOL_CALL_S))
        tool_id = tool_use_id()
        description = f"Background: {cmd}"
        tool_input: dict[str, object] = {"command": cmd, "description": description,
                                         "run_in_background": True}
        self._tx_tool_use("Bash", tool_input, tool_id)
        block = self._add_block([f"● {first_line(description)}"])
        reason = self._pre_tool("Bash", tool_input, tool_id)
        if reason is not None:
            yield from self._blocked("Bash", tool_input, tool_id, reason, block)
            return
        task_id = "b" + "".join(secrets.choice(string.ascii_lowercase + string.digits)
                                for _ in range(8))
        output = self.tasks_dir / f"{task_id}.output"
        started = time.monotonic()
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            with open(output, "ab") as sink:
                proc = self._spawn(cmd, sink, sink, None)
        except OSError as exc:
            error = f"Failed to start background command: {exc}"
            self._post_tool_failure("Bash", tool_input, tool_id, error, 0)
            self._post_batch("Bash", tool_input, tool_id, error)
            self._assistant("done (tool error)")
            self._stop("done (tool error)")
            return
        self.bg.append(BgTask(task_id, "shell", description, tool_id, command=cmd,
                              output_file=str(output), proc=proc))
        duration = int((time.monotonic() - started) * 1000)
        self._post_tool("Bash", tool_input, tool_id, {
            "stdout": "", "stderr": "", "interrupted": False, "isImage": False,
            "noOutputExpected": False, "backgroundTaskId": task_id}, duration)
        result = (
            f"Command running in background with ID: {task_id}. Output is being written "
            f"to: {output}. You will be notified when it completes \u2014 do not poll that "
            "file or sleep while waiting. Read the file only if the user asks for progress, "
            "or if you need a line it prints before you can go on, such as a server's ready "
            "line or port."
        )
        self._tx_tool_result(tool_id, result, False)
        self._post_batch("Bash", tool_input, tool_id, result)
        block.lines[:] = ["  Ran 1 shell command"]
        yield Sleep(model_time(AFTER_TOOL_S))
        self._assistant("done")
        self._stop("done")

    def _t_after_task(self) -> Script:
        """The turn a <task-notification> starts (timeline.md bg_bash / agent)."""
        yield Sleep(model_time(FIRST_TOKEN_S))
        self._assistant("OK")
        self._stop("OK")

    def _bg_finished(self, task: BgTask, code: int) -> None:
        task.done = True
        self.bg = [other for other in self.bg if not other.done]
        if code < 0:
            code = 128 - code
        summary = f'Background command "{task.description}" completed (exit code {code})'
        text = (
            "<task-notification>\n"
            f"<task-id>{task.task_id}</task-id>\n"
            f"<tool-use-id>{task.tool_use_id}</tool-use-id>\n"
            f"<output-file>{task.output_file}</output-file>\n"
            f"<status>{'completed' if code == 0 else 'failed'}</status>\n"
            f"<summary>{summary}</summary>\n"
            "</task-notification>"
        )
        self.queue.append(QueueItem(text, notification=[f"● {summary}"]))  # screens/17
        self._update_status()
        self.dirty = True
        self._run_queue()

    def _t_agent(self, sub_prompt: str) -> Script:
        """timeline.md agent: an async subagent, then a <task-notification> turn."""
        yield Sleep(model_time(TOOL_CALL_S))
        tool_id = tool_use_id()
        description = "fake subagent"
        tool_input: dict[str, object] = {"description": description, "prompt": sub_prompt,
                                         "subagent_type": "general-purpose"}
        self._tx_tool_use("Agent", tool_input, tool_id)
        block = self._add_block([f"● Agent({description})"])
        reason = self._pre_tool("Agent", tool_input, tool_id)
        if reason is not None:
            yield from self._blocked("Agent", tool_input, tool_id, reason, block)
            return
        agent_id = "a" + secrets.token_hex(8)
        output = str(self.tasks_dir / f"{agent_id}.output")
        self._hook("SubagentStart", self._payload("SubagentStart", {}, pre={
            "agent_id": agent_id, "agent_type": "general-purpose"}))
        task = BgTask(agent_id, "subagent", description, tool_id, output_file=output)
        self.bg.append(task)
        self._post_tool("Agent", tool_input, tool_id, {
            "isAsync": True,
            "status": "async_launched",
            "agentId": agent_id,
            "description": description,
            "resolvedModel": self.model,
            "prompt": sub_prompt,
            "outputFile": output,
            "canReadOutputFile": True,
            "canContinueAgent": True,
        }, 19)
        result = [{"type": "text", "text": (
            "Async agent launched successfully.\n"
            f"agentId: {agent_id} (internal ID - do not mention to user.)\n"
            "The agent is working in the background. You will be notified automatically "
            f"when it completes.\noutput_file: {output}")}]
        self._tx_tool_result(tool_id, result, False)
        self._post_batch("Agent", tool_input, tool_id, result)
        block.lines.append(f"{ELBOW}Backgrounded agent (↓ to manage {MIDDOT} ctrl+o to expand)")
        self.timers.call_later(model_time(SUBAGENT_S),
                               lambda: self._subagent_done(task, sub_prompt))
        yield Sleep(model_time(FIRST_TOKEN_S))
        self._assistant("done")
        self._stop("done")

    def _subagent_done(self, task: BgTask, sub_prompt: str) -> None:
        if self.exit_code is not None:
            return
        match = re.match(r"SAY[ \t]+(.*)\Z", sub_prompt, re.S)
        reply = match.group(1) if match else f"echo: {first_line(sub_prompt)}"
        slug = project_slug(self.project_dir)
        transcript = (self.config_dir / "projects" / slug / self.session_id / "subagents"
                      / f"agent-{task.task_id}.jsonl")
        with contextlib.suppress(OSError):
            transcript.parent.mkdir(parents=True, exist_ok=True)
            with open(transcript, "a", encoding="utf-8") as sink:
                for role, content in (("user", sub_prompt), ("assistant", reply)):
                    sink.write(json.dumps({"type": role, "agentId": task.task_id,
                                           "message": {"role": role, "content": content},
                                           "sessionId": self.session_id,
                                           "timestamp": iso_now()}) + "\n")
        self._hook("SubagentStop", self._payload("SubagentStop", {
            "stop_hook_active": False,
            "agent_transcript_path": str(transcript),
            "last_assistant_message": reply,
            "background_tasks": [task.payload()],
            "session_crons": [],
        }, perm=True, effort=True, pre={"agent_id": task.task_id,
                                        "agent_type": "general-purpose"}))
        task.done = True
        self.bg = [other for other in self.bg if not other.done]
        summary = f'Agent "{task.description}" finished'
        text = (
            "<task-notification>\n"
            f"<task-id>{task.task_id}</task-id>\n"
            f"<tool-use-id>{task.tool_use_id}</tool-use-id>\n"
            f"<output-file>{task.output_file}</output-file>\n"
            "<status>completed</status>\n"
            f"<summary>{summary}</summary>\n"
            f"<result>{reply}</result>\n"
            "</task-notification>"
        )
        self.queue.append(QueueItem(text, notification=[f"● {summary} {MIDDOT} 0s"]))
        self._run_queue()

    def _t_read(self, path: str) -> Script:
        """timeline.md tool_failure: a missing file -> PostToolUseFailure."""
        yield Sleep(model_time(TOOL_CALL_S))
        full = os.path.join(self.cwd, os.path.expanduser(path))
        tool_id = tool_use_id()
        tool_input: dict[str, object] = {"file_path": full}
        self._tx_tool_use("Read", tool_input, tool_id)
        block = self._add_block([f"● Read({path})"])
        reason = self._pre_tool("Read", tool_input, tool_id)
        if reason is not None:
            yield from self._blocked("Read", tool_input, tool_id, reason, block)
            return
        started = time.monotonic()
        try:
            content = Path(full).read_text(encoding="utf-8", errors="replace")
        except OSError:
            content = None
        duration = int((time.monotonic() - started) * 1000)
        if content is None:
            error = (f"File does not exist. Note: your current working directory is "
                     f"{self.cwd}.")
            self._post_tool_failure("Read", tool_input, tool_id, error, duration)
            block.lines[:] = [f"  Read 1 file {MIDDOT} 1 failed"]
            result, reply = error, "done (tool error)"
        else:
            count = len(content.splitlines())
            self._post_tool("Read", tool_input, tool_id, {"type": "text", "file": {
                "filePath": full, "content": content, "numLines": count, "startLine": 1,
                "totalLines": count}}, duration)
            block.lines[:] = ["  Read 1 file"]
            result, reply = content, "done"
        self._tx_tool_result(tool_id, result, content is None)
        self._post_batch("Read", tool_input, tool_id, result)
        yield Sleep(model_time(AFTER_TOOL_S))
        self._assistant(reply)
        self._stop(reply)

    def _t_write(self, path: str) -> Script:
        """timeline.md write_allow / write_deny; screens/09, 11 and 12."""
        yield Sleep(model_time(TOOL_CALL_S))
        full = os.path.join(self.cwd, os.path.expanduser(path))
        shown = os.path.relpath(full, self.cwd) if inside(full, self.cwd) else full
        tool_id = tool_use_id()
        tool_input: dict[str, object] = {"file_path": full, "content": WRITE_CONTENT}
        self._tx_tool_use("Write", tool_input, tool_id)
        block = self._add_block([f"● Write({shown})"])
        reason = self._pre_tool("Write", tool_input, tool_id)
        if reason is not None:
            yield from self._blocked("Write", tool_input, tool_id, reason, block)
            return
        create = not os.path.exists(full)
        answer: object = "yes"
        if self.permission_mode not in ("acceptEdits", "bypassPermissions"):
            suggestions: list[dict[str, object]] = [
                {"type": "setMode", "mode": "acceptEdits", "destination": "session"}]
            if inside(full, self.project_dir):
                option2 = "Yes, allow all edits during this session (shift+tab)"
            else:
                parent = os.path.dirname(full)
                suggestions.append({"type": "addDirectories", "directories": [parent],
                                    "destination": "session"})
                option2 = (
                    "Yes, and switch to accept edits (auto-approve file edits and common "
                    "file commands) for this session; Yes, and always allow access to "
                    f"{parent} for this session (shift+tab)"
                )
            auto = self.permission_mode == "auto"
            if not auto:
                self._hook("PermissionRequest", self._payload("PermissionRequest", {
                    "tool_name": "Write",
                    "tool_input": tool_input,
                    "permission_suggestions": suggestions,
                }, perm=True, effort=True))
            dialog = WriteDialog(full, os.path.relpath(full, self.cwd), create, option2, auto)
            answer = yield WaitDialog(dialog)
        if answer == "no":
            # write_deny: "Rejected", then nothing: no hook, status idle, no idle_prompt.
            block.lines += [f"{ELBOW}Rejected write to {shown}",
                            f"      1 {WRITE_CONTENT.strip()}"]
            self._tx_tool_result(tool_id, "The user doesn't want to proceed with this tool "
                                 "use. The tool use was rejected.", True)
            self._end_quietly()
            return
        if answer == "yes_all":
            self.permission_mode = "acceptEdits"  # the setMode suggestion
        started = time.monotonic()
        original: str | None = None
        try:
            if not create:
                original = Path(full).read_text(encoding="utf-8", errors="replace")
            os.makedirs(os.path.dirname(full) or ".", exist_ok=True)
            Path(full).write_text(WRITE_CONTENT, encoding="utf-8")
            error = None
        except OSError as exc:
            error = f"{type(exc).__name__}: {exc}"
        duration = int((time.monotonic() - started) * 1000)
        if error is not None:
            self._post_tool_failure("Write", tool_input, tool_id, error, duration)
            block.lines.append(f"{ELBOW}Error writing file")
            result, reply = error, "done (tool error)"
        else:
            self._post_tool("Write", tool_input, tool_id, {
                "type": "create" if create else "update",
                "filePath": full,
                "content": WRITE_CONTENT,
                "structuredPatch": [],
                "originalFile": original,
                "userModified": False,
            }, duration)
            block.lines += [f"{ELBOW}Wrote 1 line to {shown}", f"      1 {WRITE_CONTENT.strip()}"]
            result = (f"File created successfully at: {full} (file state is current in your "
                      "context \u2014 no need to Read it back)")
            reply = "done"
        self._tx_tool_result(tool_id, result, error is not None)
        self._post_batch("Write", tool_input, tool_id, result)
        yield Sleep(model_time(AFTER_TOOL_S))
        self._assistant(reply)
        self._stop(reply)

    def _t_plan(self, plan: str) -> Script:
        """blockers/plan-approval: ExitPlanMode behind its dialog; Esc or 2 rejects the plan
        (no hook; the status file goes idle), 1 leaves plan mode and goes on."""
        yield Sleep(model_time(TOOL_CALL_S))
        tool_id = tool_use_id()
        tool_input: dict[str, object] = {}  # recorded: ExitPlanMode's input arrives empty
        self._tx_tool_use("ExitPlanMode", {"plan": plan}, tool_id)
        # The verdict hangs under the prompt itself (blockers/plan-approval/after.txt).
        block = self.blocks[-1] if self.blocks else self._add_block([])
        reason = self._pre_tool("ExitPlanMode", tool_input, tool_id)
        if reason is not None:
            yield from self._blocked("ExitPlanMode", tool_input, tool_id, reason, block)
            return
        self._hook("PermissionRequest", self._payload("PermissionRequest", {
            "tool_name": "ExitPlanMode", "tool_input": tool_input}, perm=True, effort=True))
        answer = yield WaitDialog(PlanDialog())
        if answer != "yes":
            width = max(len(plan) + 4, 21)
            block.lines += [f"{ELBOW}Rejected Claude's plan:", f"     ╭{'─' * width}╮",
                            f"     │ {plan.ljust(width - 2)} │", f"     ╰{'─' * width}╯"]
            self._tx_tool_result(tool_id, "The user doesn't want to proceed with this tool "
                                 "use. The tool use was rejected.", True)
            self._end_quietly()
            return
        self.permission_mode = "default"
        self._post_tool("ExitPlanMode", tool_input, tool_id, {"plan": plan}, 1)
        self._tx_tool_result(tool_id, "User has approved your plan.", False)
        self._post_batch("ExitPlanMode", tool_input, tool_id, "approved")
        yield Sleep(model_time(AFTER_TOOL_S))
        self._assistant("plan approved")
        self._stop("plan approved")

    def _t_ask(self, question: str) -> Script:
        """timeline.md ask_user; screens/13_ask_user_question.txt."""
        yield Sleep(model_time(TOOL_CALL_S))
        tool_id = tool_use_id()
        questions = [{
            "question": question,
            "header": "Choice",
            "options": [{"label": label, "description": description}
                        for label, description in ASK_OPTIONS],
            "multiSelect": False,
        }]
        tool_input: dict[str, object] = {"questions": questions}
        self._tx_tool_use("AskUserQuestion", tool_input, tool_id)
        reason = self._pre_tool("AskUserQuestion", tool_input, tool_id)
        if reason is not None:
            block = self._add_block([f"● AskUserQuestion({first_line(question)})"])
            yield from self._blocked("AskUserQuestion", tool_input, tool_id, reason, block)
            return
        self._hook("PermissionRequest", self._payload("PermissionRequest", {
            "tool_name": "AskUserQuestion", "tool_input": tool_input}, perm=True, effort=True))
        answer = yield WaitDialog(AskDialog(question))
        if not isinstance(answer, str):
            self._attach(f"{ELBOW}User declined to answer questions")
            self._tx_tool_result(tool_id, "User declined to answer questions", True)
            self._end_quietly()
            return
        answered: dict[str, object] = {"questions": questions, "answers": {question: answer},
                                       "annotations": {}}
        self._add_block(["● Answered Claude's questions:",
                         f"{ELBOW}{MIDDOT} {first_line(question)} → {answer}"])
        self._post_tool("AskUserQuestion", answered, tool_id, answered, 1)
        result = (f'Your questions have been answered: "{question}"="{answer}". You can now '
                  "continue with these answers in mind.")
        self._tx_tool_result(tool_id, result, False)
        self._post_batch("AskUserQuestion", tool_input, tool_id, result)
        yield Sleep(model_time(AFTER_TOOL_S))
        reply = f"picked: {answer}"
        self._assistant(reply)
        self._stop(reply)

    def _c_compact(self, instructions: str | None) -> Script:
        """timeline.md compact: PreCompact, SubagentStop(""), SessionStart, PostCompact."""
        turn = self._current()
        turn.spinner = f"✻ Compacting conversation{ELLIPSIS}"
        self.dirty = True
        yield Sleep(model_time(COMPACT_STEP_S))
        self._hook("PreCompact", self._payload(
            "PreCompact", {"trigger": "manual", "custom_instructions": instructions}))
        yield Sleep(model_time(COMPACT_STEP_S))
        agent_id = "a" + secrets.token_hex(8)
        slug = project_slug(self.project_dir)
        self._hook("SubagentStop", self._payload("SubagentStop", {
            "stop_hook_active": False,
            "agent_transcript_path": str(self.config_dir / "projects" / slug / self.session_id
                                         / "subagents" / f"agent-{agent_id}.jsonl"),
            "last_assistant_message": COMPACT_SUMMARY,
            "background_tasks": [],
            "session_crons": [],
        }, perm=True, effort=True, pre={"agent_id": agent_id, "agent_type": ""}))
        yield Sleep(model_time(COMPACT_STEP_S))
        self._hook("SessionStart", self._payload(
            "SessionStart", {"source": "compact", "model": self.model}))
        self._hook("PostCompact", self._payload(
            "PostCompact", {"trigger": "manual", "compact_summary": COMPACT_SUMMARY}))
        self._attach(f"{ELBOW}Compacted (ctrl+o to see full summary)")  # screens/18
        self._tx_user(f"This session is being continued from a previous conversation.\n"
                      f"{COMPACT_SUMMARY}")
        self.reload_instructions = True

    def _clear(self) -> None:
        """timeline.md clear: SessionEnd(clear), then SessionStart(clear) with a new id."""
        self._cancel_idle()
        self.prompt_id = str(uuid.uuid4())
        self._hook("SessionEnd", self._payload("SessionEnd", {"reason": "clear"}))
        self.session_id = str(uuid.uuid4())
        self.prompt_id = None  # SessionStart.clear.json has no prompt_id and no model
        self.cwd = self.project_dir  # ... and the project dir as cwd (SessionEnd had sub/)
        self.last_uuid = None
        self.blocks = [self._banner()]
        self.dirty = True
        self._update_status(force=True)
        self._render()
        self._hook("SessionStart", self._payload("SessionStart", {"source": "clear"}))

    # ------------------------------------------------------------------ children, signals

    def _kill_group(self, proc: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        self.reap.append(proc)

    def _check_children(self) -> None:
        self._check_turn_proc()
        for task in list(self.bg):
            if task.proc is not None and not task.done:
                code = task.proc.poll()
                if code is not None:
                    self._bg_finished(task, code)
        self.reap = [proc for proc in self.reap if proc.poll() is None]

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.pending_signals.append(signum)  # handled by the loop (set_wakeup_fd wakes it)

    def _handle_signals(self) -> None:
        while self.pending_signals and self.exit_code is None:
            signum = self.pending_signals.pop(0)
            if signum == signal.SIGCHLD:
                self._check_children()
            elif signum == signal.SIGWINCH:
                self._resize()
            elif signum == signal.SIGTERM:
                self._shutdown(143, "other")  # timeline.md exit_sigterm
            elif signum == signal.SIGHUP:
                self._shutdown(129, "other")  # timeline.md exit_sighup
            elif signum == signal.SIGINT:
                self._on_key("<c-c>")

    def _shutdown(self, code: int, reason: str, *, resume_hint: bool = False) -> None:
        """SessionEnd (hooks still run during shutdown, README.md), then leave the loop."""
        if self.exit_code is not None:
            return
        self.exit_code = code
        self.resume_hint = resume_hint
        turn, self.turn = self.turn, None
        if turn is not None:
            if turn.timer is not None:
                turn.timer.cancel()
            if turn.proc is not None:
                self._kill_group(turn.proc)
        self._close_dialog()
        for task in self.bg:
            if task.proc is not None and not task.done:
                self._kill_group(task.proc)
        self._hook("SessionEnd", self._payload("SessionEnd", {"reason": reason}))

    # ------------------------------------------------------------------ main loop

    def _log_error(self, where: str) -> None:
        path = os.environ.get("FAKE_CLAUDE_ERROR_LOG") or str(
            self.config_dir / "fake-claude-errors.log")
        with contextlib.suppress(OSError), open(path, "a", encoding="utf-8") as sink:
            sink.write(f"--- {iso_now()} pid {self.pid}: {where}\n{traceback.format_exc()}\n")

    def _setup(self) -> None:
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGINT,
                       signal.SIGWINCH):
            signal.signal(signum, self._on_signal)
        os.set_blocking(self.wake_w, False)
        os.set_blocking(self.wake_r, False)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        self.saved_tty = termios.tcgetattr(self.in_fd)
        tty.setraw(self.in_fd)
        # Alternate screen (its renderer leaves no scrollback), bracketed paste, no cursor.
        self._write("\x1b[?1049h\x1b[?2004h\x1b[?25l")
        self.selector.register(self.in_fd, selectors.EVENT_READ)
        self.selector.register(self.wake_r, selectors.EVENT_READ)
        with contextlib.suppress(OSError):
            size = os.get_terminal_size(self.out_fd)
            self.cols, self.rows = max(20, size.columns), max(8, size.lines)

    def _teardown(self) -> None:
        for task in self.bg:
            if task.proc is not None and task.proc.poll() is None:
                self._kill_group(task.proc)
        for proc in self.reap:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                proc.wait(timeout=1)
        with contextlib.suppress(OSError):
            self.status_path.unlink()  # deleted on exit (timeline.md exit: status None)
        if self.saved_tty is not None:
            self._write("\x1b[?2004l\x1b[?25h\x1b[?1049l")
            with contextlib.suppress(termios.error, OSError):
                termios.tcsetattr(self.in_fd, termios.TCSADRAIN, self.saved_tty)
            self.saved_tty = None
            if self.resume_hint:
                args = " ".join(shlex.quote(arg) for arg in self.opts.passthrough)
                command = " ".join(part for part in ("claude", args) if part)
                # screens/20_after_exit.txt: tmux's "Pane is dead" line scrolls the screen
                # up one row, and the hint still starts the top row there.
                self._write(f"\nResume this session with:\n{command} --resume "
                            f"{self.session_id}\n")
        with contextlib.suppress(ValueError, OSError):
            signal.set_wakeup_fd(-1)

    def _startup(self) -> None:
        """The startup dialogs first (no hook, no status file), then the session."""
        self.gates = [*self._startup_dialogs()]
        self._next_gate()

    def _startup_dialogs(self) -> list[StartupDialog]:
        path, folder = startup.claude_json(self.config_dir), self.project_dir
        found: list[StartupDialog] = []
        if startup.needs_trust(path, folder):
            def trusted(choice: int | None) -> None:
                if choice != 1:  # "No, exit" or Esc
                    self._shutdown_quietly(1)
                    return
                startup.remember(path, folder, hasTrustDialogAccepted=True)
                self._next_gate()

            found.append(StartupDialog(lambda c, s: screens.trust(c, folder, s),
                                       screens.TRUST_OPTIONS, 0, trusted))
        for name in startup.new_mcp_servers(path, folder):
            def decided(choice: int | None, name: str = name) -> None:
                if choice == 0:
                    startup.remember(path, folder, enabledMcpjsonServers=[name])
                elif choice == 1:
                    startup.remember(path, folder, enableAllProjectMcpServers=True)
                else:
                    startup.remember(path, folder, disabledMcpjsonServers=[name])
                self._next_gate()

            found.append(StartupDialog(lambda c, s, name=name: screens.mcp_servers(c, name, s),
                                       screens.MCP_OPTIONS, 2, decided))
        return found

    def _next_gate(self) -> None:
        if self.gates:
            dialog = self.gates.pop(0)
            dialog.shown_at = time.monotonic()
            self.dialog = dialog  # no status file, no hook, no notification: none yet
            self._render(full=True)
            return
        if STARTUP_S > 0:
            self.starting = True
            self.dialog = None
            self._write("\x1b[2J\x1b[H")  # the dialogs are gone; no composer yet
            self.prev_frame = None
            self.timers.call_later(STARTUP_S, self._started)
            return
        self._begin()

    def _started(self) -> None:
        self.starting = False
        self._begin()

    def _shutdown_quietly(self, code: int) -> None:
        """Leaving at a startup dialog: no session began, so no SessionEnd."""
        self.exit_code = code

    def _begin(self) -> None:
        """timeline.md startup: SessionStart, the status file, InstructionsLoaded."""
        self.blocks = [self._banner()]
        self._load_history()
        self._render(full=True)
        fields: dict[str, object] = {"source": self.start_source, "model": self.model}
        self._hook("SessionStart", self._payload("SessionStart", fields))
        # session_pidfile_idle.json: startedAt is later than the SessionStart hook.
        self.started_at = now_ms()
        self._update_status(force=True)
        self._instructions_loaded("session_start")
        if self.opts.prompt and self.exit_code is None:
            self._log_prompt(self.opts.prompt)
            self._submit(self.opts.prompt)

    def _loop_once(self) -> None:
        if self.dirty:
            self._render()
        for key, _ in self.selector.select(self.timers.timeout()):
            if key.fd == self.in_fd:
                self._on_stdin()
            else:
                with contextlib.suppress(OSError):
                    while os.read(self.wake_r, 512):
                        pass
            if self.exit_code is not None:
                return
        self._handle_signals()
        if self.exit_code is None:
            self.timers.run_due()

    def run(self) -> int:
        # Linux: comm "claude" like the real one (psutil's name(), ps).
        with contextlib.suppress(OSError), open("/proc/self/comm", "wb") as comm:
            comm.write(b"claude")
        try:
            self._setup()
            self._startup()
            while self.exit_code is None:
                try:
                    self._loop_once()
                except Exception:
                    self._log_error("event loop")  # never crash on odd input
        finally:
            self._teardown()
        return self.exit_code if self.exit_code is not None else 1


def main(argv: list[str]) -> int:
    opts = parse_args(argv)
    if isinstance(opts, int):
        return opts
    if not os.isatty(0) or not os.isatty(1):
        print("Error: Raw mode is not supported on the current process.stdin "
              "(fake claude needs a terminal).", file=sys.stderr)
        return 1
    return FakeClaude(opts).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
