"""What the fake claude asks before its session starts (before SessionStart, before the
status file): workspace trust and a project's ``.mcp.json`` servers (blockers/trust,
blockers/mcp-json), decided from ``~/.claude.json`` as the real CLI keeps it.

The fake is lenient where the tests need it: a folder is trusted unless ``~/.claude.json``
says ``"hasTrustDialogAccepted": false`` for it (the real CLI asks for any folder it was
never told about; every other test would then have to answer first).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any


def claude_json(config_dir: Path) -> Path:
    """``$CLAUDE_CONFIG_DIR/.claude.json`` when set, else ``~/.claude.json``."""
    if os.environ.get("CLAUDE_CONFIG_DIR"):
        return config_dir / ".claude.json"
    return Path.home() / ".claude.json"


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _project(data: dict[str, Any], folder: str) -> dict[str, Any]:
    projects = data.get("projects")
    entry = projects.get(folder) if isinstance(projects, dict) else None
    return entry if isinstance(entry, dict) else {}


def needs_trust(path: Path, folder: str) -> bool:
    return _project(_load(path), folder).get("hasTrustDialogAccepted") is False


def new_mcp_servers(path: Path, folder: str) -> list[str]:
    """Servers of ``folder/.mcp.json`` neither enabled nor disabled yet."""
    servers = _load(Path(folder) / ".mcp.json").get("mcpServers")
    if not isinstance(servers, dict):
        return []
    entry = _project(_load(path), folder)
    decided = set(entry.get("enabledMcpjsonServers") or ()) | set(
        entry.get("disabledMcpjsonServers") or ())
    if entry.get("enableAllProjectMcpServers") is True:
        return []
    return [name for name in servers if name not in decided]


def remember(path: Path, folder: str, **changes: Any) -> None:
    """Merge ``changes`` into the project's entry (keeping every other key)."""
    data = _load(path)
    projects = data.setdefault("projects", {})
    entry = projects.setdefault(folder, {})
    for key, value in changes.items():
        if isinstance(value, list):
            entry[key] = [*entry.get(key, []), *value]
        else:
            entry[key] = value
    tmp = path.with_name(path.name + ".fake-tmp")
    with contextlib.suppress(OSError):
        tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
        os.replace(tmp, path)
