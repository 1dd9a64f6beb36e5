"""The core every front end shares: refresh the board from tmux, processes and files, and
carry out actions safely. The CLI uses it one-shot; the TUI and `cbos serve` keep one.

Only the thread that owns a Core calls it; other threads get its snapshots.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cbos import sessions
from cbos import state as st
from cbos.config import Config
from cbos.errors import RefusedError, TmuxError
from cbos.events import HookEvent, read_recent
from cbos.model import Board, Outside, SessionView, Snapshot, read_status_files
from cbos.model import may_show_blocker as may_show_blocker  # (engine imports it from here)
from cbos.panes import PaneSession
from cbos.procs import ZOMBIE, Proc, ProcTable, is_claude
from cbos.tmux import Tmux

if TYPE_CHECKING:  # dialog and hooks are imported where used: `cbos ls` needs neither
    from cbos.dialog import Dialog

DIALOG_GRACE = 1.0  # Claude's dialogs ignore keys for about a second after they open
READY_WAIT = 20.0  # seconds a send waits for a starting claude's prompt box
READY_POLL = 0.1


@dataclass(frozen=True)
class Gathered:
    """What one refresh read from tmux, the process table and Claude's status files."""

    sessions: list[PaneSession]
    procs: ProcTable
    status_files: dict[int, st.StatusFile]
    tmux_up: bool
    outside: tuple[Outside, ...] = ()  # claude running outside cbos's tmux panes


def find_outside(procs: ProcTable, panes: list[PaneSession], directory: Path,
                 ) -> tuple[Outside, ...]:
    """Every claude on this machine that Claude's status files name and that runs in no
    tmux pane (a plain terminal, an IDE's terminal, a background session): watched, never
    driven. One in a pane of another tmux server is left to that server (`cbos -L`).

    A claude under a pane's process (a tool's ``claude -p``) belongs to that pane.
    """
    in_panes = {s.claude.pid for s in panes if s.claude is not None}
    roots = {s.pane.pid for s in panes if s.pane.pid is not None}
    try:
        names = [n for n in os.listdir(directory) if n.endswith(".json") and n[:-5].isdigit()]
    except OSError:
        return ()
    found = []
    for name in sorted(names, key=lambda n: int(n[:-5])):
        pid = int(name[:-5])
        proc = procs.procs.get(pid)
        if proc is None or pid in in_panes or not is_claude(proc) or proc.status == ZOMBIE:
            continue
        if _under(procs, proc, roots):
            continue
        status = st.read_status_file(directory / name)
        if status is None or not st.status_consistent(status, proc) or status.tmux:
            continue  # (a pane of another tmux server is that server's cbos's to show)
        found.append(Outside(f"outside-{pid}", proc, status))
    return tuple(found)


def _under(procs: ProcTable, proc: Proc, roots: set[int]) -> bool:
    pid, steps = proc.ppid, 0
    while pid > 1 and steps < 64:
        if pid in roots:
            return True
        parent = procs.procs.get(pid)
        if parent is None:
            return False
        pid, steps = parent.ppid, steps + 1
    return False


class Core:
    def __init__(self, config: Config, tmux: Tmux | None = None) -> None:
        self.config = config
        self.tmux = tmux if tmux is not None else Tmux(config.tmux_socket)
        self.board = Board(stall_seconds=config.stall_seconds)
        self.status_dir = st.status_dir(os.environ)

    # -- reading ------------------------------------------------------------------------

    def load(self) -> Core:
        """Apply the events written while no cbos ran, then look at tmux once."""
        # Status files and processes first, events second: Claude writes a hook's event
        # before it changes its status file, so events read later are never older than
        # the status file read before them (the other order shows a status change the
        # events do not explain yet, e.g. "waiting" without its PermissionRequest).
        gathered = self.gather()
        self.board.apply_events(read_recent(self.config))
        self.apply(gathered)
        self.read_dialogs()
        return self

    def refresh(self, events: Callable[[], Iterable[HookEvent]] | None = None) -> None:
        """One tmux listing, one process snapshot, the status files, and open dialogs.

        ``events`` (new hook events) is read after the status files, for the reason
        given in :meth:`load`.
        """
        gathered = self.gather()
        if events is not None:
            self.board.apply_events(events())
        self.apply(gathered)
        self.read_dialogs()

    def gather(self) -> Gathered:
        """The I/O half of a refresh; safe in a worker thread (touches no board state).

        Adoption (a slug option and a pipe for hand-started claude) happens here too.
        """
        procs = ProcTable.snapshot()
        try:
            found = sessions.discover(self.tmux, self.config, procs)
            # No panes can mean no server: ask (one call, only when the list is empty).
            up = bool(found) or self.tmux.alive()
        except TmuxError:
            found, up = [], False
        pids = [s.claude.pid for s in found if s.claude is not None]
        return Gathered(found, procs, read_status_files(self.status_dir, pids), up,
                        find_outside(procs, found, self.status_dir))

    def apply(self, gathered: Gathered, remember: bool = True) -> None:
        """The board half of a refresh: only the thread that owns the board calls it.

        ``remember`` records each session's conversation id and path for `cbos resume` (a
        write only when one changed: a new session, /clear); the engine does that on a
        worker instead, the write being locked and fsynced.
        """
        self.board.tmux_up = gathered.tmux_up
        self.board.set_sessions(gathered.sessions, gathered.procs, gathered.status_files)
        self.board.outside = {o.slug: o for o in gathered.outside
                              if o.slug not in self.board.sessions}
        if remember:
            from cbos import registry  # (tempfile, shutil: not on the TUI's way to its first paint)

            registry.remember(self.config, self.board.conversations())

    def read_dialogs(self, only: Sequence[str] | None = None) -> None:
        """Read the screens of sessions that may show a dialog or a blocking notice.

        Those are the sessions in ``permission``, and live claudes other signals call
        ``idle`` (a startup dialog comes before any hook or status file; "not logged in"
        after SessionStart) or that a notice already holds: one capture each, and none
        for sessions at work.
        """
        snapshot = self.board.snapshot()
        wanted: dict[str, str] = {}
        for view in snapshot.sessions:
            if only is not None and view.slug not in only:
                continue
            if may_show_blocker(view, self.board.notices.get(view.slug, ""), waiting=False):
                wanted[view.slug] = view.pane_id
            else:
                self.board.set_dialog(view.slug, None)
        for slug, found in self.read_screens(wanted).items():
            self.board.set_screen(slug, *found)

    def read_screens(self, panes: Mapping[str, str]
                     ) -> dict[str, tuple[Dialog | None, str, str]]:
        """The dialog, blocking notice and API retry on each screen (``{slug: pane_id}``),
        read with one tmux call however many there are."""
        if not panes:
            return {}
        from cbos.dialog import blocking_notice, parse_dialog, retry_notice

        try:
            texts = self.tmux.capture_many(list(panes.values()))
        except TmuxError:
            texts = {}
        return {slug: (parse_dialog(texts[pane]), blocking_notice(texts[pane]),
                       retry_notice(texts[pane]))
                if pane in texts else (None, "", "") for slug, pane in panes.items()}

    def read_screen(self, pane_id: str) -> tuple[Dialog | None, str, str]:
        """The dialog, the blocking notice and the API retry on a pane's screen."""
        return self.read_screens({pane_id: pane_id})[pane_id]

    def _dialog_on_screen(self, pane_id: str) -> Dialog | None:
        return self.read_screen(pane_id)[0]

    def snapshot(self) -> Snapshot:
        return self.board.snapshot()

    def session(self, slug: str) -> PaneSession:
        outside = self.board.outside.get(slug)
        if outside is not None:
            where = outside.status.cwd if outside.status is not None else "?"
            raise RefusedError(
                f"{slug} is a claude outside cbos's tmux (pid {outside.claude.pid}, in "
                f"{where}): cbos can only watch it. Type, answer or attach in the terminal "
                "it runs in")
        return sessions.resolve(list(self.board.sessions.values()), slug)

    def view(self, slug: str) -> SessionView:
        if slug not in self.board.outside:
            self.session(slug)  # raises the clear "no session named" error
        view = self.board.snapshot().get(slug)
        assert view is not None
        return view

    # -- acting -------------------------------------------------------------------------

    def send(self, slug: str, text: str) -> None:
        """Type a prompt, unless a dialog is open: its Enter would answer the dialog."""
        self.send_to(self.session(slug).pane.pane_id, slug, self.view(slug), text)

    def send_to(self, pane_id: str, slug: str, view: SessionView, text: str) -> None:
        """The I/O half of :meth:`send` (safe on a worker thread): the state was read by
        the caller; the screen is read here, just before typing, for a dialog no signal
        announced (auto mode, /add-dir)."""
        if view.state is st.State.PERMISSION:
            raise RefusedError(
                f"{slug} is asking for permission ({view.reason}); typing would answer the "
                f"dialog. Answer it with `cbos answer {slug} CHOICE` (a number, yes, no or esc)")
        # Starting: claude runs, but neither its SessionStart hook nor its status file has
        # named a conversation yet (2.1.332 spends ~5 s so after its startup dialogs).
        starting = (view.state is st.State.IDLE and view.pid is not None
                    and not view.claude_session_id)
        dialog = self._ready_screen(pane_id, slug) if starting \
            else self._dialog_on_screen(pane_id)
        if dialog is not None:
            raise RefusedError(
                f"{slug} is showing a dialog; typing would answer it. Answer it with "
                f"`cbos answer {slug} CHOICE` (a number, yes, no or esc)")
        self.tmux.send_text(pane_id, text, slug)

    def _ready_screen(self, pane_id: str, slug: str) -> Dialog | None:
        """An idle session may not take input yet: claude just started, or is between its
        startup dialogs and the session, where typed text is lost. Wait (worker or CLI
        thread) for its prompt box or a dialog, up to READY_WAIT seconds."""
        from cbos.dialog import composer_shown, parse_dialog

        deadline = time.monotonic() + READY_WAIT
        while True:
            try:
                screen = self.tmux.capture(pane_id, colours=False)
            except TmuxError:
                screen = ""
            dialog = parse_dialog(screen)
            if dialog is not None or composer_shown(screen):
                return dialog
            if time.monotonic() > deadline:
                raise RefusedError(f"{slug} shows no prompt box after {READY_WAIT:g} s, so "
                                   f"claude would drop what is typed; see `cbos buffer {slug}`")
            time.sleep(READY_POLL)

    def interrupt(self, slug: str) -> None:
        self.tmux.interrupt(self.session(slug).pane.pane_id, slug)

    def answer(self, slug: str, choice: str, wait: bool = True) -> Dialog:
        """Pick an option of the dialog on screen; returns the dialog that was answered."""
        return self.answer_to(self.session(slug).pane.pane_id, slug, self.view(slug), choice,
                              wait)

    def answer_to(self, pane_id: str, slug: str, view: SessionView, choice: str,
                  wait: bool = True, expect: str | None = None) -> Dialog:
        dialog = self._dialog_on_screen(pane_id)
        if dialog is None:
            raise RefusedError(f"{slug} shows no dialog to answer; see `cbos buffer {slug}`")
        if expect is not None and dialog.question != expect:
            # The dialog answered must be the one the person read (a page may lag).
            raise RefusedError(f"{slug}'s dialog changed: it now asks {dialog.question!r}; "
                               "look at it again before answering")
        from cbos.dialog import answer_keys

        keys = answer_keys(dialog, choice)
        if wait and view.state is st.State.PERMISSION:
            # Keys pressed in the dialog's first second are dropped by Claude.
            delay = view.since + DIALOG_GRACE - time.time()
            if 0 < delay <= DIALOG_GRACE:
                time.sleep(delay)
        self.tmux.send_keys(pane_id, keys, slug)
        return dialog

    def kill(self, slug: str) -> PaneSession:
        session = self.session(slug)
        self.tmux.kill(session.pane)
        return session

    def create(self, path: Path, slug: str | None = None,
               extra_args: Sequence[str] = (), env: Mapping[str, str] | None = None,
               ) -> PaneSession:
        """Start a session; it gets cbos's hooks through --settings unless they are global.

        The session's path, arguments and environment are remembered for `cbos resume`.
        """
        from cbos import hooks, registry

        args = list(extra_args)
        if not hooks.installed_globally(self.config):
            args = ["--settings", str(hooks.settings_for_session(self.config)), *args]
        session = sessions.create(self.tmux, self.config, path, slug=slug, extra_args=args,
                                  env=env)
        registry.record_start(self.config, session.slug, path.resolve(), extra_args, env)
        return session
