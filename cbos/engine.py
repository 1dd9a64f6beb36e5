"""The loop thread's work, whatever drives the loop (urwid's MainLoop or `cbos serve`'s select).

The engine owns the Core (and so the board), the log tail and the events tail. Its owner
calls ``on_readable(fd)`` when one of :meth:`Engine.fds` is readable and ``tick()`` about
once a second. Anything that may take time (tmux commands, the process snapshot, screen
captures, file writes that fsync) runs on a worker thread; its result comes back through a
wake-up pipe and is applied on the loop thread, which alone touches the board. The loop
thread never runs a subprocess, an fsync or a sleep.

Workers are lanes, one thread each, so one kind of work never waits behind another:
``ACT`` carries out what a person asked (send, answer, interrupt, kill, create, attach),
``SCREEN`` reads screens (the preview's captures, dialogs), ``LOOK`` keeps the board
fresh (refreshes, pipe re-arms, the registry, notifications), and ``SCAN`` takes the
slow searches (the project scan), which may take seconds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from cbos import logs, statusline
from cbos import state as st
from cbos.config import Config, HostConfig
from cbos.core import Core, Gathered, may_show_blocker
from cbos.errors import CbosError, RefusedError
from cbos.events import Events
from cbos.model import SessionView, Snapshot, stale
from cbos.panes import PaneSession
from cbos.tmux import Tmux

if TYPE_CHECKING:  # imported where used: the TUI's first paint needs none of them
    from cbos.hosts import HostLink

log = logging.getLogger(__name__)
T = TypeVar("T")

TICK = 1.0  # seconds between the engine's ticks: stall checks, and the ages on screen
REFRESH_EVERY = 2.0  # one tmux listing + one process snapshot; tmux is not polled otherwise
PIPE_CHECK_EVERY = 10.0
SCREEN_GAP = 0.2  # seconds between two reads of one pane's screen (dialogs, notices)
ACT, SCREEN, LOOK, SCAN = "act", "screen", "look", "scan"  # the worker lanes
# Output read (and handed to every listener) per pass of the loop: a pane that prints
# without pause gets its share, keys and draws get theirs between rounds.
READ_ROUND = 256 << 10
SnapshotListener = Callable[[Snapshot, Snapshot | None], None]
OutputListener = Callable[[list[logs.Chunk]], None]


_BUSY = frozenset({st.State.THINKING, st.State.WORKING})
_ESCAPES = re.compile(r"\x1b\[[0-9;?:]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>78]")
# Claude's spinner row ("✻ Thinking… (3s · ↓ 2 tokens)") is redrawn every second whatever
# happens; it is not activity, or a stuck session would never look stalled.
_SPINNER = re.compile(r"^[\s✻✽✶✳✢·*⏺]*\S*…")


_LINE_END = re.compile(r"[\r\n]")
ACTIVITY_PIECE = 512  # characters looked at first; each later piece is twice as long


def is_activity(text: str) -> bool:
    """Whether output is more than Claude redrawing its spinner (or moving the cursor).

    Looked at a piece at a time, cut after a line end (no escape or line spans one), and
    answered at the first line that is activity: a pane printing without pause hands over
    256 KB a round, and cleaning all of it cost the loop thread ~4 ms a round.
    """
    start, piece = 0, ACTIVITY_PIECE
    while start < len(text):
        cut = _LINE_END.search(text, start + piece)
        end = cut.end() if cut else len(text)
        for line in _LINE_END.split(_ESCAPES.sub("\n", text[start:end])):
            if line.strip() and not _SPINNER.match(line):
                return True
        start, piece = end, piece * 2
    return False


@dataclass(frozen=True)
class Outcome:
    """What a worker-thread action ended with, delivered on the loop thread."""

    ok: bool
    value: Any = None
    error: str = ""


class Engine:
    def __init__(self, config: Config, tmux: Tmux | None = None, notify: bool = True,
                 status_line: bool = True, hosts: Sequence[HostConfig] | None = None
                 ) -> None:
        self.config = config
        self._notify = notify
        self.core = Core(config, tmux)
        self.tail = logs.Tail(config.stream_dir, max_buffer=config.max_buffer_size,
                              max_file_bytes=config.log_max_bytes, rearm=self._rearm,
                              read_budget=READ_ROUND, adopt_later=True)
        self.events = Events(config)
        self._lanes = {lane: ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"cbos-{lane}")
                       for lane in (ACT, SCREEN, LOOK, SCAN)}
        self._done: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._refreshing = False
        self._read_queued = False  # a read round waits in _done for the next pass
        self._closed = False
        self._last_refresh = 0.0
        self._last_pipe_check = 0.0
        self._snapshot: Snapshot | None = None
        self._screen_reads: set[str] = set()  # slugs whose screen is being read
        self._retry_reads: set[str] = set()  # busy slugs whose output says claude retries
        self._screen_again: set[str] = set()  # ... and read again when that is done
        self._seen: set[str] = set()  # slugs whose screen was looked at once
        self._screen_read_at: dict[str, float] = {}  # monotonic time of the last read
        self._screen_later: set[str] = set()  # slugs with a read put off (SCREEN_GAP)
        self.captures = 0  # screens read so far (bench/state.py reports the rate)
        self.snapshot_listeners: list[SnapshotListener] = []
        self.output_listeners: list[OutputListener] = []
        self.error_listeners: list[Callable[[str], None]] = []
        self._status_line_on = status_line
        self._status_line: str | None = None  # as last published
        self._status_renew_at = 0.0
        self._status_lock = threading.Lock()
        # Other machines ([[hosts]]; none for `serve --stdio`): their sessions join this
        # board's snapshots as HOST:SLUG, their output the output listeners.
        others = config.hosts if hosts is None else hosts
        self.links: dict[str, HostLink] = {}
        if others:
            from cbos.hosts import HostLink

            self.links = {h.name: HostLink(config, h, self._host_wake, config.max_buffer_size)
                          for h in others}
        self._host_drain_due = False
        self._host_lock = threading.Lock()
        self._compose_key: tuple[int, ...] = ()
        self._compose_version = 0
        # Worker jobs waiting for release() (see start); what release() has left to do.
        self._held: list[tuple[Callable[[], Any], Callable[[Outcome], None] | None,
                               str]] | None = None
        self._first_reads = False  # the first look for dialogs and notices
        self._notifying = False

    # -- wiring ---------------------------------------------------------------------------

    def fds(self) -> list[int]:
        return [self.tail.fileno(), self.events.fileno(), self._wake_r]

    def on_readable(self, fd: int) -> None:
        try:
            if fd == self.tail.fileno():
                if self._read_queued:
                    self.tail.read(0)  # noted; the round already queued reads it
                else:
                    self.read_output()
            elif fd == self.events.fileno():
                self.read_events()
            elif fd == self._wake_r:
                self._run_done()
        except Exception as exc:  # a bug must not take the loop down: log it, say it
            self.report(exc)

    def start(self, hold: bool = False, gathered: Gathered | None = None) -> None:
        """Apply events written while no cbos ran, then the first refresh (synchronous:
        the first paint should already show every session).

        With ``hold``, the workers' first jobs (the status line, the registry), the
        screen reads for dialogs and the notifier wait for :meth:`release`: the TUI calls
        it once its first frame is drawn, a frame they would otherwise share the CPU
        with (each look at the board for screens to read costs a snapshot: ~3 ms at 100
        sessions). ``gathered`` is that first refresh's reading, when :class:`Starting`
        took it.
        """
        self._held = [] if hold else None
        self._first_reads = True
        for link in self.links.values():
            link.start()  # connects on its own threads; the first paint does not wait
        if gathered is None:
            gathered = self.core.gather()  # status files before events: see Core.load
        self.core.board.apply_events(self.events.backlog())
        self.core.apply(gathered, remember=False)
        self.remember()
        self._last_refresh = time.monotonic()
        self.publish()
        if not hold:
            self.release()

    def release(self) -> None:
        """The rest of :meth:`start`: the logs followed, the first screen reads, the
        notifier, and the work held by ``start(hold=True)`` handed to the workers."""
        self.tail.adopt()
        if self._first_reads:
            self._first_reads = False
            self.refresh_dialogs()
            self._look_at_new_sessions()
        held, self._held = self._held or [], None
        if self._notify and not self._notifying:
            # Transitions into permission/waiting become tmux messages, bells and desktop
            # notifications; sessions already waiting at start are not announced (the
            # first snapshot it sees is where it starts from).
            from cbos.notify import Notifier

            self._notifying = True
            Notifier(self.core.tmux, self).start()
        for work, done, lane in held:
            self.run(work, done, lane)

    def _look_at_new_sessions(self) -> None:
        """Read once the screen of every session seen for the first time that may show a
        startup dialog (it may have been drawn before its output was piped to cbos)."""
        board = self.core.board
        new = [v.slug for v in board.snapshot().sessions if v.slug not in self._seen
               and may_show_blocker(v, board.notices.get(v.slug, ""), waiting=False)]
        self._seen = set(board.sessions)
        if new:
            self.refresh_dialogs(new)

    def tick(self) -> None:
        """About once a second: a refresh when due, the tail's slow checks, and the clock
        (ages and stall reasons move with time even when nothing else happens)."""
        now = time.monotonic()
        try:
            if now - self._last_refresh >= REFRESH_EVERY:
                self.refresh()
            chunks = self.tail.rescan()
            if chunks:
                self._deliver(chunks)
            self.publish()
        except Exception as exc:
            self.report(exc)

    def close(self) -> None:
        with self._status_lock:
            if not self._closed and self._status_line is not None:
                # Hand the status line back to `cbos status` now, not when the lease ends.
                with contextlib.suppress(CbosError):
                    self.core.tmux.set_global_options({statusline.LEASE_OPTION: None})
            self._closed = True
        stoppers = [threading.Thread(target=link.close, daemon=True)
                    for link in self.links.values()]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join(5)
        for lane in self._lanes.values():
            lane.shutdown(wait=False, cancel_futures=True)
        for closer in (self.tail.close, self.events.close):
            with contextlib.suppress(Exception):
                closer()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    # -- the worker -----------------------------------------------------------------------

    def run(self, work: Callable[[], T], done: Callable[[Outcome], None] | None = None,
            lane: str = LOOK) -> None:
        """Run ``work`` on the ``lane``'s worker; call ``done`` with its Outcome on this
        thread. Work on one lane runs in order; lanes do not wait for each other. Between
        ``start(hold=True)`` and :meth:`release`, work waits its turn in a list."""
        def finished(future: Future[T]) -> None:
            if future.cancelled() or self._closed:
                return  # the engine is closing: nobody is left to hear the outcome
            exc = future.exception()
            if exc is None:
                outcome = Outcome(True, future.result())
            elif isinstance(exc, CbosError):
                outcome = Outcome(False, error=str(exc))
            else:
                log.error("worker action failed", exc_info=exc)
                outcome = Outcome(False, error=f"internal error: {exc!r} (see cbos.log)")
            if done is not None:
                self._done.put(lambda: done(outcome))
                with contextlib.suppress(OSError):
                    os.write(self._wake_w, b"x")

        if self._held is not None:
            self._held.append((work, done, lane))
            return
        self._lanes[lane].submit(work).add_done_callback(finished)

    def _run_done(self) -> None:
        """Run the callbacks queued before this pass, then give the loop back: one a
        callback queues again (the next read round) waits for the next pass, after the
        loop has read keys and drawn."""
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_r, 4096)
        for _ in range(self._done.qsize()):
            try:
                callback = self._done.get_nowait()
            except queue.Empty:
                break
            callback()
        if not self._done.empty():
            with contextlib.suppress(BlockingIOError):
                os.write(self._wake_w, b"x")

    # -- reading --------------------------------------------------------------------------

    def read_output(self) -> None:
        """One round of output (READ_ROUND bytes at most) to the listeners."""
        chunks = self.tail.read()
        if chunks:
            self._deliver(chunks)
        if self.tail.pending and not self._read_queued:
            # More than one budget's worth is waiting: come back after the UI has had a
            # turn, through the wake-up pipe, instead of reading it all now. One round
            # is queued at a time: a pane that never pauses wakes inotify on every pass,
            # and each wake-up queueing its own round made passes of 10 rounds (~100 ms).
            self._read_queued = True
            self._done.put(self._read_again)
            with contextlib.suppress(BlockingIOError):
                os.write(self._wake_w, b"o")

    def _read_again(self) -> None:
        self._read_queued = False
        self.read_output()

    def _deliver(self, chunks: list[logs.Chunk]) -> None:
        board = self.core.board
        for chunk in chunks:
            if is_activity(chunk.data):
                board.note_output(chunk.slug, chunk.ts)
        for listener in self.output_listeners:
            listener(chunks)
        # A dialog that is answered, or appears, shows on screen first; so do the startup
        # dialogs and "Not logged in", which no hook announces. Only panes whose log
        # moved are read, and only those that are not at work.
        # A busy claude whose requests fail says so only on its spinner row ("… ·
        # retrying in 2s · attempt 3/10"): its screen is read when its output says it
        # retries, and again while the retry shows, until it has gone.
        moved: set[str] = set()
        for chunk in chunks:
            view = self.view(chunk.slug)
            if view is None:
                continue
            if may_show_blocker(view, board.notices.get(chunk.slug, "")):
                moved.add(chunk.slug)
            elif view.state in _BUSY and (b"etrying in" in chunk.raw
                                          or board.retries.get(chunk.slug)):
                self._retry_reads.add(chunk.slug)
                moved.add(chunk.slug)
        if moved:
            self.refresh_dialogs(sorted(moved), throttle=True)

    def read_events(self) -> None:
        fresh = self.events.read()
        if fresh:
            self.core.board.apply_events(fresh)
            self.publish()
            self.refresh_dialogs()
        if self.events.pending:
            self._done.put(self.read_events)
            with contextlib.suppress(BlockingIOError):
                os.write(self._wake_w, b"e")

    def refresh(self) -> None:
        """Ask the worker for a refresh (one at a time); apply it here when it comes."""
        if self._refreshing:
            return
        self._refreshing = True
        self._last_refresh = time.monotonic()
        check_pipes = time.monotonic() - self._last_pipe_check >= PIPE_CHECK_EVERY

        def gather() -> Gathered:
            return self.core.gather()

        def done(outcome: Outcome) -> None:
            self._refreshing = False
            if not outcome.ok:
                self.report_text(outcome.error)
                return
            gathered: Gathered = outcome.value
            self.core.apply(gathered, remember=False)
            self.remember()
            if check_pipes:
                self._last_pipe_check = time.monotonic()
                self._check_pipes(gathered)
            self.refresh_dialogs()
            self._look_at_new_sessions()
            self.publish()

        self.run(gather, done)

    def remember(self) -> None:
        """Record new conversation ids for `cbos resume` (a locked, fsynced write: on the
        LOOK lane, from what the board says now)."""
        config, seen = self.config, self.core.board.conversations()
        if seen:
            def write() -> None:
                from cbos import registry  # on the worker: not an import the first paint pays

                registry.remember(config, seen)

            self.run(write)

    def _check_pipes(self, gathered: Gathered) -> None:
        # Only pipes cbos armed (and marked): a pipe set up by anyone else is not ours to
        # re-arm, whoever started the claude in the pane.
        live = {s.slug: s.pane.pane_id for s in gathered.sessions
                if not s.pane.dead and s.pane.pipe_ours}
        self.tail.check_pipes(gathered.procs, live)

    def refresh_dialogs(self, only: list[str] | None = None, throttle: bool = False) -> None:
        """Capture screens (SCREEN lane) and read their dialogs and notices: every
        session in ``permission``, or the sessions in ``only`` that may show one.

        One read per session is in flight at a time; output that arrives meanwhile asks
        for one more read after it, so a pane that prints fast costs one capture per
        round trip, not one per chunk, and its last screen is always read. With
        ``throttle`` (reads for output), a pane is read at most every SCREEN_GAP; a read
        for a state change (a PermissionRequest) goes at once.
        """
        board = self.core.board
        snapshot = board.snapshot()
        views = {v.slug: v for v in snapshot.sessions}
        for view in snapshot.sessions:
            if view.state is not st.State.PERMISSION and board.dialogs.get(view.slug):
                board.set_dialog(view.slug, None)
        if only is None:
            wanted = {slug for slug, v in views.items()
                      if v.state is st.State.PERMISSION and not v.read_only}  # (no pane)
        else:
            wanted = {slug for slug in only if slug in views and (may_show_blocker(
                views[slug], board.notices.get(slug, "")) or slug in self._retry_reads)}
        busy = wanted & self._screen_reads
        self._screen_again |= busy
        now = time.monotonic()
        early = {slug for slug in wanted - busy if throttle
                 and now - self._screen_read_at.get(slug, 0.0) < SCREEN_GAP}
        for slug in early - self._screen_later:
            # Read at most every SCREEN_GAP per pane: a pane that prints without pause
            # costs a few captures a second, and its last screen is still read.
            self._screen_later.add(slug)
            delay = SCREEN_GAP - (now - self._screen_read_at.get(slug, 0.0))
            timer = threading.Timer(delay, self._soon, (lambda s=slug: self._read_later(s),))
            timer.daemon = True
            timer.start()
        fresh = sorted(wanted - busy - early)
        if not fresh:
            return
        self._screen_reads.update(fresh)
        panes = {slug: views[slug].pane_id for slug in fresh}
        core = self.core

        def read() -> dict[str, tuple[Any, str, str]]:
            return core.read_screens(panes)

        def done(outcome: Outcome) -> None:
            self._screen_reads.difference_update(panes)
            # (a read asked for again keeps its reason to be read)
            self._retry_reads.difference_update(set(panes) - self._screen_again)
            self.captures += len(panes)
            read_at = time.monotonic()
            for slug in panes:
                self._screen_read_at[slug] = read_at
            if outcome.ok:
                for slug, (dialog, notice, retry) in outcome.value.items():
                    if slug in board.sessions:
                        board.set_screen(slug, dialog, notice, retry)
                self.publish()
            again = sorted(self._screen_again & set(panes))
            self._screen_again.difference_update(again)
            if again:
                self.refresh_dialogs(again, throttle=True)  # (at most every SCREEN_GAP)

        self.run(read, done, SCREEN)

    def _soon(self, callback: Callable[[], None]) -> None:
        """From any thread: run ``callback`` on the loop thread at its next wake-up."""
        if self._closed:
            return
        self._done.put(callback)
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"s")

    def _read_later(self, slug: str) -> None:
        self._screen_later.discard(slug)
        self.refresh_dialogs([slug])

    # -- publishing -----------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        if self._snapshot is None:
            self._snapshot = self._compose(self.core.snapshot())
        return self._snapshot

    def _compose(self, local: Snapshot) -> Snapshot:
        """This machine's board plus every host's sessions, one snapshot, one version."""
        if not self.links:
            return local
        links = list(self.links.values())
        key = (local.version, *(link.version for link in links))
        if key != self._compose_key:
            self._compose_key = key
            self._compose_version += 1
        remote = [v if link.status.up else stale(v, link.status)
                  for link in links for v in link.views.values()]
        sessions = tuple(sorted((*local.sessions, *remote), key=lambda v: v.slug))
        return Snapshot(self._compose_version, local.taken, sessions, local.tmux_up,
                        tuple(link.status for link in links))

    def _host_wake(self) -> None:
        """A link read something (its thread): drain the links on the loop thread, once."""
        with self._host_lock:
            if self._host_drain_due:
                return
            self._host_drain_due = True
        self._done.put(self._drain_hosts)
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"h")

    def _drain_hosts(self) -> None:
        with self._host_lock:
            self._host_drain_due = False
        changed = False
        for link in self.links.values():
            moved, chunks = link.drain()
            changed = changed or moved
            if chunks:
                for listener in self.output_listeners:
                    listener(chunks)
        if changed:
            self.publish()

    def view(self, slug: str) -> SessionView | None:
        return self.snapshot().get(slug)

    def publish(self) -> None:
        """Tell listeners when anything shown has changed (the board versions snapshots)."""
        previous = self._snapshot
        current = self._compose(self.core.snapshot())
        self._snapshot = current
        self._publish_status(current)
        if previous is not None and previous.version == current.version:
            return
        for listener in self.snapshot_listeners:
            try:
                listener(current, previous)
            except Exception as exc:
                self.report(exc)

    def _publish_status(self, snapshot: Snapshot) -> None:
        """The status line into tmux's options when it changes, and its lease renewed
        every LEASE / 3 seconds (the plugin's format shows it while the lease holds)."""
        if not self._status_line_on:
            return
        line, now = statusline.render(snapshot.counts()), time.time()
        if line == self._status_line and now < self._status_renew_at:
            return
        self._status_line, self._status_renew_at = line, now + statusline.LEASE / 3
        until, tmux = str(int(now + statusline.LEASE)), self.core.tmux

        def publish() -> None:
            with self._status_lock:  # never after close() handed the line back
                if not self._closed:
                    tmux.set_global_options({statusline.STATUS_OPTION: line,
                                             statusline.LEASE_OPTION: until})

        self.run(publish)

    def report(self, exc: BaseException) -> None:
        log.error("unexpected error in the loop", exc_info=exc)
        self.report_text(f"internal error: {exc!r} (details in {self.config.own_log})")

    def report_text(self, text: str) -> None:
        for listener in self.error_listeners:
            listener(text)

    # -- actions (validated here, carried out on the worker) ---------------------------------

    def _target(self, slug: str, done: Callable[[Outcome], None] | None,
                ) -> tuple[PaneSession, SessionView] | None:
        """The session and its view for an action, or None after telling ``done`` why."""
        try:
            session = self.core.session(slug)
            view = self.view(slug)
            if view is None:
                raise RefusedError(f"{slug} is not on the board yet; try again in a moment")
        except CbosError as exc:
            if done:
                done(Outcome(False, error=str(exc)))
            return None
        return session, view

    # -- another machine's sessions: the request goes to its link ------------------------

    def _remote(self, name: str, kind: str, done: Callable[[Outcome], None] | None,
                value: Callable[[dict[str, Any]], Any] = lambda reply: reply,
                **fields: Any) -> bool:
        """Send ``kind`` for HOST:SLUG ``name`` to its host; False if ``name`` is local.

        The reply (or the host's error) comes back to ``done`` on the loop thread; a host
        that is down answers at once with why.
        """
        host, colon, bare = name.partition(":")
        if not colon:
            return False
        link = self.links.get(host)

        def reply(message: dict[str, Any] | None, error: str) -> None:
            if done is None:
                return
            if message is None:
                done(Outcome(False, error=error))
            elif message.get("success") is False:
                done(Outcome(False, error=f"{host}: {message.get('error')}"))
            else:
                try:
                    done(Outcome(True, value(message)))
                except (KeyError, TypeError, ValueError) as exc:
                    done(Outcome(False, error=f"{host}: a malformed reply ({exc!r})"))

        if link is None:
            reply(None, f"no host named {host!r}; the hosts are {', '.join(self.links)}"
                  if self.links else f"no host named {host!r}: no [[hosts]] configured")
        elif (view := self.view(name)) is None and kind != "create_session":
            reply(None, f"no session named {name!r}; `cbos ls` lists them")
        else:
            if view is not None:
                fields.setdefault("session", bare)
            link.request(kind, reply, **fields)
        return True

    def send(self, slug: str, text: str, done: Callable[[Outcome], None] | None = None) -> None:
        if self._remote(slug, "send", done, text=text):
            return
        if (target := self._target(slug, done)) is not None:
            pane_id, view, core = target[0].pane.pane_id, target[1], self.core
            self.run(lambda: core.send_to(pane_id, slug, view, text), done, ACT)

    def interrupt(self, slug: str, done: Callable[[Outcome], None] | None = None) -> None:
        if self._remote(slug, "interrupt", done):
            return
        if (target := self._target(slug, done)) is not None:
            pane_id, tmux = target[0].pane.pane_id, self.core.tmux
            self.run(lambda: tmux.interrupt(pane_id, slug), done, ACT)

    def answer(self, slug: str, choice: str,
               done: Callable[[Outcome], None] | None = None,
               question: str | None = None) -> None:
        """``question``: the one the person saw; another dialog on screen is not answered."""
        extra: dict[str, Any] = {} if question is None else {"question": question}
        if self._remote(slug, "answer", done, choice=choice, **extra):
            return
        if (target := self._target(slug, done)) is not None:
            pane_id, view, core = target[0].pane.pane_id, target[1], self.core
            self.run(lambda: core.answer_to(pane_id, slug, view, choice, expect=question),
                     done, ACT)

    def buffer(self, slug: str, done: Callable[[Outcome], None],
               colours: bool = True) -> None:
        # Another machine's: its rendered screen (colours and all; what the preview shows).
        if self._remote(slug, "get_screen", done, lambda reply: str(reply["data"])):
            return
        if (target := self._target(slug, done)) is not None:
            pane_id, tmux = target[0].pane.pane_id, self.core.tmux
            self.run(lambda: tmux.capture(pane_id, colours=colours), done, SCREEN)

    def screen(self, slug: str, done: Callable[[Outcome], None]) -> None:
        """The rendered screen with its colours, and its size: ``(text, cols, rows)``."""
        if self._remote(slug, "get_screen", done, lambda reply: (
                str(reply["data"]), int(reply["cols"]), int(reply["rows"]))):
            return
        if (target := self._target(slug, done)) is not None:
            pane, tmux = target[0].pane, self.core.tmux
            self.run(lambda: (tmux.capture(pane.pane_id), pane.width, pane.height), done,
                     SCREEN)

    # -- output, by session name (front ends replay and show it) ---------------------------

    def stream_names(self) -> list[str]:
        """Sessions whose output is followed (a log may outlive its pane)."""
        return [*self.tail.slugs(), *(n for link in self.links.values() for n in link.names())]

    def stream_offset(self, name: str) -> int:
        """The offset after the last output handed to the output listeners."""
        host, colon, bare = name.partition(":")
        if colon and host in self.links:
            return self.links[host].offset(bare)
        return self.tail.offset(name)

    def stream_reader(self, name: str) -> Callable[[int, int], tuple[bytes, int, bool]]:
        """``read(offset, limit)`` of the session's kept output; safe on any thread.
        (Another machine's: what its link keeps in memory, ``max_buffer_size`` bytes.)"""
        host, colon, bare = name.partition(":")
        if colon and host in self.links:
            return self.links[host].reader(bare)
        tail = self.tail
        return lambda offset, limit: tail.read_since(name, offset, limit=limit)

    def output(self, name: str) -> bytes:
        """The newest output kept in memory."""
        host, colon, bare = name.partition(":")
        if colon and host in self.links:
            return self.links[host].output(bare)
        return self.tail.buffer(name)

    def last_message(self, name: str) -> str:
        """Claude's last reply in full (loop thread)."""
        board = self.core.board
        session = board.sessions.get(name)
        track = board.track_for(session) if session is not None else None
        text = getattr(track, "last_message", "")
        return text if isinstance(text, str) else ""

    def kill(self, slug: str, done: Callable[[Outcome], None] | None = None) -> None:
        if self._remote(slug, "delete_session", done):
            return
        if (target := self._target(slug, done)) is None:
            return
        session, tmux = target[0], self.core.tmux

        def finished(outcome: Outcome) -> None:
            self.refresh()
            if done:
                done(outcome)

        self.run(lambda: tmux.kill(session.pane), finished, ACT)

    def create(self, path: str, slug: str | None = None, extra_args: tuple[str, ...] = (),
               done: Callable[[Outcome], None] | None = None, host: str | None = None
               ) -> None:
        """Start a session here, or on ``host`` (also given as ``slug`` "HOST:SLUG")."""
        from pathlib import Path

        if slug is not None and ":" in slug:
            host, _, slug = slug.partition(":")
        if host is not None:
            if extra_args:
                if done:
                    done(Outcome(False, error="claude's own arguments cannot be passed to "
                                              "another machine's session"))
                return
            name = f"{host}:{slug or ''}"
            fields: dict[str, Any] = {"path": path}
            if slug:
                fields["slug"] = slug
            from cbos import protocol as pr

            self._remote(name, "create_session", done,
                         lambda reply: pr.view_from_json(reply["session"], host), **fields)
            return
        core = self.core

        def finished(outcome: Outcome) -> None:
            self._last_refresh = 0.0
            self.refresh()
            if done:
                done(outcome)

        self.run(lambda: core.create(Path(path).expanduser(), slug, extra_args), finished,
                 ACT)

    def _rearm(self, slug: str) -> None:
        """The tail asks for a fresh pipe (log rotated, deleted, or its tee died)."""
        session = self.core.board.sessions.get(slug)
        if session is None or session.pane.dead:
            return
        pane_id, log_path, tmux = session.pane.pane_id, self.config.log_path(slug), self.core.tmux
        self.run(lambda: tmux.rearm(pane_id, log_path))


class Starting:
    """An engine built, and its first refresh gathered, on a thread of its own while the
    caller imports its front end (the TUI's urwid and widgets: ~100 ms of CPU). The tmux
    calls, the /proc reads and the logs' system calls wait on the kernel and tmux, not
    on the interpreter, so they overlap that import instead of following it.
    """

    def __init__(self, config: Config) -> None:
        self._built: list[tuple[Engine, Gathered] | BaseException] = []
        self._thread = threading.Thread(target=self._build, args=(config,),
                                        name="cbos-start", daemon=True)
        self._thread.start()

    def _build(self, config: Config) -> None:
        try:
            engine = Engine(config)
        except BaseException as exc:  # re-raised by result(), on the caller's thread
            self._built.append(exc)
            return
        try:
            self._built.append((engine, engine.core.gather()))
        except BaseException as exc:
            engine.close()
            self._built.append(exc)

    def result(self) -> tuple[Engine, Gathered]:
        """The engine (the caller's from now on) and the reading for its ``start``."""
        self._thread.join()
        built = self._built[0]
        if isinstance(built, BaseException):
            raise built
        return built

    def close(self) -> None:
        """Close the engine unused (the caller gave up before starting it)."""
        self._thread.join()
        built = self._built[0]
        if not isinstance(built, BaseException):
            built[0].close()
