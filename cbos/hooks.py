"""Claude Code hooks: the command Claude runs, its settings entries, and the events file.

One line of the events file is what the hook command appended for one hook call::

    {"ts": 1795318957.304, "cbos_session": "AUTH", "tmux_pane": "%3",
     "claude_pid": "19909", "payload": {...the hook's JSON stdin, verbatim...}}
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class HookEvent:
    """One hook call as recorded in the events file."""

    ts: float
    name: str  # hook_event_name: "Stop", "PreToolUse", ...
    pane: str  # TMUX_PANE of claude ("%3"), "" when claude ran outside tmux
    slug: str  # CBOS_SESSION, "" for claude started by hand
    claude_pid: int | None
    session_id: str
    payload: Mapping[str, Any] = field(default_factory=dict)


def parse_line(line: bytes | str) -> HookEvent | None:
    """Parse one events-file line; ``None`` for a torn or foreign line (never raises)."""
    try:
        record = json.loads(line)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(record, dict):
        return None
    payload = record.get("payload")
    if not isinstance(payload, dict):
        return None
    name = payload.get("hook_event_name")
    ts = record.get("ts")
    if not isinstance(name, str) or not isinstance(ts, int | float) or isinstance(ts, bool):
        return None
    pid_text = str(record.get("claude_pid") or "")
    return HookEvent(
        ts=float(ts),
        name=name,
        pane=str(record.get("tmux_pane") or ""),
        slug=str(record.get("cbos_session") or ""),
        claude_pid=int(pid_text) if pid_text.isdigit() else None,
        session_id=str(payload.get("session_id") or ""),
        payload=payload,
    )
