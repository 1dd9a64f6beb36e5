"""Waiting on a session without polling: `cbos wait`, and the wake-ups `chat` shares.

The signals that change a state are the events file (hooks) and Claude's status files;
both are watched (:mod:`cbos.watch`), so a wait costs nothing while nothing happens. A
slow fallback refresh catches what no file shows (a pane killed outright).
"""

from __future__ import annotations

import select
import time
from pathlib import Path

from cbos.config import Config
from cbos.core import Core
from cbos.errors import CbosError
from cbos.events import Events, HookEvent
from cbos.model import SessionView
from cbos.state import State
from cbos.watch import Watch

FALLBACK_REFRESH = 2.0
"""Seconds between looks at tmux and the processes while waiting, whatever the files say."""


class Wakeups:
    """The events-file tail plus a watch on Claude's status-file directory.

    The tail starts on construction; :meth:`Events.backlog` on :attr:`events` gives what
    came before, so a caller that applies the backlog and then :meth:`read` misses nothing.
    """

    def __init__(self, config: Config, status_dir: Path) -> None:
        self.events = Events(config)
        self.status = Watch()
        # No status dir yet: the fallback refresh covers it.
        self.status.directory(status_dir, "status", whole_files=True)
        self.changed: set[str] = set()  # status files written since the caller cleared it
        self._files: set[Path] = set()

    def watch_file(self, path: Path) -> None:
        """Wake up as ``path`` grows too (a transcript whose cost is being held)."""
        if path not in self._files:
            self._files.add(path)
            self.status.file(path, "file")

    def read(self) -> list[HookEvent]:
        """Every event appended since the last read (the whole backlog of wake-ups)."""
        fresh = self.events.read()
        while self.events.pending:
            fresh += self.events.read()
        return fresh

    def wait(self, seconds: float) -> bool:
        """Block until an event is appended or a status file changes, at most ``seconds``;
        whether anything woke it."""
        status = self.status.fileno()
        ready, _, _ = select.select([self.events.fileno(), status], [], [], max(seconds, 0.0))
        if status in ready:
            self.changed |= {change.name for change in self.status.changes()}
        return bool(ready)

    def close(self) -> None:
        self.events.close()
        self.status.close()

    def __enter__(self) -> Wakeups:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_for(core: Core, slug: str, wanted: set[str], timeout: float | None,
             ) -> SessionView | None:
    """The session's view once its state is in ``wanted``; None on timeout.

    ``core`` is a fresh one: the events backlog is read here, once, by the tail that then
    follows the file (``Core.load`` would read it a second time). Raises a clear error
    when the session ends in a state that was not asked for.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    with Wakeups(core.config, core.status_dir) as wake:
        core.refresh(wake.events.backlog)
        core.session(slug)  # an unknown slug fails at once, clearly
        last_refresh = time.monotonic()
        while True:
            view = core.view(slug)
            if view.state.value in wanted:
                return view
            if view.state is State.EXITED:
                raise CbosError(f"{slug} has exited ({view.reason}) without reaching "
                                f"{','.join(sorted(wanted))}")
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return None
            wait = FALLBACK_REFRESH - (now - last_refresh)
            if deadline is not None:
                wait = min(wait, deadline - now)
            woke = wake.wait(wait)
            if woke or time.monotonic() - last_refresh >= FALLBACK_REFRESH:
                # Status files and processes are read on every wake-up: they carry the
                # transitions no hook reports (Esc, a denied permission). Events are read
                # after them (Core.load says why).
                wake.changed.clear()
                core.refresh(wake.read)
                last_refresh = time.monotonic()
