"""`cbos tail -f`: follow a session's output, raw or rendered, woken by inotify."""

from __future__ import annotations

import difflib
import select
import time
from collections.abc import Sequence
from typing import BinaryIO

from cbos import logs
from cbos.config import Config
from cbos.tmux import Tmux

MIN_INTERVAL = 0.1  # rendered mode re-reads the screen at most ten times a second


def raw(config: Config, slug: str, out: BinaryIO) -> None:
    """Copy new bytes of the session's log to ``out`` as they land, until interrupted."""
    with logs.Tail(config.stream_dir, max_buffer=config.max_buffer_size, prefill=False) as tail:
        while True:
            select.select([tail.fileno()], [], [], 1.0)
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


def rendered(config: Config, tmux: Tmux, slug: str, pane_id: str, shown: list[str],
             colours: bool) -> None:
    """Print what changes on the session's screen, whenever its log moves."""
    previous = shown
    last = 0.0
    dirty = False  # the log moved since the screen was last read
    with logs.Tail(config.stream_dir, max_buffer=config.max_buffer_size, prefill=False) as tail:
        while True:
            timeout = max(0.0, MIN_INTERVAL - (time.monotonic() - last)) if dirty else 1.0
            select.select([tail.fileno()], [], [], timeout)
            if any(c.slug == slug for c in tail.read() + tail.rescan()):
                dirty = True
            if not dirty or time.monotonic() - last < MIN_INTERVAL:
                continue
            dirty, last = False, time.monotonic()
            current = tmux.capture(pane_id, colours=colours).splitlines()
            for line in new_lines(previous, current):
                print(line, flush=True)
            previous = current
