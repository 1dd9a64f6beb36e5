"""`cbos tail -f`: follow a session's output, raw or rendered, woken by inotify.

Both start the live read first and take the snapshot after it (the backlog up to the
offset where the live read begins; the screen once the tail is watching), so nothing the
pane writes while the command starts falls between the two.
"""

from __future__ import annotations

import difflib
import select
import threading
import time
from collections.abc import Sequence
from typing import BinaryIO, TextIO

from cbos import logs
from cbos.config import Config
from cbos.tmux import Tmux

MIN_INTERVAL = 0.1  # rendered mode re-reads the screen at most ten times a second
SHOWN_BYTES = 1 << 20  # the most of the log printed before the last lines are cut


def last_lines(data: bytes, lines: int | None) -> bytes:
    """The last ``lines`` lines of ``data`` (all of it for None)."""
    return data if lines is None else b"".join(data.splitlines(keepends=True)[-lines:])


def raw(config: Config, slug: str, out: BinaryIO, lines: int | None,
        stop: threading.Event | None = None) -> None:
    """Print the end of the session's log, then copy new bytes to ``out`` as they land,
    until interrupted (or ``stop`` is set)."""
    with logs.Tail(config.stream_dir, max_buffer=0, prefill=False) as tail:
        end = tail.offset(slug)
        data, _, _ = tail.read_since(slug, max(0, end - SHOWN_BYTES))
        out.write(last_lines(data, lines))
        out.flush()
        while stop is None or not stop.is_set():
            select.select([tail.fileno()], [], [], 1.0 if stop is None else 0.1)
            for chunk in tail.read() + tail.rescan():
                if chunk.slug == slug:
                    out.write(chunk.raw)
            out.flush()


def new_lines(previous: Sequence[str], current: Sequence[str]) -> list[str]:
    """Lines of ``current`` that are new relative to ``previous``.

    Claude redraws its screen in place, so "new" is a diff of two renderings: inserted and
    replaced lines are printed; lines that merely stayed (the composer, the banner) are not.
    """
    matcher = difflib.SequenceMatcher(None, previous, current, autojunk=False)
    fresh: list[str] = []
    for tag, _, _, j1, j2 in matcher.get_opcodes():
        if tag in ("insert", "replace"):
            fresh.extend(line for line in current[j1:j2] if line.strip())
    return fresh


def rendered(config: Config, tmux: Tmux, slug: str, pane_id: str, colours: bool,
             lines: int | None, out: TextIO, stop: threading.Event | None = None) -> None:
    """Print the session's screen, then what changes on it whenever its log moves."""
    last = 0.0
    dirty = False  # the log moved since the screen was last read
    with logs.Tail(config.stream_dir, max_buffer=0, prefill=False) as tail:
        previous = tmux.capture(pane_id, colours=colours, lines=lines).splitlines()
        print("\n".join(previous), file=out, flush=True)
        while stop is None or not stop.is_set():
            timeout = max(0.0, MIN_INTERVAL - (time.monotonic() - last)) if dirty else 1.0
            select.select([tail.fileno()], [], [], timeout if stop is None else
                          min(timeout, 0.1))
            if any(c.slug == slug for c in tail.read() + tail.rescan()):
                dirty = True
            if not dirty or time.monotonic() - last < MIN_INTERVAL:
                continue
            dirty, last = False, time.monotonic()
            current = tmux.capture(pane_id, colours=colours).splitlines()
            for line in new_lines(previous, current):
                print(line, file=out, flush=True)
            previous = current
