"""The hook events file: what one line says (:class:`HookEvent`), its tail and its backlog.

One line is what the hook command (:mod:`cbos.hooks`) appended for one hook call::

    {"ts": 1795318957.304, "cbos_session": "AUTH", "tmux_pane": "%3",
     "claude_pid": "19909", "payload": {...the hook's JSON stdin, verbatim...}}

:class:`Events` tails the file (inotify as a wake-up, inode and size re-checked every
time), rotates it, and returns :class:`HookEvent` objects in file order;
:meth:`Events.backlog` and :func:`read_recent` give what was written while no cbos ran.
Reading only: the settings that make Claude write the file live in :mod:`cbos.hooks`, so
the pure state machine can import :class:`HookEvent` without anything that writes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cbos.config import Config

ROTATED_SUFFIX = ".1"

EVENTS_MAX_BYTES = 10 << 20
"""Size past which :class:`Events` renames the events file to ``events.jsonl.1``."""
BACKLOG_BYTES = 2 << 20
"""Bytes read back from the end of the events files on start-up: the newest turns of
every pane (each CLI call pays about 30 ms per MB)."""
READ_BUDGET = 4 << 20
"""Bytes one :meth:`Events.read` call reads at most; :attr:`Events.pending` says if more."""
MAX_LINE = 80 << 20
"""A line longer than this (the hook writes at most 64 MiB at once) is dropped as torn."""
GRACE = 2.0
"""Seconds a replaced events file is still followed for a write already under way."""


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
