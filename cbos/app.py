"""The TUI's loop: the engine's fds and clock on urwid's MainLoop, the widgets' actions on
the engine, and the terminal handed to ``tmux attach`` and back.

One thread (the loop's) owns the widgets and the board. Anything slow (tmux commands,
screen captures, the project search) runs on the engine's worker and comes back here
through its wake-up pipe. Nothing here sleeps or waits on I/O, but ``tmux attach`` outside
tmux, which has the terminal to itself while the TUI is paused.
"""

from __future__ import annotations

import dataclasses
import gc
import itertools
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import urwid

from cbos import ui
from cbos.config import Config
from cbos.core import Gathered
from cbos.engine import ACT, SCAN, TICK, Engine, Outcome, Starting
from cbos.errors import CbosError
from cbos.logs import Chunk
from cbos.model import Snapshot
from cbos.panes import Pane

log = logging.getLogger(__name__)
T = TypeVar("T")

CAPTURE_INTERVAL = 1 / 30  # at most ~30 captures of the selected screen per second
ALIVE_EVERY = 2.0  # with no session listed, how often to ask whether tmux is there at all
MAX_PROJECTS = 5000
DRAW_AT_LEAST = 0.1  # seconds between draws, however busy the fds are
CRASHES = 20  # unexpected errors escaping the loop within a minute before giving up


@dataclasses.dataclass
class CaptureGate:
    """When to capture the selected session's screen: only when wanted, never two at once,
    at most one per ``interval``. Times are ``time.monotonic()``."""

    interval: float = CAPTURE_INTERVAL
    dirty: bool = False  # the screen moved since the last capture started
    busy: bool = False  # a capture is in flight
    timer: bool = False  # an alarm will come back to it
    last: float = float("-inf")

    def want(self) -> None:
        self.dirty = True

    def next(self, now: float) -> float | None:
        """None: nothing to do now; else seconds to wait before starting (0: start)."""
        if not self.dirty or self.busy or self.timer:
            return None
        return max(0.0, self.last + self.interval - now)

    def start(self, now: float) -> None:
        self.dirty = False
        self.busy = True
        self.last = now

    def finish(self) -> None:
        self.busy = False


@dataclasses.dataclass(frozen=True)
class WsOptions:
    """Where the embedded WebSocket server listens (`cbos --ws`)."""

    host: str
    port: int
    allow_remote: bool = False
    origins: tuple[str, ...] = ()
    page: bool = False  # --web: the browser page on the same port


class Loop(urwid.MainLoop):
    """MainLoop that answers a key with a draw at once (streaming output must not delay
    it) and turns an unexpected error in a widget into one line, not a traceback."""

    def __init__(self, *args: Any, on_error: Callable[[BaseException], None],
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_error = on_error

    last_draw = 0.0

    def draw_screen(self) -> None:
        super().draw_screen()
        self.last_draw = time.monotonic()

    def draw_if_starved(self) -> None:
        """The select loop draws only when no fd is ready; output that never pauses must
        not keep the screen from being drawn."""
        if self.screen.started and time.monotonic() - self.last_draw > DRAW_AT_LEAST:
            self.draw_screen()

    def process_input(self, keys: Any) -> bool:
        try:
            handled = bool(super().process_input(keys))
        except urwid.ExitMainLoop:
            raise
        except Exception as exc:
            self._on_error(exc)
            handled = True
        if self.screen.started:
            self.draw_screen()
        return handled


class App:
    def __init__(self, engine: Engine, *, popup: bool = False,
                 screen: urwid.display.common.BaseScreen | None = None) -> None:
        self.engine = engine
        self.popup = popup
        self.room = ui.ControlRoom(popup=popup)
        self.room.on_action(self.guard(self.on_action))
        if screen is None:
            screen = urwid.display.raw.Screen()
            screen.set_terminal_properties(colors=256)
        self.loop = Loop(self.room, ui.palette(), screen=screen, handle_mouse=True,
                         on_error=self.report)
        self.gate = CaptureGate()
        self.server: Any = None
        self.server_gone = False  # tmux answered "no server" while no session is listed
        self._alive_at = 0.0
        self._checking = False
        self._settle_at: float | None = None
        self._settle_handle: Any = None
        self._crashes: list[float] = []
        self._started = False
        self._stopped = False
        engine.snapshot_listeners.append(self.on_snapshot)
        engine.output_listeners.append(self.on_output)
        engine.error_listeners.append(self.room.error)

    # -- errors ---------------------------------------------------------------------------

    def report(self, exc: BaseException) -> None:
        log.error("unexpected error in the TUI", exc_info=exc)
        self.room.error(f"internal error: {exc!r} (details in {self.engine.config.own_log})")

    def guard(self, fn: Callable[..., T]) -> Callable[..., T | None]:
        """``fn`` that logs and shows an unexpected error instead of raising it."""
        def guarded(*args: Any) -> T | None:
            try:
                return fn(*args)
            except urwid.ExitMainLoop:
                raise
            except Exception as exc:
                self.report(exc)
                return None
        return guarded

    def alarm(self, seconds: float, fn: Callable[[], Any]) -> Any:
        guarded = self.guard(fn)
        return self.loop.set_alarm_in(max(0.0, seconds), lambda _loop, _data: guarded())

    # -- running --------------------------------------------------------------------------

    def start(self, gathered: Gathered | None = None) -> None:
        """Read the board (synchronously: the first paint shows every session), then hook
        the engine's fds and clock into the loop and start the screen. ``gathered``: the
        first refresh's reading, if it was taken already (see :class:`Starting`)."""
        for fd in self.engine.fds():
            self.loop.watch_file(fd, self.guard(lambda fd=fd: self.readable(fd)))
        self.engine.start(hold=True, gathered=gathered)
        self.loop.start()
        self._started = True
        self.loop.draw_screen()  # the first paint, now: everything after can wait a moment
        if not gc.isenabled():  # `cbos` turned the collector off for the start-up
            gc.freeze()  # what start-up made lives as long as the TUI: never scan it again
            gc.enable()
        self.engine.release()
        self._no_intr()
        self._warn_credentials()
        self.alarm(TICK, self.tick)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._started:
            self._started = False
            self.loop.stop()
        if self.server is not None:
            server, self.server = self.server, None
            try:
                server.shutdown()
            except Exception as exc:
                log.error("WebSocket server shutdown failed", exc_info=exc)
        self.engine.close()

    def _warn_credentials(self) -> None:
        """Claude's login expiring within a day (or no credential at all) is said at once:
        every session would stop at the next request."""
        from cbos import auth

        try:
            warning = auth.expiry_warning(auth.credential())
        except OSError:
            return
        if warning:
            self.room.error(warning)

    def run(self, ws: WsOptions | None = None, gathered: Gathered | None = None) -> int:
        """Start, run until ``q``, stop; with ``ws``, the WebSocket server runs too."""
        self.start(gathered)
        try:
            if ws is not None:
                self.start_ws(ws)
            while True:
                try:
                    self.loop.event_loop.run()  # returns on ExitMainLoop
                    return 0
                except Exception as exc:  # a bug: say it, and carry on
                    self.report(exc)
                    now = time.monotonic()
                    self._crashes = [t for t in self._crashes if now - t < 60] + [now]
                    if len(self._crashes) >= CRASHES:
                        raise
        finally:
            self.stop()

    def _no_intr(self) -> None:
        """Ctrl+C is a key here (interrupt the session), never SIGINT to cbos. Set after
        the screen started, so that stopping it restores the terminal's own INTR key."""
        keys = getattr(self.loop.screen, "tty_signal_keys", None)
        if keys is not None:
            try:
                keys(intr="undefined")
            except OSError as exc:
                log.warning("could not turn off the terminal's interrupt key: %s", exc)

    def quit(self) -> None:
        raise urwid.ExitMainLoop

    def quit_soon(self) -> None:
        """Leave the loop from a callback the engine calls (it would catch the raise)."""
        self.alarm(0, self.quit)

    # -- the engine's side ----------------------------------------------------------------

    def tick(self) -> None:
        try:
            self.engine.tick()
            self.room.clock(time.time())
            self._check_tmux()
            if self.room.preview.note and not self.gate.busy:
                self.want_capture()  # an earlier capture failed, or none came yet
        finally:
            self.alarm(TICK, self.tick)

    def readable(self, fd: int) -> None:
        self.engine.on_readable(fd)
        self.loop.draw_if_starved()

    def shown(self, snapshot: Snapshot) -> Snapshot:
        if self.server_gone and not snapshot.sessions and snapshot.tmux_up:
            return dataclasses.replace(snapshot, tmux_up=False)
        return snapshot

    def on_snapshot(self, current: Snapshot, previous: Snapshot | None) -> None:
        if current.sessions:
            self.server_gone = False
        due = self.room.update(self.shown(current), time.time())
        self.settle_at(due)
        selected = self.room.selected
        if selected is not None and previous is not None:
            before = previous.get(selected.slug)
            if before is None or (before.state, before.dialog) != (selected.state,
                                                                    selected.dialog):
                self.want_capture()

    def on_output(self, chunks: list[Chunk]) -> None:
        selected = self.room.selected
        if selected is not None and any(c.slug == selected.slug for c in chunks):
            self.want_capture()

    def _check_tmux(self) -> None:
        """Is the tmux server there at all? Asked only while no session is listed (the
        board cannot tell "no server" from "no session"), one query every few seconds."""
        snapshot = self.engine.snapshot()
        if snapshot.sessions or self._checking:
            return
        now = time.monotonic()
        if now - self._alive_at < ALIVE_EVERY:
            return
        self._alive_at = now
        self._checking = True
        tmux = self.engine.core.tmux

        def done(outcome: Outcome) -> None:
            self._checking = False
            gone = not (outcome.ok and outcome.value)
            if gone != self.server_gone:
                self.server_gone = gone
                self.room.update(self.shown(self.engine.snapshot()), time.time())

        self.engine.run(tmux.alive, self.guard(done))

    def settle_at(self, due: float | None) -> None:
        """An alarm for when a delayed reorder of the list falls due."""
        if due is None or (self._settle_at is not None and self._settle_at <= due):
            return
        if self._settle_handle is not None:
            self.loop.remove_alarm(self._settle_handle)
        self._settle_at = due

        def settle() -> None:
            self._settle_at = self._settle_handle = None
            self.settle_at(self.room.settle(time.time()))

        self._settle_handle = self.alarm(due - time.time() + 0.01, settle)

    # -- the preview ----------------------------------------------------------------------

    def want_capture(self) -> None:
        self.gate.want()
        self.pump()

    def pump(self) -> None:
        selected = self.room.selected
        if selected is None:
            return
        delay = self.gate.next(time.monotonic())
        if delay is None:
            return
        if delay > 0:
            self.gate.timer = True

            def later() -> None:
                self.gate.timer = False
                self.pump()

            self.alarm(delay, later)
            return
        slug = selected.slug
        self.gate.start(time.monotonic())
        self.engine.buffer(slug, self.guard(lambda outcome: self.captured(slug, outcome)))

    def captured(self, slug: str, outcome: Outcome) -> None:
        self.gate.finish()
        if outcome.ok:
            self.room.set_screen(slug, str(outcome.value))
        else:
            self.room.set_screen_note(slug, f"cannot read the screen: {outcome.error}")
        self.pump()

    # -- actions --------------------------------------------------------------------------

    def on_action(self, action: ui.Action) -> None:
        match action:
            case ui.Selected():
                self.want_capture()
            case ui.Send(slug, text):
                self.engine.send(slug, text, self.guard(lambda o: self.sent(slug, text, o)))
            case ui.Interrupt(slug):
                self.engine.interrupt(slug, self.guard(
                    lambda o: self.said(o, f"interrupted {slug} (Ctrl+C in its pane)")))
            case ui.Answer(slug, choice):
                self.engine.answer(slug, choice, self.guard(
                    lambda o: self.answered(slug, choice, o)))
            case ui.Kill(slug):
                where = self.engine.config.log_path(slug)
                self.engine.kill(slug, self.guard(
                    lambda o: self.said(o, f"killed {slug}; its log stays at {where}")))
            case ui.Create(path):
                self.create(path)
            case ui.FindProjects():
                self.find_projects()
            case ui.Open(slug):
                self.open(slug)
            case ui.Refresh():
                self.refresh()
            case ui.Quit():
                self.quit()

    def said(self, outcome: Outcome, text: str) -> None:
        if outcome.ok:
            self.room.notice(text)
        else:
            self.room.error(outcome.error)

    def sent(self, slug: str, text: str, outcome: Outcome) -> None:
        if outcome.ok:
            self.room.notice(f"sent to {slug}")
        else:
            self.room.error(outcome.error)
            self.room.restore_input(text)

    def answered(self, slug: str, choice: str, outcome: Outcome) -> None:
        if outcome.ok:
            question = getattr(outcome.value, "question", "")
            self.room.notice(f"answered {slug}: {choice}" + (f" ({question})" if question
                                                             else ""))
            self.want_capture()
        else:
            self.room.error(outcome.error)

    def refresh(self) -> None:
        """``r``: tmux (one listing), the events file and every log, read again."""
        self.engine.refresh()
        self.engine.read_events()
        self.engine.tick()
        self.server_gone = False
        self._alive_at = 0.0
        self.want_capture()
        self.room.notice("re-reading tmux, the events and the logs")

    def create(self, path: str) -> None:
        self.room.notice(f"starting claude in {path}…")

        def done(outcome: Outcome) -> None:
            if not outcome.ok:
                self.room.error(outcome.error)
                return
            slug = str(getattr(outcome.value, "slug", ""))
            self.room.notice(f"started {slug} in {path}")
            if slug:
                self.room.select_when_seen(slug)

        self.engine.create(path, done=self.guard(done))

    def find_projects(self) -> None:
        from cbos import projects

        roots = [Path.home()]

        def work() -> list[ui.PickerItem]:
            found = itertools.islice(projects.find(roots), MAX_PROJECTS)
            return [ui.PickerItem(p.slug, str(p.path)) for p in found]

        def done(outcome: Outcome) -> None:
            if outcome.ok:
                self.room.set_projects(outcome.value)
            else:
                self.room.set_projects([], error=outcome.error)

        self.engine.run(work, self.guard(done), SCAN)

    def open(self, slug: str) -> None:
        """``a`` (and Enter in a popup): switch the tmux client to the session, or, outside
        tmux, hand the terminal to ``tmux attach`` until it detaches. Another machine's
        session: ``ssh -t HOST COMMAND attach SLUG``, in a new tmux window or here."""
        if ":" in slug:
            self.open_remote(slug)
            return
        try:
            pane = self.engine.core.session(slug).pane
        except CbosError as exc:
            self.room.error(str(exc))
            return
        tmux = self.engine.core.tmux

        def work() -> bool:
            if tmux.inside():
                tmux.switch_client(pane)
                return True
            tmux.select(pane)  # here on the worker; only the attach needs the loop
            return False

        def done(outcome: Outcome) -> None:
            if not outcome.ok:
                self.room.error(outcome.error)
            elif outcome.value:
                self.room.notice(f"switched to {slug}")
                if self.popup:
                    self.quit_soon()
            else:
                self.attach(slug, pane)

        self.engine.run(work, self.guard(done), ACT)

    def open_remote(self, slug: str) -> None:
        from cbos import hosts

        try:
            where = hosts.address(self.engine.config, slug)
            assert where.host is not None
            argv = hosts.ssh_argv(self.engine.config, where.host, ["attach", where.slug],
                                  tty=True)
        except CbosError as exc:
            self.room.error(str(exc))
            return
        host, config, tmux = where.host, self.engine.config, self.engine.core.tmux

        def work() -> bool:
            if tmux.inside():
                tmux.open_window(slug.replace(":", "-"), argv)
                return True
            return False

        def done(outcome: Outcome) -> None:
            if not outcome.ok:
                self.room.error(outcome.error)
                return
            if outcome.value:
                self.room.notice(f"opened {slug} in a new tmux window")
                if self.popup:
                    self.quit_soon()
                return
            try:
                with self.loop.paused():  # the terminal is ssh's until it ends
                    status = hosts.attach_remote(config, host, where.slug)
            except (OSError, CbosError) as exc:
                self.room.error(f"could not run ssh: {exc}")
                return
            finally:
                self._no_intr()
            if status == 0:
                self.room.notice(f"back from {slug}")
            else:
                self.room.error(f"ssh to {slug} ended with status {status}")
            self.want_capture()

        self.engine.run(work, self.guard(done), ACT)

    def attach(self, slug: str, pane: Pane) -> None:
        try:
            with self.loop.paused():
                status = self.engine.core.tmux.attach(pane)
        except (OSError, CbosError) as exc:
            self.room.error(f"could not run tmux attach: {exc}")
            return
        finally:
            self._no_intr()
        if self.popup:
            self.quit_soon()
        elif status == 0:
            self.room.notice(f"back from {slug}")
        else:
            self.room.error(f"tmux attach to {slug} ended with status {status}")
        self.want_capture()

    # -- the WebSocket server -------------------------------------------------------------

    def start_ws(self, ws: WsOptions) -> None:
        """Start the embedded WebSocket server; a failure is a status line, not an exit."""
        import importlib

        try:  # by name: the server is optional here, and another module's business
            web = importlib.import_module("cbos.web")
        except ImportError as exc:
            self.room.error(f"WebSocket off: this cbos has no server ({exc})")
            return
        server = web.WebServer(self.engine.config, ws.host, ws.port, ws.allow_remote,
                               list(ws.origins), page=ws.page)
        try:
            server.start()
        except CbosError as exc:
            self.room.error(f"WebSocket off: {exc}")
            return
        self.server = server
        for fd in server.attach(self.engine):
            self.loop.watch_file(fd, self.guard(lambda fd=fd: server.on_readable(fd)))
        self.room.set_ws(str(server.address))
        said = f"the page: {server.page_url()}" if ws.page else \
            f"WebSocket server on {server.address}"
        if ws.allow_remote:
            self.room.error(f"{said} · warning: {web.REMOTE_WARNING}")
        else:
            self.room.notice(said)


def run(config: Config, popup: bool = False, ws: WsOptions | None = None,
        starting: Starting | None = None) -> int:
    """The control room, until ``q``; in a tmux popup with ``popup``, and with the
    WebSocket server beside it when ``ws`` says where. ``starting``: the engine, begun
    while this module imported."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        if starting is not None:
            starting.close()
        raise CbosError("the control room needs a terminal; for scripts use `cbos ls`, "
                        "`cbos send` and friends")
    logs_off_the_terminal()
    engine, gathered = starting.result() if starting is not None else (Engine(config), None)
    try:
        app = App(engine, popup=popup)
    except BaseException:
        engine.close()
        raise
    return app.run(ws, gathered)


def logs_off_the_terminal() -> None:
    """What other libraries log (and Python's warnings) goes to cbos's log file, for the
    rest of the process: a line on stderr would tear the TUI's screen, or follow cbos out
    when a worker thread finishes after the loop has stopped."""
    root = logging.getLogger()
    if not root.handlers:
        for handler in logging.getLogger("cbos").handlers or [logging.NullHandler()]:
            root.addHandler(handler)
    logging.captureWarnings(True)
