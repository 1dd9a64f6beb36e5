"""Claude Code hooks: the command Claude runs and its settings entries.

The events file the command appends to is read by :mod:`cbos.events`. Two parts:

- The hook command is a POSIX shell script, ``hook.sh`` in this package, copied to cbos's
  state dir by :func:`ensure_script` (a path that survives upgrades and virtualenvs) and
  *sourced* by the command Claude runs (:func:`hook_command`). It appends one line with
  one ``write(2)``, prints nothing, exits 0, and takes no lock.
- :func:`install` / :func:`uninstall` / :func:`status` merge cbos's entries into Claude's
  user settings (``~/.claude/settings.json`` or ``$CLAUDE_CONFIG_DIR/settings.json``)
  without touching anything else; :func:`settings_for_session` writes a file with only
  cbos's hooks for ``claude --settings FILE`` instead.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shlex
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from cbos.config import Config, ensure_dirs, touch_private
from cbos.errors import CbosError

# Every hook event cbos records. Not MessageDisplay: it fires once per flushed batch of
# streamed lines (21 times for one 20-line reply) and each firing costs Claude a fork and a
# wait; the busy state is already known from UserPromptSubmit and the pane's output.
HOOK_EVENTS: tuple[str, ...] = (
    "SessionStart", "SessionEnd", "UserPromptSubmit", "PreToolUse", "PostToolUse",
    "PostToolUseFailure", "PostToolBatch", "PermissionRequest", "PermissionDenied",
    "Notification", "Stop", "StopFailure", "SubagentStart", "SubagentStop", "PreCompact",
    "PostCompact", "Elicitation", "ElicitationResult",
)
# Events whose groups take a "matcher" (tool name, source, reason, notification type,
# agent type, compaction trigger, error), per Claude Code's hooks reference. The others
# (UserPromptSubmit, Stop, PostToolBatch) have none, so their group carries no matcher.
MATCHER_EVENTS = frozenset({
    "PreToolUse", "PostToolUse", "PostToolUseFailure", "PermissionRequest",
    "PermissionDenied", "Notification", "SessionStart", "SessionEnd", "SubagentStart",
    "SubagentStop", "PreCompact", "PostCompact", "StopFailure",
})

SCRIPT_NAME = "cbos-hook.sh"
SESSION_SETTINGS_NAME = "claude-settings.json"
BACKUP_SUFFIX = ".cbos-backup"

_ATTEMPTS = 3  # reads of a settings file that changes under cbos before it gives up
_COMMAND_TAIL = [">/dev/null", "2>&1;", "exit", "0"]


# -- the hook command ------------------------------------------------------------------


def script_path(config: Config) -> Path:
    """Where :func:`ensure_script` puts the hook script: stable across package upgrades."""
    return config.state_dir / SCRIPT_NAME


def hook_command(config: Config) -> str:
    """The command line Claude runs (as ``/bin/sh -c COMMAND``) for every hook event.

    The events file is named in the command rather than baked into the script, so one
    script serves any events dir and the settings entry says where its events go. The
    script is sourced (``command .``) by the ``sh`` Claude starts anyway, which saves an
    exec per event; ``command`` keeps a missing or broken script from ending that shell
    with status 2 (which would block a PreToolUse tool call), the redirections keep it
    silent, and ``exit 0`` is the status whatever happened.
    """
    return (f"CBOS_EVENTS_FILE={shlex.quote(str(config.events_file))} command . "
            f"{shlex.quote(str(script_path(config)))} >/dev/null 2>&1; exit 0")


def is_cbos_command(command: object) -> bool:
    """Whether a settings hook command is one cbos wrote, for any state or events dir."""
    if not isinstance(command, str) or SCRIPT_NAME not in command:
        return False
    try:
        words = shlex.split(command)
    except ValueError:
        return False
    return (len(words) == 8 and words[0].startswith("CBOS_EVENTS_FILE=")
            and words[1:3] == ["command", "."] and PurePath(words[3]).name == SCRIPT_NAME
            and words[4:] == _COMMAND_TAIL)


def _is_cbos_entry(entry: object) -> bool:
    return (isinstance(entry, dict) and entry.get("type", "command") == "command"
            and is_cbos_command(entry.get("command")))


def _group(event: str, command: str) -> dict[str, Any]:
    group: dict[str, Any] = {"matcher": ""} if event in MATCHER_EVENTS else {}
    group["hooks"] = [{"type": "command", "command": command}]
    return group


def hooks_block(config: Config) -> dict[str, list[dict[str, Any]]]:
    """cbos's ``hooks`` object: one group with one command entry per event."""
    command = hook_command(config)
    return {event: [_group(event, command)] for event in HOOK_EVENTS}


def _package_script() -> bytes:
    from importlib import resources

    return resources.files("cbos").joinpath("hook.sh").read_bytes()


def ensure_script(config: Config) -> Path:
    """Copy (or refresh) the hook script into the state dir (0700) as 0755; return its path.

    Also creates the events dir and an empty 0600 events file, so a tail can start at once.
    """
    ensure_dirs(config)
    touch_private(config.events_file)
    path = script_path(config)
    data = _package_script()
    try:
        current = path.read_bytes()
        mode = path.stat().st_mode & 0o7777
    except OSError:
        current, mode = None, 0
    if current != data:
        _write_atomic(path, data, 0o755)
    elif mode != 0o755:
        path.chmod(0o755)
    return path


# -- Claude's settings -----------------------------------------------------------------


def settings_path(environ: Mapping[str, str] | None = None) -> Path:
    """Claude's user settings file: ``$CLAUDE_CONFIG_DIR/settings.json`` or ``~/.claude/``."""
    env = os.environ if environ is None else environ
    config_dir = env.get("CLAUDE_CONFIG_DIR", "")
    if config_dir:
        return Path(os.path.expanduser(config_dir)) / "settings.json"
    home = env.get("HOME") or os.path.expanduser("~")
    return Path(home) / ".claude" / "settings.json"


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` by ``data``: temp file beside it, fsync, rename, fsync the dir."""
    import tempfile  # not at import: it pulls in shutil, random, ... (status-line budget)

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _dumps(data: Any) -> bytes:
    """Settings as Claude writes them: 2-space indent, UTF-8, a final newline."""
    return (json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


@dataclass(frozen=True)
class _Settings:
    path: Path  # as Claude looks it up (maybe a symlink)
    target: Path  # the file actually written (symlink resolved)
    raw: bytes | None  # None: no file yet
    data: dict[str, Any]
    mode: int


def _load_settings(path: Path) -> _Settings:
    """Read and check the settings file; a CbosError (file untouched) if cbos can't merge."""
    target = Path(os.path.realpath(path))
    try:
        raw = target.read_bytes()
        mode = target.stat().st_mode & 0o7777
    except FileNotFoundError:
        return _Settings(path, target, None, {}, 0o600)
    except OSError as exc:
        raise CbosError(f"{path}: cannot read it ({exc.strerror}); fix its permissions "
                        "and try again") from None
    if not raw.strip():
        return _Settings(path, target, raw, {}, mode)
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise CbosError(f"{path}: not UTF-8 text; cbos left it untouched: fix or move the "
                        "file, then try again") from None
    except json.JSONDecodeError as exc:
        raise CbosError(f"{path}: not valid JSON (line {exc.lineno} column {exc.colno}: "
                        f"{exc.msg}); cbos left it untouched: fix the file, then try "
                        "again") from None
    except (ValueError, RecursionError) as exc:
        raise CbosError(f"{path}: cannot be read as JSON ({exc}); cbos left it untouched: "
                        "fix the file, then try again") from None
    if not isinstance(data, dict):
        raise CbosError(f"{path}: the top level is not a JSON object; cbos left it "
                        "untouched: fix the file, then try again")
    if "hooks" in data and not isinstance(data["hooks"], dict):
        raise CbosError(f"{path}: \"hooks\" is not a JSON object; cbos left the file "
                        "untouched: fix it, then try again")
    return _Settings(path, target, raw, data, mode)


class _Changed(Exception):
    """The settings file changed since it was read (Claude writes it too, e.g. /model)."""


def _save_settings(settings: _Settings, data: dict[str, Any]) -> Path | None:
    """Back up the current file (if any), then replace it atomically; return the backup.

    Raises :class:`_Changed` (nothing written) if the file is no longer what was read.
    """
    try:
        new = _dumps(data)
    except ValueError as exc:
        raise CbosError(f"{settings.path}: cannot be written back as JSON ({exc}); cbos "
                        "left it untouched: fix the file, then try again") from None
    try:
        now: bytes | None = settings.target.read_bytes()
    except FileNotFoundError:
        now = None
    except OSError:
        now = b""  # unreadable now: let the next attempt report it
    if now != settings.raw:
        raise _Changed
    backup = None
    if settings.raw is not None:
        backup = settings.path.with_name(settings.path.name + BACKUP_SUFFIX)
        _write_atomic(backup, settings.raw, settings.mode)
    else:
        settings.target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write_atomic(settings.target, new, settings.mode)
    return backup


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON, key order included (dict ``==`` ignores order)."""
    return json.dumps(a) == json.dumps(b)


def _merged(data: dict[str, Any], command: str, path: Path) -> dict[str, Any]:
    """``data`` with exactly one current cbos entry per event and no stale ones."""
    data = copy.deepcopy(data)
    hooks: dict[str, Any] = data.setdefault("hooks", {})
    for event in HOOK_EVENTS:
        groups = hooks.get(event)
        if groups is None:
            hooks[event] = [_group(event, command)]
            continue
        if not isinstance(groups, list):
            raise CbosError(f"{path}: \"hooks\".\"{event}\" is not a JSON list; cbos left "
                            "the file untouched: fix it, then try again")
        found = False
        new_groups: list[Any] = []
        for group in groups:
            entries = group.get("hooks") if isinstance(group, dict) else None
            if not isinstance(group, dict) or not isinstance(entries, list):
                new_groups.append(group)
                continue
            kept = []
            for entry in entries:
                if not _is_cbos_entry(entry):
                    kept.append(entry)
                elif entry.get("command") == command and not found:
                    found = True
                    kept.append(entry)
            if len(kept) == len(entries):
                new_groups.append(group)
            elif kept:
                new_groups.append({**group, "hooks": kept})
            # else: the group held only cbos entries; it goes with them
        if not found:
            new_groups.append(_group(event, command))
        hooks[event] = new_groups
    return data


def _without_cbos(data: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """``data`` minus every cbos entry (any event), and how many there were."""
    hooks = data.get("hooks")
    if not isinstance(hooks, dict):
        return data, 0
    removed = 0
    new_hooks: dict[str, Any] = {}
    for event, groups in hooks.items():
        if not isinstance(groups, list):
            new_hooks[event] = groups
            continue
        new_groups: list[Any] = []
        for group in groups:
            entries = group.get("hooks") if isinstance(group, dict) else None
            if not isinstance(group, dict) or not isinstance(entries, list):
                new_groups.append(group)
                continue
            kept = [entry for entry in entries if not _is_cbos_entry(entry)]
            removed += len(entries) - len(kept)
            if len(kept) == len(entries):
                new_groups.append(group)
            elif kept:
                new_groups.append({**group, "hooks": kept})
        if new_groups or not groups:
            new_hooks[event] = new_groups
    result = dict(data)
    if new_hooks or not hooks:
        result["hooks"] = new_hooks
    else:
        del result["hooks"]
    return result, removed


def install(config: Config) -> str:
    """Merge cbos's hook entries into Claude's user settings; say what was done.

    Idempotent; keeps every other key and the user's own hooks in place and in order;
    writes ``settings.json.cbos-backup`` before changing anything; refuses (CbosError,
    file untouched) a file that is not JSON or whose ``hooks`` is not an object.
    """
    path = settings_path()
    _load_settings(path)  # refuse before creating anything
    ensure_script(config)
    for _ in range(_ATTEMPTS):
        settings = _load_settings(path)
        merged = _merged(settings.data, hook_command(config), path)
        if settings.raw is not None and _same(merged, settings.data):
            return (f"cbos hooks were already installed in {path} "
                    f"({len(HOOK_EVENTS)} events)")
        try:
            backup = _save_settings(settings, merged)
        except _Changed:
            continue
        kept = f"; previous file saved as {backup}" if backup else ""
        return f"installed cbos hooks for {len(HOOK_EVENTS)} events in {path}{kept}"
    raise _busy(path)


def _busy(path: Path) -> CbosError:
    return CbosError(f"{path}: it kept changing while cbos merged its entries (is something "
                     "rewriting it?); nothing was written: try again")


def uninstall(config: Config) -> str:
    """Remove exactly cbos's entries from Claude's user settings; say what was done.

    A matcher group or event key goes only when cbos's removal left it empty. The hook
    script stays: sessions started with ``--settings`` may still run it.
    """
    path = settings_path()
    for _ in range(_ATTEMPTS):
        settings = _load_settings(path)
        if settings.raw is None:
            return f"no cbos hooks to remove: {path} does not exist"
        cleaned, removed = _without_cbos(settings.data)
        if not removed:
            return f"no cbos hooks to remove in {path}"
        try:
            backup = _save_settings(settings, cleaned)
        except _Changed:
            continue
        return (f"removed {removed} cbos hook entries from {path}; previous file saved as "
                f"{backup}")
    raise _busy(path)


def edit_json(path: Path, change: Callable[[dict[str, Any]], dict[str, Any] | None],
              ) -> tuple[bool, Path | None]:
    """Change a user's JSON file with the care ``install`` takes: a malformed file is left
    untouched and reported, the old file is backed up (``.cbos-backup``), the new one
    replaces it atomically, and a file rewritten meanwhile is read again. ``change`` gets
    a copy of the data and returns the new data, or None for "nothing to do".

    Returns (written, backup path). Used by ``cbos mcp install`` for ~/.claude.json.
    """
    for _ in range(_ATTEMPTS):
        settings = _load_settings(path)
        new = change(copy.deepcopy(settings.data))
        if new is None or (settings.raw is not None and _same(new, settings.data)):
            return False, None
        try:
            return True, _save_settings(settings, new)
        except _Changed:
            continue
    raise _busy(path)


def json_object(path: Path) -> dict[str, Any] | None:
    """A user's JSON file as checked by :func:`edit_json` (None: no file)."""
    settings = _load_settings(path)
    return settings.data if settings.raw is not None else None


@dataclass(frozen=True)
class HookStatus:
    """Where cbos's hooks stand in Claude's user settings."""

    settings_path: Path
    settings_exists: bool
    script_path: Path
    script_exists: bool
    command: str  # what install writes
    events: tuple[str, ...]  # events whose hooks hold the current cbos command
    missing: tuple[str, ...]  # cbos events without it
    stale: tuple[str, ...]  # events with a cbos entry for another script or events file
    error: str | None = None  # the settings file could not be read (message for a person)

    @property
    def installed(self) -> bool:
        """Every cbos event has its entry and the script is there."""
        return self.error is None and not self.missing and self.script_exists

    def describe(self) -> str:
        lines = [f"settings: {self.settings_path}"
                 + ("" if self.settings_exists else " (does not exist)")]
        if self.error:
            lines.append(f"error: {self.error}")
        lines.append(f"script: {self.script_path}"
                     + ("" if self.script_exists else " (missing)"))
        lines.append(f"installed for {len(self.events)} of {len(HOOK_EVENTS)} events"
                     + (f": {', '.join(self.events)}" if self.events else ""))
        if self.missing and self.events:
            lines.append(f"missing: {', '.join(self.missing)}")
        if self.stale:
            lines.append(f"stale entries (another path): {', '.join(self.stale)}")
        return "\n".join(lines)


def status(config: Config) -> HookStatus:
    """Which events have cbos's entry, where the settings file is, whether the script is."""
    path = settings_path()
    command = hook_command(config)
    script = script_path(config)
    error = None
    data: dict[str, Any] = {}
    exists = False
    try:
        settings = _load_settings(path)
        data, exists = settings.data, settings.raw is not None
    except CbosError as exc:
        error, exists = str(exc), True
    hooks = data.get("hooks")
    hooks = hooks if isinstance(hooks, dict) else {}
    current: list[str] = []
    stale: list[str] = []
    for event, groups in hooks.items():
        commands = [entry.get("command") for entry in _entries(groups)
                    if _is_cbos_entry(entry)]
        if command in commands and event in HOOK_EVENTS:
            current.append(event)
        if any(c != command for c in commands):
            stale.append(event)
    return HookStatus(
        settings_path=path, settings_exists=exists, script_path=script,
        script_exists=script.is_file(), command=command,
        events=tuple(e for e in HOOK_EVENTS if e in current),
        missing=tuple(e for e in HOOK_EVENTS if e not in current),
        stale=tuple(stale), error=error)


def _entries(groups: Any) -> Iterator[dict[str, Any]]:
    for group in groups if isinstance(groups, list) else []:
        entries = group.get("hooks") if isinstance(group, dict) else None
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict):
                yield entry


def installed_globally(config: Config) -> bool:
    """Claude's user settings run cbos's current hook for every event (and the script is
    there): sessions then need no ``--settings``, which would record every event twice."""
    return status(config).installed


def settings_for_session(config: Config) -> Path:
    """Write (atomically, 0600) a settings file holding only cbos's hooks; return its path.

    For ``claude --settings FILE`` on sessions cbos starts: those hooks run in addition to
    the user's own, and the user's settings stay untouched.
    """
    ensure_script(config)
    path = config.state_dir / SESSION_SETTINGS_NAME
    data = _dumps({"hooks": hooks_block(config)})
    try:
        same = path.read_bytes() == data
    except OSError:
        same = False
    if not same:
        _write_atomic(path, data, 0o600)
    return path
