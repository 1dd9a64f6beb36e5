"""Delegation's rules: presets, limits, the tally of cost and turns, what continue needs.

``cbos delegate PATH TASK`` starts an ordinary session (visible in the TUI, attachable)
with a preset's Claude arguments, types the task, follows the turn the way ``chat`` does,
and holds the limits while it runs:

- cost, from the conversation's transcript as it grows (an inotify watch on the file);
- turns, counted as the model's tool-using messages (an assistant message with at least
  one ``tool_use`` block: one round trip that acts);
- time.

A breach presses Ctrl+C in the pane (the session stays, a person can look) and reports.
A permission dialog the preset does not cover is answered "no", or left for a person with
``on_permission="wait"``. The limits and preset are remembered in
``<state>/delegations.json`` so that ``cbos continue SLUG TEXT`` sends a follow-up under
the same cumulative limits: cost and turns count the whole conversation.

Presets never use ``bypassPermissions``: Claude Code refuses it when run as root.

This module decides; :mod:`cbos.api` (``delegate``, ``run_turn``) does the following, as it
does for ``chat``, on top of it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cbos import config as config_mod
from cbos import sessions, transcript
from cbos.errors import UsageError
from cbos.events import HookEvent
from cbos.presets import DEFAULT_PRESET as DEFAULT_PRESET
from cbos.presets import PRESET_NAMES as PRESET_NAMES
from cbos.presets import PRESETS as PRESETS
from cbos.presets import Preset as Preset
from cbos.presets import check_ceiling as check_ceiling
from cbos.presets import preset as preset
from cbos.registry import GROUP_ENV as GROUP_ENV

STATUSES = ("done", "over_budget", "max_turns", "denied", "needs_permission", "timeout",
            "failed")
ON_PERMISSION = ("deny", "wait")
DEFAULT_TIMEOUT = 1800.0
RECORDS_NAME = "delegations.json"
MAX_RECORDS = 1000  # delegations remembered for `continue`; the oldest go first
MAX_SYSTEM_PROMPT = 10_000  # bytes: tmux carries the command line (~16 KB at most)

# -- presets: cbos/presets.py (the CLI builds its parser from them without this module) --

# -- limits (pure) ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    max_cost: float | None = None  # USD, the whole conversation
    max_turns: int | None = None  # tool-using model messages, the whole conversation
    timeout: float = DEFAULT_TIMEOUT  # seconds, per call
    on_permission: str = "deny"

    def __post_init__(self) -> None:
        if self.max_cost is not None and not self.max_cost > 0:
            raise UsageError("max cost must be more than 0 (USD)")
        if self.max_turns is not None and self.max_turns < 1:
            raise UsageError("max turns must be 1 or more")
        if not self.timeout > 0:
            raise UsageError("the timeout must be more than 0 seconds")
        if self.on_permission not in ON_PERMISSION:
            raise UsageError(f"on_permission must be one of {', '.join(ON_PERMISSION)}")

    def to_json(self) -> dict[str, Any]:
        return {"max_cost": self.max_cost, "max_turns": self.max_turns,
                "timeout": self.timeout, "on_permission": self.on_permission}


def breach(limits: Limits, cost: float | None, turns: int, model: str | None,
           ) -> tuple[str, str] | None:
    """(status, violation) when the figures break a limit; an unknown cost breaks a cost
    limit (it cannot be held), never an absent one."""
    if limits.max_cost is not None:
        if cost is None:
            return ("over_budget", f"cost unknown (model {model or '?'} has no price), so "
                    f"the ${limits.max_cost:g} limit cannot be held")
        if cost >= limits.max_cost:
            return ("over_budget", f"cost ${cost:.4f} reached the limit of "
                    f"${limits.max_cost:g}")
    if limits.max_turns is not None and turns > limits.max_turns:
        return ("max_turns", f"{turns} tool-using turns, over the limit of "
                f"{limits.max_turns}")
    return None


@dataclass
class Tally:
    """Turns and the newest reply text, read from a transcript as it grows; cost from the
    shared usage cache (subagents included)."""

    path: Path | None = None
    offset: int = 0
    partial: bytes = b""
    tool_messages: set[str] = field(default_factory=set)
    text: str = ""
    plan: str = ""  # the newest ExitPlanMode's plan (Claude's hook payload omits it)

    @property
    def turns(self) -> int:
        return len(self.tool_messages)

    def update(self) -> None:
        if self.path is None:
            return
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except OSError:
            return
        self.offset += len(data)
        *lines, self.partial = (self.partial + data).split(b"\n")
        for line in lines:
            self.add(line)

    def add(self, line: bytes) -> None:
        if b'"assistant"' not in line:
            return
        try:
            entry = json.loads(line)
        except ValueError:
            return
        found = message_acts(entry) if isinstance(entry, dict) else None
        if found is None:
            return
        message_id, acts, text = found
        if acts:
            self.tool_messages.add(message_id)
        if text:
            self.text = text
        plan = plan_of(entry)
        if plan:
            self.plan = plan

    def cost(self) -> tuple[float | None, str | None]:
        if self.path is None:
            return 0.0, None
        usage = transcript.CACHE.session_usage(self.path)
        return (usage.cost_usd, usage.model) if usage is not None else (0.0, None)


def message_acts(entry: Mapping[str, Any]) -> tuple[str, bool, str] | None:
    """(message id, uses a tool, its text) of an assistant transcript line; else None.

    Claude writes one line per content block, repeating the message id: the id makes a
    message count once however many lines it spans."""
    if entry.get("type") != "assistant":
        return None
    message = entry.get("message")
    if not isinstance(message, Mapping):
        return None
    content = message.get("content")
    blocks = [b for b in content if isinstance(b, Mapping)] if isinstance(content, list) \
        else []
    message_id = message.get("id")
    key = message_id if isinstance(message_id, str) and message_id else str(entry.get("uuid"))
    acts = any(b.get("type") == "tool_use" for b in blocks)
    text = "\n".join(b["text"] for b in blocks
                     if b.get("type") == "text" and isinstance(b.get("text"), str))
    return key, acts, text


def plan_of(entry: Mapping[str, Any]) -> str:
    """The plan of an ExitPlanMode call in an assistant transcript line ("" if none)."""
    message = entry.get("message")
    content = message.get("content") if isinstance(message, Mapping) else None
    for block in content if isinstance(content, list) else ():
        if isinstance(block, Mapping) and block.get("type") == "tool_use" \
                and block.get("name") == "ExitPlanMode":
            tool_input = block.get("input")
            plan = tool_input.get("plan") if isinstance(tool_input, Mapping) else None
            if isinstance(plan, str):
                return plan
    return ""


# -- the result -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delegation:
    """What ``cbos delegate`` prints (``--json``) and :meth:`cbos.api.Cbos.delegate`
    returns; there ``session`` is the :class:`cbos.api.Session`, whose ``continue_`` sends
    a follow-up under the same limits."""

    slug: str
    session_id: str
    status: str
    reply: str
    cost_usd: float | None
    turns: int
    duration_s: float
    violations: tuple[str, ...] = ()
    session: Any = field(default=None, compare=False, repr=False)

    @property
    def ok(self) -> bool:
        return self.status == "done"

    def to_json(self) -> dict[str, Any]:
        return {"slug": self.slug, "session_id": self.session_id, "status": self.status,
                "reply": self.reply,
                "cost_usd": None if self.cost_usd is None else round(self.cost_usd, 6),
                "turns": self.turns, "duration_s": round(self.duration_s, 3),
                "violations": list(self.violations)}


# -- what continue needs to know ----------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    preset: str
    limits: Limits
    path: str
    session_id: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"preset": self.preset, "limits": self.limits.to_json(), "path": self.path,
                "session_id": self.session_id}

    @classmethod
    def from_json(cls, data: Any) -> Record | None:
        if not isinstance(data, Mapping) or data.get("preset") not in PRESETS:
            return None
        raw = data.get("limits")
        raw = raw if isinstance(raw, Mapping) else {}
        try:
            limits = Limits(
                max_cost=float(raw["max_cost"]) if isinstance(raw.get("max_cost"), int | float)
                else None,
                max_turns=int(raw["max_turns"]) if isinstance(raw.get("max_turns"), int)
                else None,
                timeout=float(raw.get("timeout") or DEFAULT_TIMEOUT),
                on_permission=str(raw.get("on_permission") or "deny"))
        except (UsageError, TypeError, ValueError):
            return None
        session_id = data.get("session_id")
        path = data.get("path")
        return cls(str(data["preset"]), limits, path if isinstance(path, str) else "",
                   session_id if isinstance(session_id, str) else "")


def _records_path(config: config_mod.Config) -> Path:
    return config.state_dir / RECORDS_NAME


def load_records(config: config_mod.Config) -> dict[str, Record]:
    try:
        data = json.loads(_records_path(config).read_bytes())
    except (OSError, ValueError):
        return {}
    found = data.get("delegations") if isinstance(data, dict) else None
    records = {}
    for slug, raw in (found.items() if isinstance(found, dict) else ()):
        record = Record.from_json(raw)
        if record is not None:
            records[slug] = record
    return records


def save_record(config: config_mod.Config, slug: str, record: Record) -> None:
    """Rewrite the file whole (temp file, rename) under an ``flock`` on a lock file beside
    it: delegations fanned out in parallel (threads, MCP calls, processes) must not lose
    each other's records, or their ``continue`` would find no limits."""
    config_mod.ensure_dirs(config)
    path = _records_path(config)
    lock = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                   0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        records = load_records(config)
        records.pop(slug, None)  # re-added last: the file keeps the newest MAX_RECORDS
        records[slug] = record
        _write_records(path, dict(list(records.items())[-MAX_RECORDS:]))
    finally:
        os.close(lock)  # closing releases the lock


def _write_records(path: Path, records: Mapping[str, Record]) -> None:
    data = json.dumps({"version": 1, "delegations": {k: v.to_json()
                                                     for k, v in records.items()}},
                      indent=1) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# -- starting --------------------------------------------------------------------------------


def claude_args(name: str, model: str | None = None, system_prompt: str | None = None,
                ) -> list[str]:
    """The preset's arguments, then the model and the appended system prompt."""
    args = preset(name).args()
    if model:
        args += ["--model", model]
    return args + system_prompt_args(system_prompt)


def system_prompt_args(text: str | None) -> list[str]:
    """``--append-system-prompt TEXT`` (kept by ``cbos resume``, as every argument is)."""
    if not text:
        return []
    size = len(text.encode("utf-8"))
    if size > MAX_SYSTEM_PROMPT:
        raise UsageError(f"the system prompt is {size} bytes; at most {MAX_SYSTEM_PROMPT} "
                         "fit on claude's command line through tmux: shorten it")
    return ["--append-system-prompt", sessions.check_text(text)]


def transcript_of(events: Iterable[HookEvent], pane: str) -> Path | None:
    for event in events:
        hint = event.payload.get("transcript_path")
        if event.pane == pane and isinstance(hint, str) and hint and event.session_id:
            found = transcript.find(event.session_id, hint)
            if found is not None:
                return found
    return None



# -- groups -----------------------------------------------------------------------------------

def group_env(env: Mapping[str, str] | None, group: str | None) -> dict[str, str]:
    """The session's environment with its group label (remembered with it for resume)."""
    full = dict(env or {})
    if group:
        full[GROUP_ENV] = check_group(group)
    return full


def check_group(group: str) -> str:
    if not sessions.SLUG_RE.match(group):
        raise UsageError(f"invalid group {group!r}: use 1 to 64 letters, digits, '_' or '-'")
    return group
