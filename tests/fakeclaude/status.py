"""Claude's own status file ``<config>/sessions/<pid>.json`` as the fake writes it: the
keys and their order of session_pidfile_*.json, replaced atomically (stdlib only)."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

VERSION = "2.1.328"


def record(*, pid: int, session_id: str, cwd: str, started_at: int, proc_start: str,
           pid_domain: str, tmux: str | None, socket_path: str, name: str, status: str,
           waiting_for: str | None, updated_at: int, status_updated_at: int,
           ) -> dict[str, object]:
    data: dict[str, object] = {
        "pid": pid,
        "sessionId": session_id,
        "cwd": cwd,
        "startedAt": started_at,
        "procStart": proc_start,
        "version": VERSION,
        "peerProtocol": 1,
        "peerFeatures": ["notify_idle", "reply_across_default_dirs", "artifact_yield"],
        "kind": "interactive",
        "entrypoint": "cli",
        "pidDomain": pid_domain,
        "asksForConvertedSkills": None,
    }
    if tmux:
        data["tmux"] = tmux  # only inside tmux (timeline.md; blockers/*/sessions.json)
    data.update(
        messagingSocketPath=socket_path,
        name=name,
        nameSource="derived",
        nameSince=started_at,
        status=status,
        updatedAt=updated_at,
        statusUpdatedAt=status_updated_at,
    )
    if waiting_for is not None:
        data["waitingFor"] = waiting_for
    return data


def write(path: Path, data: dict[str, object]) -> None:
    """Temp file + rename: a reader never sees half a file. OSError is the caller's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)
