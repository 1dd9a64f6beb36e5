"""What cbos remembers about each session on disk: where it runs and which conversation.

``cbos resume`` needs a session's project path and Claude session id after claude exited
or tmux restarted, when neither tmux nor Claude's status file knows them any more. They
live in ``<state>/sessions.json`` (0600)::

    {"version": 1, "sessions": {"AUTH": {"path": "/home/me/auth",
        "session_id": "20a0…", "transcript_path": "/home/me/.claude/projects/…jsonl",
        "args": ["--permission-mode", "acceptEdits"], "env": {"K": "V"},
        "updated": 1795318957.3}}}

``args`` and ``env`` are what the session was started with (minus the flags that pick the
conversation), so a resumed session runs as the original did. The file is rewritten whole,
atomically (temp file + rename) under an ``flock`` on a lock file beside it, so two cbos
processes never lose each other's updates. :func:`sync` runs on every refresh and writes
only when a session's id or path changed (a new session, ``/clear``, a resume).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cbos.config import Config, ensure_dirs

log = logging.getLogger(__name__)

VERSION = 1
MAX_ENTRIES = 1000  # the oldest are forgotten past this
LOCK_WAIT = 1.0  # seconds to wait for another cbos holding the lock; then skip the write
SYNC_LOCK_WAIT = 0.1  # on the refresh path (the TUI's loop): skip sooner, retry next refresh

# Claude flags that choose the conversation or that cbos adds itself: never remembered, so
# a resume or fork says its own.
_SESSION_FLAGS_WITH_VALUE = frozenset({"--resume", "-r", "--session-id", "--settings"})
_SESSION_FLAGS = frozenset({"--fork-session", "--continue", "-c"})


@dataclass(frozen=True)
class Entry:
    path: str
    session_id: str = ""
    transcript_path: str = ""
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    updated: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "session_id": self.session_id,
                "transcript_path": self.transcript_path, "args": list(self.args),
                "env": dict(self.env), "updated": round(self.updated, 3)}

    @classmethod
    def from_json(cls, data: Any) -> Entry | None:
        """Lenient: a field of the wrong type is dropped, a missing path drops the entry."""
        if not isinstance(data, Mapping) or not isinstance(data.get("path"), str):
            return None
        args = data.get("args")
        env = data.get("env")
        updated = data.get("updated")
        return cls(
            path=data["path"],
            session_id=_str(data.get("session_id")),
            transcript_path=_str(data.get("transcript_path")),
            args=tuple(a for a in args if isinstance(a, str)) if isinstance(args, list) else (),
            env={k: v for k, v in env.items() if isinstance(k, str) and isinstance(v, str)}
            if isinstance(env, Mapping) else {},
            updated=float(updated) if isinstance(updated, int | float)
            and not isinstance(updated, bool) else 0.0,
        )


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def session_args(args: Sequence[str]) -> tuple[str, ...]:
    """``args`` without the flags that pick the conversation or that cbos adds itself."""
    kept: list[str] = []
    skip = False
    for index, arg in enumerate(args):
        if skip:
            skip = False
            continue
        name = arg.partition("=")[0]
        if name in _SESSION_FLAGS:
            continue
        if name in _SESSION_FLAGS_WITH_VALUE:
            if "=" not in arg:
                following = args[index + 1] if index + 1 < len(args) else ""
                # `--resume` alone opens claude's picker; only a value is skipped with it.
                skip = bool(following) and not following.startswith("-")
            continue
        kept.append(arg)
    return tuple(kept)


def resume_id(args: Sequence[str]) -> str:
    """The conversation ``--resume ID`` continues in place ("" for none, or a fork)."""
    if "--fork-session" in args:
        return ""
    for index, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if name in ("--resume", "-r"):
            if eq:
                return value
            following = args[index + 1] if index + 1 < len(args) else ""
            return following if following and not following.startswith("-") else ""
    return ""


# -- the file ------------------------------------------------------------------------------


def parse(data: bytes) -> dict[str, Entry]:
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        return {}
    sessions = document.get("sessions") if isinstance(document, dict) else None
    if not isinstance(sessions, dict):
        return {}
    found = {slug: Entry.from_json(raw) for slug, raw in sessions.items()}
    return {slug: entry for slug, entry in found.items() if entry is not None}


def dumps(entries: Mapping[str, Entry]) -> bytes:
    newest = sorted(entries.items(), key=lambda item: item[1].updated, reverse=True)
    kept = dict(sorted(newest[:MAX_ENTRIES]))
    document = {"version": VERSION,
                "sessions": {slug: entry.to_json() for slug, entry in kept.items()}}
    return (json.dumps(document, indent=1, ensure_ascii=False) + "\n").encode("utf-8")


def load(config: Config) -> dict[str, Entry]:
    """Every remembered session (an unreadable file counts as empty)."""
    try:
        return parse(config.sessions_file.read_bytes())
    except OSError:
        return {}


@contextlib.contextmanager
def _locked(config: Config, wait: float) -> Iterator[bool]:
    """Hold the registry's lock (True), or give up after ``wait`` seconds (False)."""
    ensure_dirs(config)
    lock_path = config.sessions_file.with_name(config.sessions_file.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    yield False
                    return
                time.sleep(0.01)
        yield True
    finally:
        os.close(fd)  # closing releases the lock


def _write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)  # mkstemp makes it 0600 already; say so anyway
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def update(config: Config, change: Callable[[dict[str, Entry]], dict[str, Entry]],
           wait: float = LOCK_WAIT) -> dict[str, Entry] | None:
    """Read, change and (if anything changed) rewrite the file under the lock.

    Returns the entries now on disk, or None when the lock could not be had in time.
    """
    with _locked(config, wait) as held:
        if not held:
            log.warning("sessions file %s is locked; update skipped", config.sessions_file)
            return None
        before = load(config)
        after = change(dict(before))
        if after != before:
            _write(config.sessions_file, dumps(after))
        return after


def record(config: Config, slug: str, **fields: Any) -> None:
    """Set some fields of one session's entry (``path`` is needed for a new one).

    Failures are logged, never raised: remembering must not stop what the person asked.
    """
    def change(entries: dict[str, Entry]) -> dict[str, Entry]:
        old = entries.get(slug)
        if old is None and not fields.get("path"):
            return entries
        base = old if old is not None else Entry(path=str(fields["path"]))
        if old is None or replace(old, **fields) != old:
            entries[slug] = replace(base, **fields, updated=time.time())
        return entries

    try:
        update(config, change)
    except OSError as exc:
        log.warning("could not update %s: %s", config.sessions_file, exc)


def record_start(config: Config, slug: str, path: Path, args: Sequence[str],
                 env: Mapping[str, str] | None) -> None:
    """A session cbos just started: a fresh entry (a reused slug forgets the old one)."""
    def change(entries: dict[str, Entry]) -> dict[str, Entry]:
        entries[slug] = Entry(path=str(path), session_id=resume_id(args),
                              args=session_args(args), env=dict(env or {}),
                              updated=time.time())
        return entries

    try:
        update(config, change)
    except OSError as exc:
        log.warning("could not update %s: %s", config.sessions_file, exc)


# -- following the board -------------------------------------------------------------------


def changes(known: Mapping[str, Entry], seen: Mapping[str, tuple[str, str]],
            ) -> dict[str, tuple[str, str]]:
    """The sessions whose id is new to the file (their path is taken as seen then)."""
    return {slug: (path, session_id) for slug, (path, session_id) in seen.items()
            if slug not in known or known[slug].session_id != session_id}


# What each process last saw of each sessions file: (file identity, entries). A refresh
# costs one stat of the file; it is read again only when another process changed it.
_SEEN: dict[Path, tuple[tuple[int, int, int, int] | None, dict[str, Entry]]] = {}
_SEEN_LOCK = threading.Lock()


def _identity(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def remember(config: Config, seen: Mapping[str, tuple[str, str]]) -> None:
    """Record each session's conversation id and path, ``{slug: (path, session id)}`` as
    :meth:`cbos.model.Board.conversations` gives it, where it is new to the file (writes
    only then); safe on any thread (the file is locked; the cache has its own lock)."""
    if not seen:
        return
    path = config.sessions_file
    with _SEEN_LOCK:
        identity = _identity(path)
        cached = _SEEN.get(path)
        known = cached[1] if cached is not None and cached[0] == identity else load(config)
        _SEEN[path] = (identity, known)
        todo = changes(known, seen)
        if not todo:
            return

        def change(entries: dict[str, Entry]) -> dict[str, Entry]:
            now = time.time()
            for slug, (where, session_id) in changes(entries, todo).items():
                old = entries.get(slug)
                if old is not None and old.path == where:
                    entries[slug] = replace(old, session_id=session_id, transcript_path="",
                                            updated=now)
                else:  # a new session, or the slug now names another project
                    entries[slug] = Entry(path=where, session_id=session_id, updated=now)
            return entries

        try:
            after = update(config, change, SYNC_LOCK_WAIT)
        except OSError as exc:
            log.warning("could not update %s: %s", path, exc)
            return
        if after is not None:
            _SEEN[path] = (_identity(path), after)


GROUP_ENV = "CBOS_GROUP"  # a session's group label, kept in its remembered environment


def groups(config: Config) -> dict[str, str]:
    """Each remembered session's group label, by slug (sessions without one are absent):
    the label lives in the session's environment, which cbos remembers for resume. (Here,
    beside the file it reads: `cbos ls --json` needs no delegation machinery.)"""
    return {slug: group for slug, entry in load(config).items()
            if (group := entry.env.get(GROUP_ENV))}
