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
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cbos.config import Config
from cbos.watch import Follow, Ident, Inode, Watch, ident, open_file

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
class _Lines:
    """The line being assembled from one inode of the events file."""

    partial: bytearray = field(default_factory=bytearray)
    discarding: bool = False  # inside an over-long line: drop bytes up to its newline


class Events:
    """Tail of the events file: :meth:`read` returns the newly appended :class:`HookEvent`.

    :meth:`fileno` is a non-blocking inotify fd for ``select`` / urwid's ``watch_file``;
    it is only a wake-up: every :meth:`read` re-checks the file's inode and size
    (:class:`cbos.watch.Follow`). Call :meth:`read` when the fd is readable, and again at
    once while :attr:`pending`. Lines that are not a hook event are skipped and counted in
    :attr:`skipped`; a last line without its newline is kept until the newline arrives.
    Truncation starts over at 0; a replaced or rotated file is read to its end (and
    followed while writes still land in it) as the new file is read from its start.

    Past ``max_bytes`` the file is rotated to ``events.jsonl.1`` (replacing the old one);
    the hook appends by path, so new lines go to a fresh file. Two cbos instances may tail
    the same file: a non-blocking ``flock`` on the inode lets only one of them rotate it.

    The tail starts at the end of the file as it is on construction (at the start of a
    line still being written); :meth:`backlog` returns what came before, so nothing is
    read twice or lost between the two. One thread only.
    """

    def __init__(self, config: Config, *, max_bytes: int = EVENTS_MAX_BYTES,
                 read_budget: int = READ_BUDGET) -> None:
        self.path = config.events_file
        self.rotated_path = self.path.with_name(self.path.name + ROTATED_SUFFIX)
        self.max_bytes = max_bytes
        self.read_budget = max(1, read_budget)
        self.skipped = 0  # lines that were not a hook event (torn, garbage, foreign)
        self.pending = False  # read() stopped at its budget: call it again
        self._lines: dict[Inode, _Lines] = {}
        # What backlog() reads: the start-up file (a dup of its fd, its identity, where the
        # tail began) or nothing; None once backlog() ran.
        self._backlog_from: tuple[int | None, Ident | None, int] | None = (None, None, 0)
        self._closed = False
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._watch = Watch()
        self._follow = Follow(self.path, self._watch, ordered=False, single_writer=False)
        self._wd: int | None = None
        try:
            self._watch_dir()
            inode = self._follow.open()
            if inode is not None:
                inode.pos = _line_start(inode.fd, inode.pos)
                self._backlog_from = (os.dup(inode.fd), inode.ident, inode.pos)
        except BaseException:
            self.close()
            raise

    def fileno(self) -> int:
        return self._watch.fileno()

    @property
    def watching(self) -> bool:
        """False once the events dir itself went away (no wake-ups come then): call
        :meth:`read` on a timer until it is back; it re-adds the watch."""
        return self._wd is not None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._follow.close()
        if self._backlog_from is not None and self._backlog_from[0] is not None:
            with contextlib.suppress(OSError):
                os.close(self._backlog_from[0])
        self._backlog_from = None
        self._watch.close()

    def __enter__(self) -> Events:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _watch_dir(self) -> None:
        self._wd = self._watch.directory(self.path.parent, "dir")  # None: tried each read

    def _drain_wakeups(self) -> None:
        for change in self._watch.changes():
            if change.key == "dir" and change.gone:
                self._wd = None
            elif isinstance(change.key, tuple):
                self._follow.note(change, change.key[1])
        if self._wd is None:
            self._watch_dir()

    # -- start-up --------------------------------------------------------------------

    def backlog(self, max_bytes: int = BACKLOG_BYTES) -> list[HookEvent]:
        """Events written before this tail started, oldest first: the whole lines in the
        last ``max_bytes`` of ``events.jsonl.1`` + ``events.jsonl``. Once; later calls
        return []."""
        if self._backlog_from is None:
            return []
        fd, inode, end = self._backlog_from
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
            older = _rotated_tail(self.rotated_path, max_bytes - used, exclude=inode)
        return self._parse([*older, *lines])

    # -- following -------------------------------------------------------------------

    def read(self) -> list[HookEvent]:
        """Events appended since the last call, in file order (never raises on content)."""
        if self._closed:
            return []
        self._drain_wakeups()
        self._follow.check_path()
        try:
            pieces, _, caught_up = self._follow.read(self.read_budget)
        except OSError:
            pieces, caught_up = [], True
        lines: list[bytes] = []
        for piece in pieces:
            state = self._lines.setdefault(piece.inode, _Lines())
            if piece.truncated or piece.ended:  # a kept partial line is lost
                self.skipped += bool(state.partial)
                state.partial.clear()
                state.discarding = False
                if piece.ended:
                    del self._lines[piece.inode]
            else:
                lines += self._split(state, piece.data)
        self.pending = not caught_up
        last = self._follow.inodes[-1] if self._follow.inodes else None
        if last is not None and not last.left and last.pos > self.max_bytes:
            self._follow.rotate(self.rotated_path, last.fd)
        return self._parse(lines)

    def _split(self, state: _Lines, chunk: bytes) -> list[bytes]:
        """The lines ``chunk`` completes; the rest waits in ``state``."""
        lines: list[bytes] = []
        *complete, rest = chunk.split(b"\n")
        if complete:
            first = bytes(state.partial) + complete[0]
            state.partial.clear()
            if state.discarding:
                state.discarding = False
            else:
                lines.append(first)
            lines += complete[1:]
        if not state.discarding:
            state.partial += rest
            if len(state.partial) > MAX_LINE:
                self.skipped += 1
                state.partial.clear()
                state.discarding = True
        return lines

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
    opened = open_file(path)
    if opened is None:
        return []
    fd, st = opened
    try:
        if ident(st) == exclude:
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
    current = None
    opened = open_file(path)  # the current file first: a rotation in between is then harmless
    if opened is not None:
        fd, st = opened
        try:
            current = ident(st)
            lines, _, used = _tail_lines(fd, st.st_size, max_bytes)
        finally:
            os.close(fd)
    older: list[bytes] = []
    if max_bytes - used > 0:
        older = _rotated_tail(path.with_name(path.name + ROTATED_SUFFIX), max_bytes - used,
                              exclude=current)
    events = (parse_line(line) for line in [*older, *lines])
    return [event for event in events if event is not None]
