"""The board: every session's fused state, kept by one thread, published as snapshots.

The board owns no I/O. Its owner (the TUI loop, `cbos serve`, or a one-shot CLI command)
feeds it hook events, output times, and refreshes (one tmux listing plus one process
snapshot); it answers with immutable :class:`Snapshot` objects that other threads may read.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cbos import state as st
from cbos.events import HookEvent
from cbos.panes import PaneSession
from cbos.procs import Proc, ProcTable

if TYPE_CHECKING:  # annotations only: the status line never reads a dialog
    from cbos.dialog import Dialog

# Said of a pane whose output goes to a pipe-pane its user set up: cbos leaves it alone.
USER_PIPE = "output goes to the user's own pipe-pane (cbos leaves it; no live log here)"


@dataclass(frozen=True)
class SessionView:
    """One session as shown: the protocol's SESSION object plus what the TUI needs."""

    slug: str
    path: str
    state: st.State
    reason: str
    since: float
    pid: int | None
    claude_session_id: str | None
    tmux: str  # "session:window.pane", for people
    pane_id: str  # "%7", for tmux
    adopted: bool
    dialog: Dialog | None = None
    read_only: bool = False  # a claude outside cbos's tmux: watched, never driven
    usage: Mapping[str, Any] = field(default_factory=dict)
    # The machine it runs on: None here; a [[hosts]] name for a remote session, whose slug
    # is then "HOST:SLUG" (":" is no slug character, so names never collide).
    host: str | None = None

    @property
    def icon(self) -> str:
        return st.ICONS[self.state]

    @property
    def bare(self) -> str:
        """The slug on its own machine (what goes on the wire to that host)."""
        return self.slug.partition(":")[2] if self.host else self.slug

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "slug": self.slug, "path": self.path, "state": self.state.value,
            "reason": self.reason, "since": round(self.since, 3), "pid": self.pid,
            "claude_session_id": self.claude_session_id,
            "tmux": None if self.read_only else self.tmux,
            "pane_id": None if self.read_only else self.pane_id, "adopted": self.adopted,
            "read_only": self.read_only, "dialog": None,
            "host": self.host,
        }
        if self.dialog is not None:
            data["dialog"] = {
                "kind": self.dialog.kind, "question": self.dialog.question,
                "options": [{"number": o.number, "label": o.label}
                            for o in self.dialog.options],
                "selected": self.dialog.selected, "cut": self.dialog.cut,
            }
        if self.usage:
            data["usage"] = dict(self.usage)
        return data


@dataclass(frozen=True)
class HostStatus:
    """How another machine's link stands (see cbos.hosts), for a one-line report."""

    name: str
    up: bool
    since: float  # when it came up, or went down
    error: str  # why it is down ("" while up, or before the first attempt has ended)
    retry_at: float | None = None  # when the next attempt starts (down only)

    def line(self, now: float | None = None) -> str:
        """"box1: unreachable since 12:03 — ssh: connect … refused; retrying in 8s"."""
        if self.up:
            return f"{self.name}: connected"
        if not self.error:
            return f"{self.name}: connecting…"
        clock = time.strftime("%H:%M", time.localtime(self.since))
        reason = self.error.removeprefix(f"{self.name}: ")
        text = f"{self.name}: unreachable since {clock} — {reason}"
        if self.retry_at is not None:
            now = time.time() if now is None else now
            text += f"; retrying in {max(0, round(self.retry_at - now))}s"
        return text


@dataclass(frozen=True)
class Snapshot:
    """The whole board at one instant; safe to share between threads."""

    version: int
    taken: float
    sessions: tuple[SessionView, ...]
    tmux_up: bool = True
    hosts: tuple[HostStatus, ...] = ()  # other machines' links, in config order

    def get(self, slug: str) -> SessionView | None:
        return next((s for s in self.sessions if s.slug == slug), None)

    def counts(self) -> dict[st.State, int]:
        counts = dict.fromkeys(st.State, 0)
        for view in self.sessions:
            counts[view.state] += 1
        return counts


@dataclass(frozen=True)
class Outside:
    """A claude no pane of cbos's tmux runs (core.find_outside): its process and file."""

    slug: str  # "outside-<pid>": not a name cbos gives a pane, so never ambiguous
    claude: Proc
    status: st.StatusFile | None


@dataclass
class Board:
    """Mutable state of the loop thread; everything else sees :meth:`snapshot`."""

    stall_seconds: float = 600.0
    tracks: dict[str, st.Track] = field(default_factory=dict)  # by tmux pane id
    last_output: dict[str, float] = field(default_factory=dict)  # by slug
    sessions: dict[str, PaneSession] = field(default_factory=dict)  # by slug
    status_files: dict[int, st.StatusFile] = field(default_factory=dict)  # by claude pid
    dialogs: dict[str, Dialog | None] = field(default_factory=dict)  # by slug
    notices: dict[str, str] = field(default_factory=dict)  # by slug: "not logged in: …"
    retries: dict[str, str] = field(default_factory=dict)  # by slug: "retrying: … (attempt 3/10)"
    outside: dict[str, Outside] = field(default_factory=dict)  # by slug: read-only claudes
    dialog_seen: dict[str, float] = field(default_factory=dict)  # by slug: first read
    procs: ProcTable | None = None
    tmux_up: bool = True
    _version: int = 0
    _views: dict[str, SessionView] = field(default_factory=dict)

    def apply_events(self, events: Iterable[HookEvent]) -> None:
        for event in events:
            key = event.pane or f"slug:{event.slug}"
            self.tracks[key] = st.fold(self.tracks.get(key), event)

    def note_output(self, slug: str, ts: float) -> None:
        self.last_output[slug] = ts

    def set_sessions(self, sessions: Sequence[PaneSession], procs: ProcTable | None,
                     status_files: Mapping[int, st.StatusFile]) -> None:
        self.sessions = {s.slug: s for s in sessions}
        self.procs = procs
        self.status_files = dict(status_files)
        live_panes = {s.pane.pane_id for s in sessions}
        for key in [k for k in self.tracks if k.startswith("%") and k not in live_panes]:
            del self.tracks[key]
        for screen in (self.dialogs, self.notices, self.retries, self.dialog_seen):
            for slug in [slug for slug in screen if slug not in self.sessions]:
                del screen[slug]  # a slug used again starts from a fresh screen

    def set_dialog(self, slug: str, dialog: Dialog | None) -> None:
        self.dialogs[slug] = dialog

    def set_screen(self, slug: str, dialog: Dialog | None, notice: str, retry: str = ""
                   ) -> None:
        """What a capture of the session's screen showed: a dialog, a blocking notice,
        claude retrying the API."""
        self.retries[slug] = retry
        before = self.dialogs.get(slug)
        if dialog is None:
            self.dialog_seen.pop(slug, None)
        elif before is None or (before.question, before.options) != (dialog.question,
                                                                      dialog.options):
            self.dialog_seen[slug] = time.time()
        self.dialogs[slug] = dialog
        self.notices[slug] = notice

    def conversations(self) -> dict[str, tuple[str, str]]:
        """{slug: (path, Claude session id)} of the sessions whose id the board knows.

        The hooks' id wins (it moves first on /clear), as long as it is about the claude now
        in the pane; Claude's own status file is next.
        """
        seen: dict[str, tuple[str, str]] = {}
        for slug, session in self.sessions.items():
            claude = session.claude
            track = self.track_for(session)
            session_id = ""
            if track is not None and track.session_id and (
                    claude is None or track.claude_pid is None
                    or track.claude_pid == claude.pid):
                session_id = track.session_id
            elif claude is not None:
                status = self.status_files.get(claude.pid)
                session_id = status.session_id if status is not None else ""
            if session_id:
                seen[slug] = (session.path, session_id)
        return seen

    def track_for(self, session: PaneSession) -> st.Track | None:
        return self.tracks.get(session.pane.pane_id) or self.tracks.get(f"slug:{session.slug}")

    def view(self, session: PaneSession, now: float) -> SessionView:
        claude = session.claude
        status = self.status_files.get(claude.pid) if claude else None
        if status is not None and claude is not None and not st.status_consistent(status, claude):
            status = None
        tools = st.tool_procs(self.procs, claude) if (claude and self.procs) else ()
        track = self.track_for(session)
        signals = st.Signals(
            now=now, track=track, status=status,
            claude_pid=claude.pid if claude else None,
            claude_started=claude.create_time if claude else None, tools=tools,
            pane_dead=session.pane.dead, dead_status=session.pane.dead_status,
            dead_signal=session.pane.dead_signal,
            last_output=self.last_output.get(session.slug),
            dialog=self.dialogs.get(session.slug), notice=self.notices.get(session.slug, ""),
            retry=self.retries.get(session.slug, ""),
            dialog_since=self.dialog_seen.get(session.slug),
            stall_seconds=self.stall_seconds,
        )
        verdict = st.infer(signals)
        if session.pane.foreign_pipe and not session.pane.dead:
            verdict = st.Verdict(verdict.state, f"{verdict.reason}; {USER_PIPE}", verdict.since)
        previous = self._views.get(session.slug)
        if previous is not None and (previous.state, previous.reason) == (verdict.state,
                                                                          verdict.reason):
            # Some verdicts can only say "now" (no signal dates them): keep the time the
            # state was first shown, so ages grow and snapshots stay equal.
            verdict = st.Verdict(verdict.state, verdict.reason,
                                 min(previous.since, verdict.since))
        session_id = (track.session_id if track and track.session_id else None) or (
            status.session_id if status else None)
        return SessionView(
            slug=session.slug, path=session.path, state=verdict.state, reason=verdict.reason,
            since=verdict.since, pid=claude.pid if claude else None,
            claude_session_id=session_id or None, tmux=session.pane.target,
            pane_id=session.pane.pane_id, adopted=session.adopted,
            dialog=self.dialogs.get(session.slug) if verdict.state == st.State.PERMISSION
            else None,
        )

    def view_outside(self, outside: Outside, now: float) -> SessionView:
        """A claude outside tmux, from its status file and processes (no pane, no hooks
        tied to a pane)."""
        claude, status = outside.claude, outside.status
        tools = st.tool_procs(self.procs, claude) if self.procs else ()
        verdict = st.infer(st.Signals(now=now, status=status, claude_pid=claude.pid,
                                      claude_started=claude.create_time, tools=tools,
                                      stall_seconds=0))
        reason = "outside tmux · " + verdict.reason.removesuffix(" (no hook events)")
        previous = self._views.get(outside.slug)
        since = verdict.since
        if previous is not None and (previous.state, previous.reason) == (verdict.state,
                                                                          reason):
            since = min(previous.since, since)
        return SessionView(
            slug=outside.slug, path=status.cwd if status is not None else "",
            state=verdict.state, reason=reason, since=since,
            pid=claude.pid, claude_session_id=status.session_id if status else None,
            tmux="", pane_id="", adopted=False, read_only=True)

    def snapshot(self, now: float | None = None) -> Snapshot:
        """Views of every session; the version moves only when something shown changed."""
        now = time.time() if now is None else now
        views = {slug: self.view(s, now) for slug, s in self.sessions.items()}
        for slug, outside in self.outside.items():
            views[slug] = self.view_outside(outside, now)
        if views != self._views:
            self._version += 1
            self._views = views
        ordered = tuple(views[slug] for slug in sorted(views))
        return Snapshot(self._version, now, ordered, self.tmux_up)


def read_status_files(directory: Path, pids: Iterable[int]) -> dict[int, st.StatusFile]:
    """Claude's own status files for the given claude pids (missing ones skipped)."""
    found: dict[int, st.StatusFile] = {}
    for pid in pids:
        status = st.read_status_file(directory / f"{pid}.json")
        if status is not None:
            found[pid] = status
    return found


def age(seconds: float) -> str:
    """Compact age for tables: 12s, 3m, 2h, 4d."""
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def attention_key(view: SessionView) -> tuple[bool, int, float, str]:
    """Sort key: what needs the person first; among the waiting, the oldest first; the
    claudes outside tmux (which cbos cannot act on) after all the others."""
    return (view.read_only, st.ATTENTION_ORDER.index(view.state), view.since, view.slug)


def with_usage(view: SessionView, usage: Mapping[str, Any]) -> SessionView:
    return replace(view, usage=usage)


def may_show_blocker(view: SessionView, notice: str = "", waiting: bool = True) -> bool:
    """Whether a session's screen is worth a capture for a dialog or a blocking notice:
    it asks already, or a live claude is idle (before SessionStart a dialog is the only
    sign), or waiting (its next output may be a dialog no hook announces), or a notice
    holds it. Busy sessions are left alone; ``waiting=False`` leaves waiting ones alone
    too (a one-shot command has no output to tell which of them moved)."""
    if view.read_only:
        return False  # no pane to read
    if view.state is st.State.PERMISSION or notice:
        return True
    if view.pid is None or view.reason.startswith(st.EXITING):
        return False
    return view.state is st.State.IDLE or (waiting and view.state is st.State.WAITING)


def stale(view: SessionView, host: HostStatus) -> SessionView:
    """A session of a host that cannot be reached: its last known state, said to be that,
    watch-only (dimmed, after the rest) until the link is back. Showing "working" for a
    session nobody can see any more would be a guess passed off as a fact."""
    if view.read_only or not host.error:
        return view  # (connecting for the first time: nothing is known to be stale)
    clock = time.strftime("%H:%M", time.localtime(host.since))
    return replace(view, read_only=True,
                   reason=f"{host.name} unreachable since {clock}; last known: "
                          f"{view.state.value}" + (f" · {view.reason}" if view.reason else ""))
