"""Which hook commands the fake claude runs for an event, as the real CLI picks them:
user, project and local settings plus ``--settings``, groups filtered by their matcher,
identical commands once (stdlib only)."""

from __future__ import annotations

import re
from typing import Any

# Hook events whose matcher is tested, and against which payload field.
MATCHER_FIELDS = {
    "PreToolUse": "tool_name",
    "PostToolUse": "tool_name",
    "PostToolUseFailure": "tool_name",
    "PermissionRequest": "tool_name",
    "PermissionDenied": "tool_name",
    "SessionStart": "source",
    "SessionEnd": "reason",
    "Notification": "notification_type",
    "PreCompact": "trigger",
    "PostCompact": "trigger",
    "SubagentStart": "agent_type",
    "SubagentStop": "agent_type",
    "Elicitation": "mcp_server_name",
    "ElicitationResult": "mcp_server_name",
}
DEFAULT_TIMEOUT_S = 600.0


def matches(event: str, matcher: object, payload: dict[str, object]) -> bool:
    if matcher in (None, "", "*"):
        return True
    key = MATCHER_FIELDS.get(event)
    if key is None or not isinstance(matcher, str):
        return True
    value = str(payload.get(key, ""))
    try:
        return re.fullmatch(matcher, value) is not None
    except re.error:
        return matcher == value


def commands(sources: list[dict[str, Any]], event: str, payload: dict[str, object],
             ) -> list[tuple[str, float]]:
    """(command, timeout seconds) of every hook ``sources`` configure for ``event``."""
    if any(source.get("disableAllHooks") is True for source in sources):
        return []
    found: list[tuple[str, float]] = []
    seen: set[str] = set()
    for source in sources:
        hooks = source.get("hooks")
        groups = hooks.get(event) if isinstance(hooks, dict) else None
        if not isinstance(groups, list):
            continue
        for group in groups:
            if not isinstance(group, dict) or not matches(event, group.get("matcher"),
                                                          payload):
                continue
            entries = group.get("hooks")
            for entry in entries if isinstance(entries, list) else []:
                if not isinstance(entry, dict) or entry.get("type", "command") != "command":
                    continue
                command = entry.get("command")
                if not isinstance(command, str) or not command or command in seen:
                    continue  # identical commands run once, as in the real CLI
                seen.add(command)
                timeout = entry.get("timeout")
                seconds = float(timeout) if isinstance(timeout, int | float) else 0.0
                found.append((command, seconds if seconds > 0 else DEFAULT_TIMEOUT_S))
    return found
