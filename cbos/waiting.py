"""`cbos wait`: block until a session reaches one of some states, woken by inotify.

The signals that change a state are the events file (hooks) and Claude's status files;
both are watched, so a wait costs nothing while nothing happens. A slow fallback refresh
catches what no file shows (a pane killed outright).
"""

from __future__ import annotations

import contextlib
import select
import time
from collections.abc import Iterator

import inotify_simple

from cbos.core import Core
from cbos.errors import CbosError
from cbos.events import Events
from cbos.model import SessionView
from cbos.state import State

FALLBACK_REFRESH = 5.0
_STATUS_MASK = (inotify_simple.flags.CLOSE_WRITE | inotify_simple.flags.MOVED_TO
                | inotify_simple.flags.DELETE | inotify_simple.flags.CREATE)


@contextlib.contextmanager
def _status_watch(core: Core) -> Iterator[inotify_simple.INotify | None]:
    """An inotify watch on Claude's status-file directory, if it exists."""
    notify = inotify_simple.INotify(nonblocking=True)
    try:
        try:
            notify.add_watch(str(core.status_dir), _STATUS_MASK)
        except OSError:
            notify.close()
            yield None
            return
        yield notify
    finally:
        with contextlib.suppress(OSError, ValueError):
            notify.close()


def wait_for(core: Core, slug: str, wanted: set[str], timeout: float | None,
             clock: type[time.time] | None = None) -> SessionView | None:  # type: ignore[valid-type]
    """The session's view once its state is in ``wanted``; None on timeout.

    Raises a clear error when the session ends in a state that was not asked for.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    with Events(core.config) as events, _status_watch(core) as status:
        core.refresh(events.backlog)
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
            fds = [events.fileno()] + ([status.fileno()] if status else [])
            ready, _, _ = select.select(fds, [], [], max(wait, 0.0))
            if status is not None and status.fileno() in ready:
                status.read()
            if ready or time.monotonic() - last_refresh >= FALLBACK_REFRESH:
                # Status files and processes are read on every wake-up: they carry the
                # transitions no hook reports (Esc, a denied permission). Events are read
                # after them (Core.load says why).
                core.refresh(events.read)
                last_refresh = time.monotonic()
