"""Inotify tails of the pane logs: logical offsets, partial UTF-8, truncation, rotation, caps.

Each session's pane output is appended to ``<dir>/SLUG.log`` by ``tee`` (tmux pipe-pane).
One inotify watch (:mod:`cbos.watch`) covers the directory; each log is a
:class:`cbos.watch.Follow`, which re-checks the file's inode and size on every wake-up, as
``tail -F`` does, and follows a file that left its path until its writer is done.

Offsets are *logical*: byte ``n`` of a session's stream keeps its number across truncation,
rotation and re-armed pipes, so a client can resume with ``since=n``. The logical offset of
byte 0 of the current file (its *base*) lives in ``SLUG.log.base`` so numbers survive a
restart. Offsets only ever advance by whole UTF-8 characters: a chunk never ends inside one.

Nothing here blocks: the inotify fd is non-blocking, every read is bounded by a byte
budget, and a caller learns from :attr:`Tail.pending` that it should call again soon.
"""

from __future__ import annotations

import codecs
import json
import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cbos.procs import ProcTable
from cbos.watch import Follow, Ident, Inode, Seen, Watch, ident, is_at, stat_file

log = logging.getLogger(__name__)

_NAME = re.compile(r"^([A-Za-z0-9_-]+)\.log$")


@dataclass(frozen=True)
class Chunk:
    """New output of one session, cut on UTF-8 character boundaries."""

    slug: str
    data: str  # decoded text, valid UTF-8, never half a character
    raw: bytes  # the bytes this chunk covers
    offset: int  # logical byte offset in the session's stream AFTER this chunk
    ts: float  # time.time() when read
    gap: bool = False  # bytes were lost or skipped before this chunk


@dataclass(frozen=True)
class _Segment:
    """A stretch of the logical stream held in a file on disk."""

    ident: Ident
    base: int
    end: int


@dataclass
class _Log:
    slug: str
    path: Path
    follow: Follow  # its inodes: [0] is read; later ones wait
    rearmed: set[Inode] = field(default_factory=set)  # the pipe was re-armed away from these
    offset: int = 0  # logical offset after the last byte emitted
    numbered: bool = False  # a file of it was numbered (later files continue from offset)
    gap: bool = False  # the next chunk follows lost bytes
    prev: _Segment | None = None  # SLUG.log.1, kept for read_since
    ring: deque[bytes] = field(default_factory=deque)  # the last output, whole chunks
    ring_size: int = 0
    prefill_end: int | None = None  # output before this offset joins the ring when asked
    decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))

    @property
    def old_path(self) -> Path:
        return self.path.with_name(self.path.name + ".1")

    @property
    def base_path(self) -> Path:
        return self.path.with_name(self.path.name + ".base")


def _incomplete_tail(data: bytes) -> int:
    """How many trailing bytes of ``data`` start a UTF-8 character not yet complete."""
    dec = codecs.getincrementaldecoder("utf-8")("replace")
    dec.decode(data[-3:])
    return len(dec.getstate()[0])


def _skip_continuation(data: bytes) -> int:
    """Leading UTF-8 continuation bytes (a cut inside a character) to skip, at most 3."""
    n = 0
    while n < min(3, len(data)) and 0x80 <= data[n] <= 0xBF:
        n += 1
    return n


def _read_sidecar(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(value, dict) or not all(
        isinstance(value.get(k), int) for k in ("dev", "ino", "base", "end")
    ):
        return None
    return value


def _seg_of(value: Any) -> _Segment | None:
    if not isinstance(value, dict):
        return None
    try:
        return _Segment((int(value["dev"]), int(value["ino"])), int(value["base"]),
                        int(value["end"]))
    except (KeyError, TypeError, ValueError):
        return None


class Tail:
    """Follows every ``SLUG.log`` in ``log_dir``; plug :meth:`fileno` into a poll loop.

    ``rearm(slug)`` must point the session's pane pipe at a fresh ``SLUG.log`` (e.g.
    :meth:`cbos.tmux.Tmux.pipe`); without it the tail never rotates and only follows.
    Call :meth:`read` when the fd is readable and again at once while :attr:`pending`;
    call :meth:`rescan` on a slow timer (about a second) and after ``r``.
    Thread-safe: a WebSocket thread may call :meth:`read_since` and :meth:`buffer`.

    With ``adopt_later``, the logs found at start-up are listed at once but followed
    (opened, numbered from their sidecars) only by :meth:`adopt` or the first other
    call: the TUI draws its first frame before it pays ~0.1 ms a log for that.
    """

    def __init__(self, log_dir: Path, max_buffer: int = 100_000,
                 max_file_bytes: int = 20 * 1024 * 1024,
                 rearm: Callable[[str], None] | None = None, read_budget: int = 1 << 20,
                 *, prefill: bool = True, adopt_later: bool = False) -> None:
        self._dir = Path(log_dir)
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._real_dir = os.path.realpath(self._dir)
        self._max_buffer = max(0, max_buffer)
        self._max_file = max_file_bytes
        self._rearm = rearm
        self._budget = max(1, read_budget)
        self._lock = threading.RLock()
        self._logs: dict[str, _Log] = {}
        self._dirty: dict[str, None] = {}  # an ordered set: unfinished slugs go to the back
        self._leaving: set[str] = set()  # slugs following a file that left its path
        self._closed = False
        self._watch = Watch()
        try:
            if self._watch.directory(self._dir, "dir") is None:
                raise FileNotFoundError(f"cannot watch {self._dir}")
            # A directory fd to flock: two cbos instances must not rotate the same log.
            self._dirfd = os.open(self._dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except BaseException:
            self._watch.close()
            raise
        # Watch first, then list: a file created in between is seen twice, never missed.
        # A file created after the listing is new output, read from its first byte.
        self._found = self._list_slugs()
        self._prefill_found = prefill
        if not adopt_later:
            self.adopt()

    # -- public ---------------------------------------------------------------------------

    def adopt(self) -> None:
        """Follow the logs found at start-up, each from its end (once; every other call
        but :meth:`fileno` and :meth:`close` does it first)."""
        with self._lock:
            self._adopt_found()

    def _adopt_found(self) -> None:
        found, self._found = self._found, []
        for slug in found:
            if slug not in self._logs and not self._closed:
                self._adopt(slug, at_end=True, prefill=self._prefill_found)

    def fileno(self) -> int:
        return self._watch.fileno()

    @property
    def overflows(self) -> int:
        """IN_Q_OVERFLOW events seen (each answered by a full rescan)."""
        return self._watch.overflows

    def read(self, budget: int | None = None) -> list[Chunk]:
        """Drain inotify, re-check the touched files, read up to ``budget`` bytes (by
        default ``read_budget``; 0 only takes note of which logs moved, for a later read)."""
        with self._lock:
            self._adopt_found()
            if self._closed:
                return []
            self._drain_events()
            now = time.monotonic()
            for slug in list(self._leaving):
                inodes = self._logs[slug].follow.inodes
                if not any(r.left for r in inodes):
                    self._leaving.discard(slug)
                elif any(r.deadline is not None and now >= r.deadline for r in inodes):
                    self._dirty.setdefault(slug)
            out: list[Chunk] = []
            budget = self._budget if budget is None else budget
            for slug in list(self._dirty):
                if budget <= 0:
                    break
                del self._dirty[slug]
                used, done = self._check(slug, budget, out)
                budget -= used
                if not done:
                    self._dirty[slug] = None
            return _merge(out)

    @property
    def pending(self) -> bool:
        """More bytes are waiting beyond the budget: call :meth:`read` again soon."""
        return bool(self._dirty)

    def rescan(self) -> list[Chunk]:
        """Re-check every file, known or new (after overflow, on ``r``, on a slow timer)."""
        with self._lock:
            self._adopt_found()
            if self._closed:
                return []
            self._mark_all()
            return self.read()

    def buffer(self, slug: str) -> bytes:
        """The last ``max_buffer`` bytes of the session's output."""
        with self._lock:
            self._adopt_found()
            lg = self._logs.get(slug)
            if lg is None:
                return b""
            if lg.prefill_end is not None:
                self._prefill(lg)
            data = b"".join(lg.ring)
            return data[len(data) - self._max_buffer:] if len(data) > self._max_buffer else data

    def _prefill(self, lg: _Log) -> None:
        """Put the output from before the tail started in front of the ring."""
        end, lg.prefill_end = lg.prefill_end or 0, None
        room = self._max_buffer - lg.ring_size
        if room <= 0 or end <= 0:
            return
        start = max(0, end - room)
        data, _, _ = self.read_since(lg.slug, start)
        data = data[:end - start]
        data = data[_skip_continuation(data) if start else 0:]
        lg.ring.appendleft(data)
        lg.ring_size += len(data)

    def offset(self, slug: str) -> int:
        """Logical offset after the last byte emitted (0 for an unknown session)."""
        with self._lock:
            self._adopt_found()
            lg = self._logs.get(slug)
            return lg.offset if lg else 0

    def slugs(self) -> list[str]:
        with self._lock:
            self._adopt_found()
            return sorted(self._logs)

    def read_since(self, slug: str, offset: int,
                   limit: int | None = None) -> tuple[bytes, int, bool]:
        """Bytes from logical ``offset`` up to what was emitted, from SLUG.log.1 and SLUG.log.

        Returns ``(data, new_offset, gap)``; ``gap`` says the offset was older than what is
        kept (or in bytes lost to a truncation or deletion), and ``data`` then starts at the
        oldest kept byte after it. An offset from another numbering (beyond the end) is
        answered the same way. ``limit`` caps the bytes returned (cut on a character
        boundary); call again from ``new_offset`` until it reaches :meth:`offset`.
        Live chunks after ``new_offset`` continue the stream without overlap.
        """
        sources: list[tuple[_Segment, int]] = []  # (segment, fd owned by us)
        with self._lock:
            self._adopt_found()
            lg = self._logs.get(slug)
            end = lg.offset if lg else 0
            if lg is not None:
                if lg.prev is not None:
                    fd = _open_ident(lg.old_path, lg.prev.ident)
                    if fd is not None:
                        sources.append((lg.prev, fd))
                head = lg.follow.head
                if head is not None:
                    # dup: the loop thread may close head.fd while we read.
                    sources.append((_Segment(head.ident, head.base, end), os.dup(head.fd)))
        try:
            return _serve(sources, offset, end, limit)
        finally:
            for _, fd in sources:
                os.close(fd)

    def check_pipes(self, procs: ProcTable, live: Mapping[str, str]) -> list[str]:
        """Re-arm the pipes of live panes whose ``tee`` is missing or stopped.

        ``live`` maps slug to pane id of live panes (a dead pane needs no pipe). A pipe's
        process is found by argv: ``tee -a -- LOG`` (or the ``sh -c 'exec tee ...'``
        that becomes it). Output the pane wrote meanwhile is lost, so the next chunk of a
        re-armed session is marked as a gap. Returns the slugs re-armed.
        """
        healthy = procs.pipe_logs()
        rearmed: list[str] = []
        with self._lock:
            self._adopt_found()
            if self._rearm is None:
                return []
            for slug in live:
                if os.path.join(self._real_dir, f"{slug}.log") in healthy:
                    continue
                lg = self._logs.get(slug)
                if lg is not None:
                    lg.gap = True
                if self._call_rearm(slug):
                    rearmed.append(slug)
        return rearmed

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for lg in self._logs.values():
                if lg.follow.inodes:
                    self._save(lg)
                lg.follow.close()
            self._watch.close()
            os.close(self._dirfd)

    def __enter__(self) -> Tail:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- events ---------------------------------------------------------------------------

    def _list_slugs(self) -> list[str]:
        try:
            names = os.listdir(self._dir)
        except OSError as exc:
            log.warning("cannot list %s: %s", self._dir, exc)
            return []
        return sorted(m.group(1) for m in map(_NAME.match, names) if m)

    def _mark_all(self) -> None:
        for slug in [*self._logs, *self._list_slugs()]:
            self._dirty.setdefault(slug)

    def _drain_events(self) -> None:
        for change in self._watch.changes():
            if change.overflow:
                # Events were dropped: any file may have moved. Saved offsets make a
                # re-check of everything exact.
                self._mark_all()
            elif change.key == "dir":
                if change.gone:
                    log.warning("log directory %s went away; the tail sees nothing more",
                                self._dir)
                match = _NAME.match(change.name)
                if match:
                    self._dirty.setdefault(match.group(1))
            elif isinstance(change.key, tuple):  # an inode that left its path
                slug, inode = change.key
                lg = self._logs.get(slug)
                if lg is not None:
                    lg.follow.note(change, inode)
                    self._dirty.setdefault(slug)

    # -- following one log ----------------------------------------------------------------

    def _adopt(self, slug: str, at_end: bool, prefill: bool) -> None:
        """Start following a log found at start-up: numbering from its sidecar, at its end."""
        lg = self._new_log(slug)
        reader = lg.follow.open(at_end)
        if reader is None:
            return
        size = os.fstat(reader.fd).st_size
        self._logs[slug] = lg
        self._number(lg, reader, size)
        lg.numbered = True
        if at_end:
            # Start on a character boundary, or the first chunk would begin with U+FFFD.
            tail = os.pread(reader.fd, 3, max(0, size - 3))
            reader.pos = size - _incomplete_tail(tail)
        lg.offset = reader.base + reader.pos
        if prefill and self._max_buffer and lg.offset:
            # Read on first use, not now: a hundred logs at start would cost the first
            # paint ~10 MB of reading that the preview (tmux's capture) never needs.
            lg.prefill_end = lg.offset

    def _new_log(self, slug: str) -> _Log:
        path = self._dir / f"{slug}.log"
        return _Log(slug, path, Follow(path, self._watch, slug))

    def _number(self, lg: _Log, reader: Inode, size: int) -> None:
        """Set the base of a file first seen, from the sidecar, so offsets survive restarts."""
        sc = _read_sidecar(lg.base_path)
        old = stat_file(lg.old_path)
        old_ident = ident(old) if old else None
        if sc is None:
            reader.base = 0
        elif (sc["dev"], sc["ino"]) == reader.ident:
            reader.base = sc["base"]
            if reader.base + size < sc["end"]:  # truncated while nobody watched
                reader.base = sc["end"]
            prev = _seg_of(sc.get("prev"))
            lg.prev = prev if prev and prev.ident == old_ident else None
        elif old is not None and (sc["dev"], sc["ino"]) == old_ident:
            # Rotated before its successor was numbered: it starts where .1 ends.
            reader.base = sc["base"] + old.st_size
            lg.prev = _Segment(old_ident, sc["base"], reader.base)
        else:
            # A file we never saw: number it after everything known, so no old offset
            # can be mistaken for a position in it.
            reader.base = max(sc["base"], sc["end"])
            prev = _seg_of(sc.get("prev"))
            lg.prev = prev if prev and prev.ident == old_ident else None
        self._save(lg, reader, known=sc)

    def _check(self, slug: str, budget: int, out: list[Chunk]) -> tuple[int, bool]:
        """Bring one log up to date within ``budget``; return (bytes read, caught up)."""
        lg = self._logs.get(slug)
        if lg is None:
            if stat_file(self._dir / f"{slug}.log") is None:
                return 0, True
            lg = self._logs[slug] = self._new_log(slug)
        try:
            self._follow_path(lg)
            return self._drain(lg, budget, out)
        except OSError as exc:
            log.warning("reading %s failed: %s", lg.path, exc)
            return 0, True

    def _follow_path(self, lg: _Log) -> None:
        """Notice the path now naming another file, or nothing; number it, or re-arm."""
        last = lg.follow.inodes[-1] if lg.follow.inodes else None
        seen = lg.follow.check_path()
        if seen is Seen.SAME:
            return
        if last is not None and last.left:
            self._leaving.add(lg.slug)
        if seen is Seen.NEW:
            new = lg.follow.inodes[-1]
            if lg.numbered:  # back after its file went away: continue the numbering
                new.base = lg.offset
                self._save(lg, new)
            else:  # a log that appeared after start: all of it is new output
                self._number(lg, new, os.fstat(new.fd).st_size)
                lg.numbered = True
                lg.offset = new.base
            return
        assert last is not None
        if seen is Seen.GONE or not (last.rotated or is_at(lg.old_path, last.ident)):
            # Moved, replaced or deleted by someone: the pipe still writes to the old inode.
            self._rearm_once(lg, last)

    def _rearm_once(self, lg: _Log, reader: Inode) -> None:
        if reader not in lg.rearmed:
            lg.rearmed.add(reader)
            self._call_rearm(lg.slug)

    def _drain(self, lg: _Log, budget: int, out: list[Chunk]) -> tuple[int, bool]:
        used = 0
        ts = time.time()
        while True:
            pieces, n, done = lg.follow.read(budget - used)
            used += n
            ended = False
            for piece in pieces:
                if piece.truncated:
                    # What was between is gone. Keep counting, restart the file.
                    self._flush(lg, out, ts)
                    piece.inode.base += piece.lost
                    lg.gap = True
                    self._save(lg)
                elif piece.ended:
                    self._finish(lg, piece.inode, out, ts)
                    ended = True
                else:
                    self._emit(lg, piece.data, out, ts)
            if not (ended and done and used < budget):
                break
        head = lg.follow.head
        if done and head is not None and not head.left and len(lg.follow.inodes) == 1 \
                and head.pos > self._max_file:
            self._rotate(lg)
        return used, done

    def _finish(self, lg: _Log, r: Inode, out: list[Chunk], ts: float) -> None:
        """The drained head file is done (closed by the follow): its successor starts where
        it ended."""
        self._flush(lg, out, ts)
        lg.rearmed.discard(r)
        if r.rotated or is_at(lg.old_path, r.ident):
            lg.prev = _Segment(r.ident, r.base, r.base + r.pos)  # kept for read_since
        else:
            lg.gap = True  # deleted or moved away: tmux dropped what it held at the switch
        head = lg.follow.head
        if head is not None:
            head.base = lg.offset
            self._save(lg)

    def _rotate(self, lg: _Log) -> None:
        """Cap the log on disk: SLUG.log becomes SLUG.log.1 and the pipe a fresh SLUG.log.

        Only a tail that can re-arm the pipe rotates, and only one at a time (flock on the
        directory): another instance sees the old inode at .1 and follows without a gap.
        """
        if self._rearm is None:
            return
        head = lg.follow.head
        if head is None or not lg.follow.rotate(lg.old_path, self._dirfd):
            return
        self._leaving.add(lg.slug)
        lg.prev = None  # the older .1 was just replaced
        self._rearm_once(lg, head)

    def _call_rearm(self, slug: str) -> bool:
        if self._rearm is None:
            return False
        try:
            self._rearm(slug)
        except Exception as exc:  # a dead pane must not stop the tail
            log.warning("re-arming the pipe of %s failed: %s", slug, exc)
            return False
        return True

    # -- emitting -------------------------------------------------------------------------

    def _emit(self, lg: _Log, data: bytes, out: list[Chunk], ts: float) -> None:
        held = lg.decoder.getstate()[0]
        text = lg.decoder.decode(data)
        keep = len(lg.decoder.getstate()[0])
        raw = held + data if held else data
        if keep:
            raw = raw[:-keep]
        if raw:
            self._push(lg, text, raw, out, ts)

    def _flush(self, lg: _Log, out: list[Chunk], ts: float) -> None:
        """Emit bytes held for an unfinished character (as U+FFFD): its file ended."""
        held = lg.decoder.getstate()[0]
        text = lg.decoder.decode(b"", final=True)
        lg.decoder.reset()
        if held:
            self._push(lg, text, held, out, ts)

    def _push(self, lg: _Log, text: str, raw: bytes, out: list[Chunk], ts: float) -> None:
        lg.offset += len(raw)
        if self._max_buffer:
            # Chunks, dropped whole once the rest covers max_buffer: no copying per push.
            kept = raw[-self._max_buffer:]
            lg.ring.append(kept)
            lg.ring_size += len(kept)
            while lg.ring_size - len(lg.ring[0]) >= self._max_buffer:
                lg.ring_size -= len(lg.ring.popleft())
        out.append(Chunk(lg.slug, text, raw, lg.offset, ts, lg.gap))
        lg.gap = False

    def _save(self, lg: _Log, reader: Inode | None = None,
              known: Mapping[str, Any] | None = None) -> None:
        """Persist the current file's base (atomically) so offsets survive a restart.

        ``known`` is what the sidecar already holds: an unchanged one is not rewritten
        (at start-up that is every log, and 100 renames cost the first paint ~40 ms).
        Its ``end`` stands while it numbers the same file from the same base: the bytes
        the last run emitted up to there were emitted, and a start that rewrote it down to
        the base rewrote every log that had moved since its sidecar was last saved.
        """
        head = reader or lg.follow.head
        if head is None:
            return
        end = max(lg.offset, head.base)
        if known is not None and (known.get("dev"), known.get("ino"), known.get("base")) == (
                head.ident[0], head.ident[1], head.base) and isinstance(known.get("end"), int):
            end = max(end, known["end"])
        value: dict[str, Any] = {
            "dev": head.ident[0], "ino": head.ident[1], "base": head.base, "end": end,
            "prev": None if lg.prev is None else {
                "dev": lg.prev.ident[0], "ino": lg.prev.ident[1], "base": lg.prev.base,
                "end": lg.prev.end},
        }
        if known is not None and dict(known) == value:
            return
        tmp = lg.base_path.with_name(f".{lg.base_path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(value), encoding="utf-8")
            os.replace(tmp, lg.base_path)
        except OSError as exc:
            log.warning("cannot save %s: %s", lg.base_path, exc)


def _open_ident(path: Path, inode: Ident) -> int | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    if ident(os.fstat(fd)) != inode:
        os.close(fd)
        return None
    return fd


def _serve(sources: list[tuple[_Segment, int]], offset: int, end: int,
           limit: int | None) -> tuple[bytes, int, bool]:
    """Read logical ``[offset, end)`` out of the segments, marking holes as a gap."""
    gap = False
    if not 0 <= offset <= end:
        gap, offset = True, 0  # another numbering: restart from what is kept
    parts: list[bytes] = []
    total = 0
    for seg, fd in sources:
        seg_end = min(seg.end, end)
        if offset >= seg_end:
            continue
        if offset < seg.base:
            gap, offset = True, seg.base
        want = seg_end - offset
        if limit is not None:
            want = min(want, limit - total)
        if want <= 0:
            break
        data = os.pread(fd, want, offset - seg.base)
        if gap and not parts:
            skip = _skip_continuation(data)  # do not start inside a character
            data, offset = data[skip:], offset + skip
        parts.append(data)
        total += len(data)
        offset += len(data)
        if len(data) < want:  # the file is shorter than its numbering says
            gap, offset = True, seg_end
    data = b"".join(parts)
    if offset < end:
        if limit is None or total < limit:
            gap, offset = True, end  # nothing on disk covers the rest
        else:
            cut = _incomplete_tail(data)
            if cut:
                data, offset = data[:-cut], offset - cut
    return data, offset, gap


def _merge(chunks: list[Chunk]) -> list[Chunk]:
    """Join consecutive chunks of one session read in one call (a gap starts a new one)."""
    merged: list[Chunk] = []
    group: list[Chunk] = []

    def close() -> None:
        if len(group) == 1:
            merged.append(group[0])
        elif group:
            first, last = group[0], group[-1]
            merged.append(Chunk(first.slug, "".join(c.data for c in group),
                                b"".join(c.raw for c in group), last.offset, first.ts,
                                first.gap))
        group.clear()

    for chunk in chunks:
        if group and (chunk.slug != group[0].slug or chunk.gap):
            close()
        group.append(chunk)
    close()
    return merged
