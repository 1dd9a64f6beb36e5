"""Notifications: tell the person when a session starts needing them.

When a session starts waiting or asks for permission, cbos shows a tmux message on every
attached client naming the session (and what it asks), rings the bell on every attached
client's terminal (never into the pane, whose output is claude's), and, when asked, sends
a desktop notification with ``notify-send``.

What counts as "starts" (:func:`transitions`, pure): the state becomes ``permission`` or
``waiting`` from another state. Staying in a state is never news, whatever its reason
says: cbos re-words a reason as it learns more (the dialog read off the screen, a
background task noted), and may re-date it. Nothing is announced on the first snapshot
(cbos starting with sessions already waiting) or for a session seen for the first time.

Flapping (:class:`Settle`): a session that leaves the state it was announced for and comes
back to it within :data:`NOTIFY_SETTLE` is not announced again: a state shown briefly,
then reverted (a stale dialog for a few milliseconds after an answer, a status-file blip
that lasts until the next refresh, 2 s) is not news, and a person who answered or typed a
moment ago is at the screen anyway. Notices are never delayed: the first goes out at once.

Options (tmux, global; read at start, on :meth:`Notifier.reload`, and again before
delivering when older than :data:`RELOAD_EVERY`): ``@cbos-notify`` (the message),
``@cbos-notify-bell`` and ``@cbos-notify-desktop``. Each is ``on``, ``off``, or the
states it applies to (``permission``, ``waiting``, comma-separated).

Threads: :meth:`Notifier.on_snapshot` runs on the loop thread and only computes; every tmux
command and process runs on the engine's worker thread through ``engine.run``.
"""

from __future__ import annotations

import html
import logging
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from cbos.errors import CbosError
from cbos.model import SessionView, Snapshot
from cbos.state import ICONS, State
from cbos.tmux import Client

log = logging.getLogger(__name__)

NOTIFIED = (State.PERMISSION, State.WAITING)  # in the order notices are delivered
NOTIFY_SETTLE = 2.5
RELOAD_EVERY = 10.0
MESSAGE_MS = 4000  # how long the tmux message stays (a key press clears it sooner)
MAX_TEXT = 200

# The tmux options and their defaults; tmux/cbos.tmux declares the same defaults.
DISPLAY_OPTION = "@cbos-notify"
BELL_OPTION = "@cbos-notify-bell"
DESKTOP_OPTION = "@cbos-notify-desktop"
DEFAULTS: Mapping[str, str] = {DISPLAY_OPTION: "on", BELL_OPTION: "on", DESKTOP_OPTION: "off"}
_ON = frozenset({"on", "yes", "true", "1"})
_OFF = frozenset({"off", "no", "false", "0", "none"})


class TmuxLike(Protocol):
    def clients(self) -> list[Client]: ...

    def show_message(self, client: str, text: str, milliseconds: int) -> None: ...

    def global_option(self, name: str) -> str: ...


class EngineLike(Protocol):
    snapshot_listeners: list[Callable[[Snapshot, Snapshot | None], None]]

    def run(self, work: Callable[[], Any], done: Any = None) -> None: ...


# -- what to notify ----------------------------------------------------------------------


@dataclass(frozen=True)
class Notice:
    """One session that has just started needing its person."""

    slug: str
    state: State
    reason: str
    since: float
    pane_id: str
    tmux: str  # "session:window.pane", for people

    @classmethod
    def of(cls, view: SessionView) -> Notice:
        return cls(view.slug, view.state, view.reason, view.since, view.pane_id, view.tmux)

    @property
    def title(self) -> str:
        if self.state is State.PERMISSION:
            return f"{self.slug} needs permission"
        return f"{self.slug} is waiting"

    @property
    def message(self) -> str:
        """The one line shown in tmux: ``cbos: ⚠ AUTH needs permission: asks to use …``."""
        return clip(f"cbos: {ICONS[self.state]} {self.title}: {one_line(self.reason)}")


def transitions(previous: Snapshot | None, current: Snapshot) -> list[Notice]:
    """Sessions that started waiting or asking between ``previous`` and ``current``."""
    if previous is None:
        return []
    before = {view.slug: view for view in previous.sessions}
    notices = []
    for view in current.sessions:
        old = before.get(view.slug)
        if view.state in NOTIFIED and old is not None and old.state != view.state:
            notices.append(Notice.of(view))
    notices.sort(key=lambda n: (NOTIFIED.index(n.state), n.slug))
    return notices


@dataclass
class Settle:
    """Drops the notice of a session that comes back, within ``seconds``, to the state it
    was announced for (a state shown briefly, then reverted). Loop thread only."""

    seconds: float = NOTIFY_SETTLE
    # (slug, state announced) -> when the session left that state; None while it is in it
    _left: dict[tuple[str, State], float | None] = field(default_factory=dict)

    def filter(self, notices: Iterable[Notice], current: Snapshot) -> list[Notice]:
        now = current.taken
        states = {view.slug: view.state for view in current.sessions}
        for key, left in list(self._left.items()):
            if key[0] not in states or (left is not None and now - left >= self.seconds):
                del self._left[key]  # gone, or away long enough: a return is news again
        due = []
        for notice in notices:
            key = (notice.slug, notice.state)
            back = self._left.get(key) is not None
            self._left[key] = None
            if not back:
                due.append(notice)
        for key, left in list(self._left.items()):
            if left is None and states[key[0]] != key[1]:
                self._left[key] = now
        return due


# -- options -----------------------------------------------------------------------------


def parse_switch(text: str) -> frozenset[State] | None:
    """``on`` / ``off`` / ``permission,waiting`` -> the states it covers; None if invalid."""
    value = text.strip().lower()
    if value in _ON:
        return frozenset(NOTIFIED)
    if value in _OFF:
        return frozenset()
    names = {part.strip() for part in value.split(",") if part.strip()}
    allowed = {state.value for state in NOTIFIED}
    if not names or not names <= allowed:
        return None
    return frozenset(State(name) for name in names)


@dataclass(frozen=True)
class Channels:
    """Which states each kind of notification is on for."""

    display: frozenset[State]
    bell: frozenset[State]
    desktop: frozenset[State]

    @classmethod
    def from_options(cls, values: Mapping[str, str]) -> Channels:
        chosen: dict[str, frozenset[State]] = {}
        for name, default in DEFAULTS.items():
            raw = values.get(name, "") or default
            parsed = parse_switch(raw)
            if parsed is None:
                log.warning("tmux option %s=%r is not on, off, or a list of permission and "
                            "waiting; using %s", name, raw, default)
                parsed = parse_switch(default)
                assert parsed is not None
            chosen[name] = parsed
        return cls(chosen[DISPLAY_OPTION], chosen[BELL_OPTION], chosen[DESKTOP_OPTION])


# -- text --------------------------------------------------------------------------------


def one_line(text: str) -> str:
    """Control characters (newlines, escapes) become spaces; runs of spaces shrink."""
    cleaned = "".join(" " if ord(c) < 32 or 127 <= ord(c) < 160 else c for c in text)
    return " ".join(cleaned.split())


def clip(text: str, width: int = MAX_TEXT) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def summary(notices: Sequence[Notice]) -> str:
    """The tmux message for one notice, or for several at once (most urgent first)."""
    if len(notices) == 1:
        return notices[0].message
    parts = [f"{ICONS[n.state]} {n.title}: {clip(one_line(n.reason), 60)}" for n in notices]
    return clip("cbos: " + " · ".join(parts))


def tmux_literal(text: str) -> str:
    """``text`` as a tmux argument shown exactly: display-message runs strftime (``%``) and
    format expansion (``#``) over it, and an argument ending in ``;`` would end the command.
    (Put ``--`` before it: a leading ``-`` would be read as flags.)
    """
    text = text.replace("#", "##").replace("%", "%%")
    return text[:-1] + "\\;" if text.endswith(";") else text


# -- the notifier ------------------------------------------------------------------------


class Notifier:
    """Listens to the engine's snapshots; delivers notices on the engine's worker thread.

    Wire it with ``Notifier(engine.core.tmux, engine).start()``.
    """

    def __init__(self, tmux: TmuxLike, engine: EngineLike,
                 settle: float = NOTIFY_SETTLE) -> None:
        self._tmux = tmux
        self._engine = engine
        self._settle = Settle(settle)  # loop thread
        self._channels: Channels | None = None  # worker thread from here on
        self._read_at = 0.0
        self._children: list[subprocess.Popen[bytes]] = []

    def start(self) -> Notifier:
        """Listen to snapshots and read the options (on the worker)."""
        self._engine.snapshot_listeners.append(self.on_snapshot)
        self.reload()
        return self

    def reload(self) -> None:
        """Read the tmux options again (start-up and refresh); runs on the worker."""
        self._engine.run(self.read_options)

    def on_snapshot(self, current: Snapshot, previous: Snapshot | None) -> None:
        """Snapshot listener (loop thread): work out the notices, hand them to the worker."""
        notices = self._settle.filter(transitions(previous, current), current)
        if notices:
            self._engine.run(lambda: self.deliver(notices))

    # -- worker thread --------------------------------------------------------------------

    def read_options(self) -> Channels:
        # No server yet reads as unset: the defaults, read again later.
        values = {name: self._tmux.global_option(name) for name in DEFAULTS}
        self._channels = Channels.from_options(values)
        self._read_at = time.monotonic()
        return self._channels

    def channels(self) -> Channels:
        if self._channels is None or time.monotonic() - self._read_at > RELOAD_EVERY:
            return self.read_options()
        return self._channels

    def deliver(self, notices: Sequence[Notice]) -> None:
        """Carry out the notices: message, bell, desktop (each on its own, failures logged)."""
        channels = self.channels()
        shown = [n for n in notices if n.state in channels.display]
        if shown:
            self._guarded(self.display, shown)
        for notice in notices:
            if notice.state in channels.bell:
                self._guarded(self.bell, notice)
            if notice.state in channels.desktop:
                self._guarded(self.desktop, notice)

    def _guarded(self, action: Callable[[Any], None], arg: Any) -> None:
        try:
            action(arg)
        except (CbosError, OSError) as exc:
            log.warning("notification (%s) failed: %s", action.__name__, exc)

    def display(self, notices: Sequence[Notice]) -> None:
        """One message on every attached client (a client shows one message at a time)."""
        text = tmux_literal(summary(notices))
        for client in self._tmux.clients():
            self._tmux.show_message(client.name, text, MESSAGE_MS)

    def bell(self, notice: Notice) -> None:
        """A BEL on the terminal of every attached client, which rings or flags it as the
        terminal is set to. Written to the client's tty, not into the pane: the pane's
        output is claude's alone (its log, the activity clock, the WebSocket stream).
        One byte, never blocking; a client that went away meanwhile is skipped."""
        for client in self._tmux.clients():
            if not client.tty.startswith("/dev/"):
                continue
            try:
                fd = os.open(client.tty, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK
                             | os.O_CLOEXEC)
            except OSError as exc:
                log.debug("bell on %s: %s", client.tty, exc)
                continue
            try:
                if stat.S_ISCHR(os.fstat(fd).st_mode):
                    os.write(fd, b"\a")
            except BlockingIOError:
                pass  # the terminal is not reading: a bell is not worth waiting for
            finally:
                os.close(fd)

    def desktop(self, notice: Notice) -> None:
        """``notify-send``, when installed; not waited for (reaped on the next one)."""
        program = shutil.which("notify-send")
        if program is None:
            return
        self._children = [child for child in self._children if child.poll() is None]
        body = html.escape(clip(one_line(notice.reason)), quote=False)  # servers read markup
        self._children.append(subprocess.Popen(
            [program, "--app-name=cbos", "--", f"cbos: {notice.title}", body],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True))
