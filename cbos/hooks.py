"""Claude Code hooks: the command Claude runs, its settings entries, and the events file.

One line of the events file is what the hook command appended for one hook call::

    {"ts": 1795318957.304, "cbos_session": "AUTH", "tmux_pane": "%3",
     "claude_pid": "19909", "payload": {...the hook's JSON stdin, verbatim...}}

Three parts:

- The hook command is a POSIX shell script, ``hook.sh`` in this package, copied to cbos's
  state dir by :func:`ensure_script` (a path that survives upgrades and virtualenvs) and
  *sourced* by the command Claude runs (:func:`hook_command`). It appends one line with
  one ``write(2)``, prints nothing, exits 0, and takes no lock.
- :func:`install` / :func:`uninstall` / :func:`status` merge cbos's entries into Claude's
  user settings (``~/.claude/settings.json`` or ``$CLAUDE_CONFIG_DIR/settings.json``)
  without touching anything else; :func:`settings_for_session` writes a file with only
  cbos's hooks for ``claude --settings FILE`` instead.
- :class:`Events` tails the events file (inotify as a wake-up, inode and size re-checked
  every time), rotates it, and returns :class:`HookEvent` objects in file order;
  :meth:`Events.backlog` and :func:`read_recent` give what was written while no cbos ran.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import os
import shlex
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
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
    "PostCompact",
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
ROTATED_SUFFIX = ".1"

EVENTS_MAX_BYTES = 10 << 20
"""Size past which :class:`Events` renames the events file to ``events.jsonl.1``."""
BACKLOG_BYTES = 4 << 20
"""Default bytes read back from the end of the events files on start-up."""
READ_BUDGET = 4 << 20
"""Bytes one :meth:`Events.read` call reads at most; :attr:`Events.pending` says if more."""
MAX_LINE = 80 << 20
"""A line longer than this (the hook writes at most 64 MiB at once) is dropped as torn."""
GRACE = 2.0
"""Seconds a replaced events file is still followed for a write already under way."""

_ATTEMPTS = 3  # reads of a settings file that changes under cbos before it gives up
_COMMAND_TAIL = [">/dev/null", "2>&1;", "exit", "0"]
# inotify_simple is imported by Events only: `cbos status` reads the events file once
# and should not pay for ctypes (~6 ms of its start-up budget).


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


# -- reading the events file -----------------------------------------------------------


Ident = tuple[int, int]  # (st_dev, st_ino)


def _ident(st: os.stat_result) -> Ident:
    return (st.st_dev, st.st_ino)


def _stat(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def _open(path: Path) -> tuple[int, os.stat_result] | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    st = os.fstat(fd)
    if not _regular(st):
        os.close(fd)
        return None
    return fd, st


def _regular(st: os.stat_result) -> bool:
    return (st.st_mode & 0o170000) == 0o100000


def _pread_all(fd: int, start: int, end: int) -> bytes:
    parts: list[bytes] = []
    while start < end:
        chunk = os.pread(fd, min(end - start, 1 << 20), start)
        if not chunk:
            break
        parts.append(chunk)
        start += len(chunk)
    return b"".join(parts)


def _tail_lines(fd: int, end: int, budget: int) -> tuple[list[bytes], bytes, int]:
    """Whole lines in the last ``budget`` bytes before ``end``: (lines, trailing partial,
    bytes used). A line cut by the budget's start is dropped."""
    start = max(0, end - max(0, budget))
    data = _pread_all(fd, start, end)
    if start > 0:
        cut = data.find(b"\n")
        data = data[cut + 1:] if cut >= 0 else b""
    *lines, partial = data.split(b"\n")
    return lines, partial, end - start


def _line_start(fd: int, size: int) -> int:
    """Offset just after the last newline before ``size`` (0 if none within MAX_LINE)."""
    pos = size
    while pos > 0 and size - pos < MAX_LINE:
        start = max(0, pos - (64 << 10))
        chunk = os.pread(fd, pos - start, start)
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            return start + cut + 1
        pos = start
    return pos


@dataclass
class _Reader:
    """One open inode of the events file."""

    fd: int
    ident: Ident
    offset: int = 0
    partial: bytearray = field(default_factory=bytearray)
    discarding: bool = False  # inside an over-long line: drop bytes up to its newline
    deadline: float | None = None  # left the path: stop following it after this


class Events:
    """Tail of the events file: :meth:`read` returns the newly appended :class:`HookEvent`.

    :meth:`fileno` is a non-blocking inotify fd for ``select`` / urwid's ``watch_file``;
    it is only a wake-up: every :meth:`read` re-checks the file's inode and size. Call
    :meth:`read` when the fd is readable, and again at once while :attr:`pending`. Lines
    that are not a hook event are skipped and counted in :attr:`skipped`; a last line
    without its newline is kept until the newline arrives. Truncation starts over at 0;
    a replaced or rotated file is read to its end (and followed for :data:`GRACE` seconds
    for a write under way) before the new file is read from its start.

    Past ``max_bytes`` the file is rotated to ``events.jsonl.1`` (replacing the old one);
    the hook appends by path, so new lines go to a fresh file. Two cbos instances may tail
    the same file: a non-blocking ``flock`` on the inode lets only one of them rotate it.

    The tail starts at the end of the file as it is on construction (at the start of a
    line still being written); :meth:`backlog` returns what came before. One thread only.
    """

    def __init__(self, config: Config, *, max_bytes: int = EVENTS_MAX_BYTES,
                 read_budget: int = READ_BUDGET) -> None:
        self.path = config.events_file
        self.rotated_path = self.path.with_name(self.path.name + ROTATED_SUFFIX)
        self.max_bytes = max_bytes
        self.read_budget = max(1, read_budget)
        self.skipped = 0  # lines that were not a hook event (torn, garbage, foreign)
        self.pending = False  # read() stopped at its budget: call it again
        self._old: list[_Reader] = []
        self._cur: _Reader | None = None
        # What backlog() reads: the start-up file (a dup of its fd, its identity, where the
        # tail began) or nothing; None once backlog() ran.
        self._backlog_from: tuple[int | None, Ident | None, int] | None = (None, None, 0)
        self._closed = False
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        from inotify_simple import INotify
        from inotify_simple import flags as inflags

        self._inflags = inflags
        self._dir_mask = (inflags.CREATE | inflags.MODIFY | inflags.DELETE
                          | inflags.MOVED_FROM | inflags.MOVED_TO | inflags.ATTRIB
                          | inflags.DELETE_SELF | inflags.MOVE_SELF)
        self._inotify = INotify(nonblocking=True)
        self._wd: int | None = None
        try:
            self._watch()
            opened = _open(self.path)
            if opened is not None:
                fd, st = opened
                start = _line_start(fd, st.st_size)
                self._cur = _Reader(fd, _ident(st), offset=start)
                self._backlog_from = (os.dup(fd), _ident(st), start)
        except BaseException:
            self.close()
            raise

    def fileno(self) -> int:
        return int(self._inotify.fileno())

    @property
    def watching(self) -> bool:
        """False once the events dir itself went away (no wake-ups come then): call
        :meth:`read` on a timer until it is back; it re-adds the watch."""
        return self._wd is not None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for reader in [*self._old, *([self._cur] if self._cur else [])]:
            with contextlib.suppress(OSError):
                os.close(reader.fd)
        self._old, self._cur = [], None
        if self._backlog_from is not None and self._backlog_from[0] is not None:
            with contextlib.suppress(OSError):
                os.close(self._backlog_from[0])
        self._backlog_from = None
        self._inotify.close()

    def __enter__(self) -> Events:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _watch(self) -> None:
        try:
            self._wd = self._inotify.add_watch(self.path.parent, self._dir_mask)
        except OSError:
            self._wd = None  # the dir is gone; tried again on every read

    def _drain_wakeups(self) -> None:
        for event in self._inotify.read(timeout=0):
            if event.mask & self._inflags.IGNORED:
                self._wd = None
        if self._wd is None:
            self._watch()

    # -- start-up --------------------------------------------------------------------

    def backlog(self, max_bytes: int = BACKLOG_BYTES) -> list[HookEvent]:
        """Events written before this tail started, oldest first: the whole lines in the
        last ``max_bytes`` of ``events.jsonl.1`` + ``events.jsonl``. Once; later calls
        return []."""
        if self._backlog_from is None:
            return []
        fd, ident, end = self._backlog_from
        self._backlog_from = None
        lines: list[bytes] = []
        used = 0
        if fd is not None:
            try:
                lines, _, used = _tail_lines(fd, end, max_bytes)
            finally:
                os.close(fd)
        older: list[bytes] = []
        if max_bytes - used > 0:
            older = _rotated_tail(self.rotated_path, max_bytes - used, exclude=ident)
        return self._parse([*older, *lines])

    # -- following -------------------------------------------------------------------

    def read(self) -> list[HookEvent]:
        """Events appended since the last call, in file order (never raises on content)."""
        if self._closed:
            return []
        self._drain_wakeups()
        budget = [self.read_budget]
        lines: list[bytes] = []
        now = time.monotonic()
        for reader in list(self._old):
            lines += self._consume(reader, budget)
            expired = reader.deadline is None or now > reader.deadline
            if expired and reader.offset >= os.fstat(reader.fd).st_size:
                self.skipped += bool(reader.partial)
                self._drop(reader)
        st = _stat(self.path)
        if st is not None and not _regular(st):
            st = None
        cur = self._cur
        if cur is not None and (st is None or _ident(st) != cur.ident):
            lines += self._consume(cur, budget)  # what reached the old inode first
            self._retire(cur, now)
            cur = self._cur = None
        if cur is None and st is not None:
            opened = _open(self.path)
            if opened is not None:
                fd, st = opened
                cur = self._cur = _Reader(fd, _ident(st))
        if cur is not None:
            size = os.fstat(cur.fd).st_size
            if size < cur.offset:  # truncated: start over; a kept partial is lost
                self.skipped += bool(cur.partial)
                cur.partial.clear()
                cur.discarding = False
                cur.offset = 0
            lines += self._consume(cur, budget)
            self._maybe_rotate(cur, now)
        self.pending = budget[0] <= 0
        return self._parse(lines)

    def _consume(self, reader: _Reader, budget: list[int]) -> list[bytes]:
        """Complete lines appended to ``reader`` since its offset, within ``budget``."""
        lines: list[bytes] = []
        while budget[0] > 0:
            try:
                chunk = os.pread(reader.fd, min(budget[0], 1 << 20), reader.offset)
            except OSError:
                break
            if not chunk:
                break
            reader.offset += len(chunk)
            budget[0] -= len(chunk)
            *complete, rest = chunk.split(b"\n")
            if complete:
                first = bytes(reader.partial) + complete[0]
                reader.partial.clear()
                if reader.discarding:
                    reader.discarding = False
                else:
                    lines.append(first)
                lines += complete[1:]
            if not reader.discarding:
                reader.partial += rest
                if len(reader.partial) > MAX_LINE:
                    self.skipped += 1
                    reader.partial.clear()
                    reader.discarding = True
        return lines

    def _retire(self, reader: _Reader, now: float) -> None:
        """The path no longer names ``reader``'s inode (rotated, replaced or deleted): a
        writer that opened it just before may still append, so follow it a little longer."""
        reader.deadline = now + GRACE
        self._old.append(reader)

    def _drop(self, reader: _Reader) -> None:
        self._old.remove(reader)
        with contextlib.suppress(OSError):
            os.close(reader.fd)

    def _maybe_rotate(self, cur: _Reader, now: float) -> None:
        if cur.offset <= self.max_bytes:
            return
        try:
            fcntl.flock(cur.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return  # another cbos is rotating it
        try:
            st = _stat(self.path)
            if st is None or _ident(st) != cur.ident:
                return
            os.replace(self.path, self.rotated_path)
        except OSError:
            return
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(cur.fd, fcntl.LOCK_UN)
        self._retire(cur, now)
        self._cur = None

    def _parse(self, lines: Iterable[bytes]) -> list[HookEvent]:
        events = []
        for line in lines:
            event = parse_line(line)
            if event is None:
                self.skipped += 1
            else:
                events.append(event)
        return events


def _rotated_tail(path: Path, budget: int, exclude: Ident | None = None) -> list[bytes]:
    opened = _open(path)
    if opened is None:
        return []
    fd, st = opened
    try:
        if _ident(st) == exclude:
            return []
        lines, _, _ = _tail_lines(fd, st.st_size, budget)
        return lines
    finally:
        os.close(fd)


def read_recent(config: Config, max_bytes: int = BACKLOG_BYTES) -> list[HookEvent]:
    """One shot, for commands that keep no tail open: the events in the last ``max_bytes``
    of ``events.jsonl.1`` + ``events.jsonl``, oldest first; bad lines are skipped."""
    path = config.events_file
    lines: list[bytes] = []
    used = 0
    ident = None
    opened = _open(path)  # the current file first: a rotation in between is then harmless
    if opened is not None:
        fd, st = opened
        try:
            ident = _ident(st)
            lines, _, used = _tail_lines(fd, st.st_size, max_bytes)
        finally:
            os.close(fd)
    older: list[bytes] = []
    if max_bytes - used > 0:
        older = _rotated_tail(path.with_name(path.name + ROTATED_SUFFIX), max_bytes - used,
                              exclude=ident)
    events = (parse_line(line) for line in [*older, *lines])
    return [event for event in events if event is not None]
