"""The one inotify layer: wake-ups, and files followed by path across truncation, rotation
and re-creation. The only module that imports ``inotify_simple``.

An inotify event is only a wake-up (events merge, the queue overflows, deleting an open file
says little): a :class:`Follow` re-checks its path's inode and every open inode's size on
each :meth:`Follow.read`, as ``tail -F`` does. A file that left its path (renamed, deleted,
replaced) is read to its end and followed a little longer, through a watch on the open
inode itself, for a writer that still holds it.

``inotify_simple`` (and ctypes with it) is imported when the first :class:`Watch` is made:
one-shot commands that only read a file once never pay for it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Hashable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

GRACE = 1.0
"""Seconds a file that left its path is still followed after it last grew, unless its
writer is seen closing it (a single writer, like a pane's ``tee``)."""

Ident = tuple[int, int]  # (st_dev, st_ino): a file's identity across renames


def ident(st: os.stat_result) -> Ident:
    return (st.st_dev, st.st_ino)


def stat_file(path: Path | str) -> os.stat_result | None:
    """The regular file at ``path``, or None (missing, unreadable, or not a file)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st if (st.st_mode & 0o170000) == 0o100000 else None


def open_file(path: Path | str) -> tuple[int, os.stat_result] | None:
    """A non-blocking read fd on the regular file at ``path``, with its stat; or None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    st = os.fstat(fd)
    if (st.st_mode & 0o170000) != 0o100000:
        os.close(fd)
        return None
    return fd, st


def is_at(path: Path | str, inode: Ident) -> bool:
    """Whether ``path`` names the file ``inode`` now."""
    st = stat_file(path)
    return st is not None and ident(st) == inode


@dataclass(frozen=True)
class Change:
    """One inotify event, in words: which watch (its ``key``), which name, what kind."""

    key: Hashable  # what the watch was added with (None for an overflow)
    name: str  # the entry's name, for a directory watch
    closed: bool  # a writer closed the file (IN_CLOSE_WRITE)
    gone: bool  # the watch itself ended (IN_IGNORED: its directory or inode went away)
    overflow: bool  # the kernel dropped events: re-check everything


class Watch:
    """One non-blocking inotify instance; :meth:`fileno` goes into ``select`` or a loop.

    Watches are added with a key (any hashable) that comes back on each :class:`Change`.
    """

    def __init__(self) -> None:
        from inotify_simple import INotify, flags

        self._flags = flags
        self._inotify = INotify(nonblocking=True)
        self._keys: dict[int, Hashable] = {}
        self.overflows = 0  # IN_Q_OVERFLOW events seen

    def fileno(self) -> int:
        return int(self._inotify.fileno())

    def _add(self, path: str, mask: int, key: Hashable) -> int | None:
        try:
            wd = int(self._inotify.add_watch(path, mask))
        except OSError:
            return None
        self._keys[wd] = key
        return wd

    def directory(self, path: Path | str, key: Hashable, *,
                  whole_files: bool = False) -> int | None:
        """Watch a directory's entries being created, written, moved and deleted (with
        ``whole_files``, only files finished: closed after writing, or renamed in); None if
        it cannot be watched (missing)."""
        f = self._flags
        mask = f.CREATE | f.CLOSE_WRITE | f.MOVED_TO | f.DELETE
        if not whole_files:
            mask |= f.MODIFY | f.MOVED_FROM | f.ATTRIB | f.DELETE_SELF | f.MOVE_SELF
        return self._add(str(path), mask, key)

    def file(self, path: Path | str, key: Hashable) -> int | None:
        """Watch writes to the file at ``path`` (None if it cannot be watched)."""
        return self._add(str(path), self._flags.MODIFY, key)

    def inode(self, fd: int, key: Hashable) -> int | None:
        """Watch the file open as ``fd`` itself, wherever it is (even deleted): writes and
        closes."""
        f = self._flags
        # The magic link resolves to the open inode even after unlink or rename.
        return self._add(f"/proc/self/fd/{fd}", f.MODIFY | f.CLOSE_WRITE, key)

    def remove(self, wd: int) -> None:
        self._keys.pop(wd, None)
        with contextlib.suppress(OSError):  # already gone with its inode
            self._inotify.rm_watch(wd)

    def changes(self) -> list[Change]:
        """The events queued so far (never blocks)."""
        try:
            events = self._inotify.read(timeout=0)
        except BlockingIOError:
            return []
        f = self._flags
        found = []
        for ev in events:
            if ev.mask & f.Q_OVERFLOW:
                self.overflows += 1
                found.append(Change(None, "", closed=False, gone=False, overflow=True))
                continue
            if ev.wd not in self._keys:
                continue  # a watch removed meanwhile (its IN_IGNORED comes after)
            gone = bool(ev.mask & f.IGNORED)
            key = self._keys.pop(ev.wd) if gone else self._keys[ev.wd]
            found.append(Change(key, ev.name, bool(ev.mask & f.CLOSE_WRITE), gone, False))
        return found

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._inotify.close()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(eq=False)
class Inode:
    """One open inode of a followed file (compared by identity, usable as a dict key)."""

    fd: int
    ident: Ident
    pos: int = 0  # bytes of it consumed so far
    base: int = 0  # what byte 0 is to the owner (the logs' logical offset); not used here
    wd: int | None = None  # the inode watch, once it left its path
    closed: bool = False  # its single writer closed it: nothing more will come
    deadline: float | None = None  # left its path: given up after this, once quiet
    rotated: bool = False  # renamed away by :meth:`Follow.rotate`

    @property
    def left(self) -> bool:
        return self.deadline is not None


class Seen(Enum):
    """What :meth:`Follow.check_path` found at the path."""

    SAME = "same"
    GONE = "gone"  # nothing there: the last inode left its path
    NEW = "new"  # a file where none was followed
    REPLACED = "replaced"  # another file: the last inode left its path


@dataclass(frozen=True)
class Piece:
    """What :meth:`Follow.read` found, in order: ``data`` read from ``inode``; or the
    inode was ``truncated`` (``data`` empty; ``lost`` is where it had been read to, and
    it is read again from 0); or it ``ended`` (left its path and is done: closed now)."""

    inode: Inode
    data: bytes = b""
    truncated: bool = False
    lost: int = 0
    ended: bool = False


class Follow:
    """One file followed by its path; the owner decides what the bytes mean.

    ``inodes[0]`` is read first; a file that left its path stays until it is done: its
    writer closed it (``single_writer``), or it stayed quiet for :data:`GRACE` seconds.
    With ``ordered`` a later file waits until the earlier one is done (one writer moving
    on: its bytes stay in order); without, every inode is read on each call (many writers
    of whole lines, like the hook events). One thread at a time.
    """

    def __init__(self, path: Path, watch: Watch, key: Hashable = None, *,
                 ordered: bool = True, single_writer: bool = True) -> None:
        self.path = path
        self.inodes: list[Inode] = []
        self._watch = watch
        self._key = key
        self._ordered = ordered
        self._single = single_writer

    def open(self, at_end: bool = True) -> Inode | None:
        """Start on the file now at the path (its end, or its start); None if none."""
        opened = open_file(self.path)
        if opened is None:
            return None
        fd, st = opened
        inode = Inode(fd, ident(st), pos=st.st_size if at_end else 0)
        self.inodes.append(inode)
        return inode

    @property
    def head(self) -> Inode | None:
        return self.inodes[0] if self.inodes else None

    def note(self, change: Change, inode: Inode) -> None:
        """An inode watch fired (the owner routes it here by its key)."""
        if change.closed:
            inode.closed = True
        if change.gone:
            inode.wd = None

    def check_path(self) -> Seen:
        """Compare the path with the newest inode: a replaced or vanished file leaves."""
        st = stat_file(self.path)
        last = self.inodes[-1] if self.inodes else None
        if st is None:
            if last is None:
                return Seen.SAME
            self.leave(last)
            return Seen.GONE
        if last is not None and last.ident == ident(st):
            return Seen.SAME
        opened = open_file(self.path)
        if opened is None:
            return Seen.SAME
        fd, now = opened
        if ident(now) != ident(st):  # replaced again between stat and open: next wake-up
            os.close(fd)
            return Seen.SAME
        if last is not None:
            self.leave(last)
        self.inodes.append(Inode(fd, ident(now)))
        return Seen.NEW if last is None else Seen.REPLACED

    def leave(self, inode: Inode, now: float | None = None) -> None:
        """``inode`` is no longer at the path: watch it directly until it is done."""
        if inode.deadline is None:
            inode.deadline = (time.monotonic() if now is None else now) + GRACE
        if inode.wd is None:
            inode.wd = self._watch.inode(inode.fd, (self._key, inode))

    def read(self, budget: int) -> tuple[list[Piece], int, bool]:
        """New bytes within ``budget``: (pieces in order, bytes read, all caught up)."""
        pieces: list[Piece] = []
        used = 0
        for inode in list(self.inodes):
            size = os.fstat(inode.fd).st_size
            if size < inode.pos:
                pieces.append(Piece(inode, truncated=True, lost=inode.pos))
                inode.pos = 0
            want = min(size - inode.pos, budget - used)
            if want > 0:
                data = _pread(inode.fd, want, inode.pos)
                inode.pos += len(data)
                used += len(data)
                if data:
                    pieces.append(Piece(inode, data))
                    if inode.left and not inode.closed:
                        inode.deadline = time.monotonic() + GRACE  # still written: follow on
            if inode.pos < size:
                return pieces, used, False  # out of budget
            if not inode.left:
                continue  # the file at the path, drained
            assert inode.deadline is not None
            done = (inode.closed and self._single) or time.monotonic() >= inode.deadline
            if done and inode.pos >= os.fstat(inode.fd).st_size:
                self._drop(inode)
                pieces.append(Piece(inode, ended=True))
            elif self._ordered:
                return pieces, used, True  # its writer may add a few bytes; a wake-up ends it
        return pieces, used, True

    def rotate(self, to: Path, lock_fd: int) -> bool:
        """Rename the file at the path to ``to`` (replacing it), if it is still the newest
        inode; ``flock`` on ``lock_fd`` keeps two cbos from rotating at once."""
        last = self.inodes[-1] if self.inodes else None
        if last is None or last.left:
            return False
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # another cbos is rotating it
        try:
            if not is_at(self.path, last.ident):
                return False
            self.leave(last)  # before the rename, so a writer's close is seen
            os.replace(self.path, to)
            last.rotated = True
        except OSError:
            return False
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(lock_fd, fcntl.LOCK_UN)
        return True

    def _drop(self, inode: Inode) -> None:
        self.inodes.remove(inode)
        if inode.wd is not None:
            self._watch.remove(inode.wd)
        with contextlib.suppress(OSError):
            os.close(inode.fd)

    def close(self) -> None:
        for inode in self.inodes:
            with contextlib.suppress(OSError):
                os.close(inode.fd)
        self.inodes.clear()


def _pread(fd: int, want: int, pos: int) -> bytes:
    parts: list[bytes] = []
    while want > 0:
        chunk = os.pread(fd, min(want, 1 << 20), pos)
        if not chunk:
            break
        parts.append(chunk)
        pos += len(chunk)
        want -= len(chunk)
    return b"".join(parts)
