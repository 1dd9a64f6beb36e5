"""The status line: one short line for tmux's status bar (``#{cbos_status}``).

A running engine (the TUI, `cbos serve`) publishes the line into tmux server options
whenever it changes (:data:`STATUS_OPTION`), with a lease (:data:`LEASE_OPTION`, an epoch
second it renews every few seconds); the plugin's format shows the option while the lease
holds, so tmux starts no process at all. Without an engine (or once one died and its lease
ran out) the format runs `cbos status` instead, which computes the line from scratch.

`cbos status` must be cheap enough to run every interval.

tmux runs it through ``#()`` at most once a second, so it avoids everything heavy: no
urwid (one ``list-panes``), no psutil (Claude's status files and the
pane listing say whether claude runs), only the newest events, and the state machinery
is imported while tmux lists the panes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from cbos.tmux import Tmux

if TYPE_CHECKING:
    from cbos import state as st
    from cbos.config import Config
    from cbos.model import Board, Snapshot
    from cbos.panes import Pane

EVENT_BYTES = 128 << 10  # the newest turns of every pane; older events rarely matter here
STATUS_OPTION = "@cbos_status"
LEASE_OPTION = "@cbos_status_until"
LEASE = 10.0  # seconds a published line holds without renewal; renewed every LEASE / 3
_SHELLS = frozenset({"", "bash", "zsh", "sh", "fish", "dash"})


def _status_by_pane(directory: Path) -> dict[str, st.StatusFile]:
    """Claude's status files of live claude processes, keyed by tmux pane id."""
    from cbos import state as st
    from cbos.procs import Proc

    found: dict[str, st.StatusFile] = {}
    try:
        names = os.listdir(directory)
    except OSError:
        return found
    for name in names:
        if not name.endswith(".json"):
            continue
        status = st.read_status_file(directory / name)
        if status is None or not status.tmux or "%" not in status.tmux:
            continue
        alive = st.proc_start_ticks(status.pid) is not None
        claude = Proc(status.pid, 0, "claude", (), 0.0, "running")
        if not alive or not st.status_consistent(status, claude):
            continue  # stale: claude died without removing it, or the pid was reused
        found["%" + status.tmux.rsplit("%", 1)[1]] = status
    return found


def line(config: Config) -> str:
    """``⚠ 1 ● 2 ◑ 3``: sessions needing the person first; empty when nothing is going on."""
    # tmux answers while the state machinery imports (~15 ms, mostly building dataclasses):
    # the listing runs on a thread that mostly waits on the tmux child, so the two overlap.
    # With no session at all the import is wasted, but that line is empty and cheap anyway.
    listed: list[list[Pane] | BaseException] = []

    def list_panes() -> None:
        try:
            listed.append(Tmux(config.tmux_socket, check_version=False).list_panes())
        except BaseException as exc:  # re-raised on the calling thread
            listed.append(exc)

    lister = threading.Thread(target=list_panes, name="cbos-status-list")
    lister.start()
    from cbos import state as st
    from cbos.events import read_recent
    from cbos.model import Board
    from cbos.panes import PaneSession
    from cbos.procs import Proc

    lister.join()
    if isinstance(listed[0], BaseException):
        raise listed[0]
    panes = [p for p in listed[0] if p.slug]
    if not panes:
        return ""
    # Status files before events: a hook's event is written before the status it causes.
    statuses = _status_by_pane(st.status_dir(os.environ))
    board = Board(stall_seconds=config.stall_seconds)
    board.apply_events(read_recent(config, EVENT_BYTES))
    sessions: list[PaneSession] = []
    files: dict[int, st.StatusFile] = {}
    for pane in panes:
        status = statuses.get(pane.pane_id)
        pid = status.pid if status else None
        if pid is None and not pane.dead and pane.current_command not in _SHELLS:
            track = board.tracks.get(pane.pane_id)
            # Before its first hook and status file (a startup dialog) claude is known
            # only as the pane's foreground program.
            pid = track.claude_pid if track and track.claude_pid else pane.pid
        claude = Proc(pid, 0, "claude", (), 0.0, "running") if pid else None
        if status is not None:
            files[status.pid] = status
        sessions.append(PaneSession(pane.slug, pane, claude, adopted=not pane.owned))
    board.set_sessions(sessions, None, files)
    snapshot = board.snapshot()
    if _read_screens(board, snapshot, Tmux(config.tmux_socket, check_version=False)):
        snapshot = board.snapshot()
    return render(snapshot.counts())


def _read_screens(board: Board, snapshot: Snapshot, tmux: Tmux) -> bool:
    """A live claude no signal calls busy may sit behind a dialog (workspace trust, a
    project's MCP servers: no hook fires) or a notice (not logged in): one capture of
    those screens, as the engine does, so that the line counts them as asking or waiting
    instead of leaving them out. Sessions at work or waiting cost nothing. True if a
    screen showed something."""
    from cbos.model import may_show_blocker

    wanted = {v.slug: v.pane_id for v in snapshot.sessions
              if may_show_blocker(v, waiting=False)}
    if not wanted:
        return False
    from cbos.dialog import blocking_notice, parse_dialog
    from cbos.errors import TmuxError

    try:
        screens = tmux.capture_many(list(wanted.values()))
    except TmuxError:
        return False  # the panes went away meanwhile: the line shows what the rest says
    found = False
    for slug, pane in wanted.items():
        if pane in screens:
            dialog, notice = parse_dialog(screens[pane]), blocking_notice(screens[pane])
            if dialog is not None or notice:
                board.set_screen(slug, dialog, notice)
                found = True
    return found


def render(counts: Mapping[st.State, int]) -> str:
    """``⚠ 1 ● 2 ◑ 3`` from the number of sessions in each state (needing the person
    first; idle and exited sessions are not news)."""
    from cbos import state as st

    shown = (st.State.PERMISSION, st.State.WAITING, st.State.WORKING, st.State.THINKING)
    return " ".join(f"{state.icon} {counts[state]}" for state in shown if counts.get(state))
