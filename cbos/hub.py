"""The protocol's server side, whatever carries it: clients, subscriptions, and requests
carried out through the engine. The WebSocket server (:mod:`cbos.web`) and the stdio
server (:mod:`cbos.stdio`) are transports around one :class:`Hub`.

Threads and hand-offs:

- a transport's reader thread per client parses each message (:func:`protocol.parse_request`)
  and hands it to the loop thread with :meth:`Hub.submit` (a queue plus a wake-up byte on
  a pipe the loop watches). At most ``IN_FLIGHT`` commands of one client wait unanswered:
  a flooding client is simply read more slowly.
- a writer thread per client (:meth:`Peer.write_loop`) drains that client's bounded outbox.
  Only it sends, so a client that stops reading stalls its own writer and nothing else.
- the loop thread (the TUI's, or `cbos serve`'s) runs commands through the engine and
  receives the engine's snapshots and output. It never waits: a message for a client is an
  append to its outbox, and an outbox over its byte limit closes that client (1008)
  instead of growing. It alone touches the subscriptions and the engine.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import queue
import selectors
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cbos import logs
from cbos import protocol as pr
from cbos import state as st
from cbos.engine import TICK, Engine, Outcome
from cbos.model import SessionView, Snapshot

log = logging.getLogger(__name__)

QUEUE_LIMIT = 8 << 20  # characters waiting in one client's outbox; more closes with 1008
IN_FLIGHT = 32  # commands of one client handed to the loop and not yet answered
COMMAND_BUDGET = 256  # commands per wake-up, so the loop gets back to the UI
OVERFLOW_REASON = "too slow: output queue overflowed; reconnect and resume with since"
Reader = Callable[[int, int], tuple[bytes, int, bool]]  # (offset, limit) -> read_since


@dataclass(frozen=True)
class Replay:
    """Read a session's output from ``start`` up to ``end`` and send it (writer thread)."""

    read: Reader
    slug: str
    start: int
    end: int


@dataclass(frozen=True)
class Close:
    code: int
    reason: str


Item = str | Replay | Close
_ids = itertools.count(1)


class Peer:
    """One client: its outbox (any thread puts, its writer takes) and, for the loop thread
    only, its subscriptions. A transport subclasses it with :meth:`send_text`,
    :meth:`send_close` and :meth:`cut`."""

    def __init__(self, limit: int, grace: float,
                 on_overflow: Callable[[Peer], None] | None = None) -> None:
        self.id = next(_ids)
        self._limit = limit
        self._grace = grace
        self._on_overflow = on_overflow
        self._cond = threading.Condition()
        self._items: deque[Item] = deque()
        self._size = 0
        self._cutter: threading.Timer | None = None
        self.closing = False  # a close is queued or done: nothing more is accepted
        self._done = False  # the connection is over: the writer stops
        self.ended = threading.Event()  # its reader is done: the connection is over
        self.writer: threading.Thread | None = None
        self.slots = threading.Semaphore(IN_FLIGHT)
        # Loop thread only:
        self.all = False
        self.names: set[str] = set()
        self.excluded: set[str] = set()

    def __repr__(self) -> str:
        return f"client {self.id}"

    # -- the transport's part ------------------------------------------------------------

    def send_text(self, text: str) -> None:
        raise NotImplementedError

    def send_close(self, code: int, reason: str) -> None:
        raise NotImplementedError

    def cut(self) -> None:
        """End the connection under a writer blocked in a send."""

    # -- the outbox ----------------------------------------------------------------------

    @property
    def backlog(self) -> int:
        return self._size

    def wants(self, slug: str) -> bool:
        return (self.all and slug not in self.excluded) or slug in self.names

    def put(self, item: Item) -> None:
        """Queue a message; never blocks. Over the limit, the client is closed (1008)."""
        size = len(item) if isinstance(item, str) else 0
        with self._cond:
            if self.closing:
                return
            if self._size + size > self._limit:
                self._close_locked(1008, OVERFLOW_REASON)
                overflowed = True
            else:
                self._items.append(item)
                self._size += size
                self._cond.notify()
                overflowed = False
        if overflowed and self._on_overflow is not None:
            self._on_overflow(self)

    def close(self, code: int, reason: str) -> None:
        """Drop what is queued, send a close; cut the connection if it is not taken."""
        with self._cond:
            if not self.closing:
                self._close_locked(code, reason)

    def _close_locked(self, code: int, reason: str) -> None:
        self.closing = True
        self._items.clear()
        self._size = 0
        self._items.append(Close(code, reason))
        self._cond.notify()
        if self._cutter is None:
            self._cutter = threading.Timer(self._grace, self._cut_unless_ended)
            self._cutter.daemon = True
            self._cutter.start()

    def _cut_unless_ended(self) -> None:
        if not self.ended.is_set():
            self.cut()

    def finish(self) -> None:
        with self._cond:
            self.closing = self._done = True
            self._items.clear()
            self._size = 0
            self._cond.notify()
        self.ended.set()
        if self._cutter is not None:
            self._cutter.cancel()

    def write_loop(self) -> None:
        """The writer thread: send what is queued, in order, until closed."""
        while True:
            with self._cond:
                while not self._items and not self._done:
                    self._cond.wait()
                if not self._items:
                    return
                item = self._items.popleft()
                if isinstance(item, str):
                    self._size -= len(item)
            try:
                if isinstance(item, str):
                    self.send_text(item)
                elif isinstance(item, Replay):
                    self._replay(item)
                else:
                    self.send_close(item.code, item.reason)
                    return
            except Exception as exc:
                if not isinstance(exc, OSError | EOFError) and "Closed" not in type(
                        exc).__name__:
                    log.exception("%s: sending failed", self)
                self.cut()
                return

    def _replay(self, item: Replay) -> None:
        """Send the output from ``start`` to ``end``; live chunks (all after ``end``)
        follow."""
        offset, end = item.start, item.end
        gap = offset > end  # an offset of another numbering: start again from what is kept
        if gap:
            offset = 0
        while offset < end and not self.closing:
            data, new, lost = item.read(offset, min(pr.PIECE, end - offset))
            if new <= offset:
                break
            self.send_text(pr.stream(item.slug, data.decode("utf-8", "replace"), time.time(),
                                     new, gap or lost))
            gap = False
            offset = new


class Hub:
    """The message set served on the loop thread; transports bring the clients."""

    def __init__(self, own_log: str = "cbos's log") -> None:
        self.own_log = own_log
        self.overflows = 0  # clients closed for falling behind (read by tests and people)
        self._commands: queue.SimpleQueue[tuple[Peer, str, dict[str, Any]]] = \
            queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._closed = False
        # Loop thread only:
        self._engine: Engine | None = None
        self._clients: set[Peer] = set()  # said hello: they get broadcasts
        self._views: dict[str, SessionView] = {}
        self._snapshot: Snapshot | None = None
        self._pending: dict[tuple[str, str], list[tuple[Peer, dict[str, Any]]]] = {}

    # -- any thread ----------------------------------------------------------------------

    def submit(self, client: Peer, kind: str, request: dict[str, Any]) -> None:
        """Hand a command to the loop thread: ``hello``, ``bye``, ``request``, ``error`` (a
        reply already written, sent through the loop to keep the order of replies) or
        ``close`` (close the client after what is queued)."""
        self._commands.put((client, kind, request))
        if self._closed:
            return
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"c")

    def overflowed(self, client: Peer) -> None:
        self.overflows += 1
        log.info("%s fell behind; closing it with 1008", client)

    def detach(self, close_fds: bool = True) -> None:
        """Stop listening to the engine (after the transport stopped its clients)."""
        self._closed = True
        engine = self._engine
        if engine is not None:
            with contextlib.suppress(ValueError):
                engine.snapshot_listeners.remove(self._on_snapshot)
            with contextlib.suppress(ValueError):
                engine.output_listeners.remove(self._on_output)
        if close_fds:  # else a late thread could write into whatever reuses the number
            for fd in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)

    # -- the loop thread -----------------------------------------------------------------

    def attach(self, engine: Engine) -> list[int]:
        """Listen to the engine; the caller's loop must call :meth:`on_readable` for the fds."""
        self._engine = engine
        self._snapshot = engine.snapshot()
        self._views = {v.slug: v for v in self._snapshot.sessions}
        engine.snapshot_listeners.append(self._on_snapshot)
        engine.output_listeners.append(self._on_output)
        return [self._wake_r]

    def on_readable(self, fd: int) -> None:
        with contextlib.suppress(OSError):
            os.read(self._wake_r, 4096)
        for _ in range(COMMAND_BUDGET):
            try:
                client, kind, request = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                self._run(client, kind, request)
            except Exception as exc:  # a bug must not take the loop (or the TUI) down
                log.exception("protocol command %s failed", request.get("type"))
                if kind == "request":
                    client.put(pr.error(request, f"internal error: {exc!r} (details in "
                                                 f"{self.own_log})"))
                    client.slots.release()
        # More than one budget's worth: come back after the loop's other work.
        if not self._commands.empty():
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(self._wake_w, b"c")

    def _run(self, client: Peer, kind: str, request: dict[str, Any]) -> None:
        if kind == "hello":
            if client.closing:
                return
            self._clients.add(client)
            client.put(self._sessions_message({}))
            client.put(pr.dump({"type": "available_streams", "sessions": sorted(
                v.slug for v in self._views.values() if v.state is not st.State.EXITED)}))
        elif kind == "error":
            client.put(request["text"])
            client.slots.release()
        elif kind == "close":  # after what is queued: the end of a client's input
            client.put(Close(1000, "end of input"))
        elif kind == "bye":
            self._clients.discard(client)
            for key, waiting in list(self._pending.items()):
                self._pending[key] = [w for w in waiting if w[0] is not client]
                if not self._pending[key]:
                    del self._pending[key]
        else:
            HANDLERS[request["type"]](self, client, request)

    def _sessions_message(self, request: Mapping[str, Any]) -> str:
        return pr.reply(request, {"type": "sessions",
                                  "sessions": [v.to_json() for v in self._views.values()]})

    def _known(self) -> set[str]:
        assert self._engine is not None
        return set(self._views) | set(self._engine.stream_names())

    def _unknown(self, request: Mapping[str, Any], names: Sequence[str]) -> str:
        listed = ", ".join(repr(n) for n in names[:5])
        return pr.error(request, f"no session named {listed}; ask with list_sessions for "
                                 "the names")

    def _do_subscribe(self, client: Peer, request: dict[str, Any]) -> None:
        engine = self._engine
        assert engine is not None
        names: list[str] = request["sessions"]
        since: dict[str, int] = request["since"]
        star = "*" in names
        explicit = [n for n in names if n != "*"]
        known = self._known()
        unknown = [n for n in [*explicit, *since] if n not in known]
        if unknown:
            client.put(self._unknown(request, list(dict.fromkeys(unknown))))
        elif not star and set(since) - set(explicit):
            extra = sorted(set(since) - set(explicit))
            client.put(pr.error(request, f'"since" names {", ".join(map(repr, extra))}, '
                                         'which this subscribe does not; list it in '
                                         '"sessions"'))
        else:
            if star:
                client.all = True
                client.excluded.clear()
                listed = sorted(set(self._views) | set(explicit))
            else:
                client.names.update(explicit)
                client.excluded.difference_update(explicit)
                listed = explicit
            ends = {n: engine.stream_offset(n) for n in {*listed, *since}}
            client.put(pr.reply(request, {"type": "subscribed", "sessions": listed,
                                          "offsets": {n: ends[n] for n in listed}}))
            # Taken on the loop thread, so every later live chunk starts at or after `end`:
            # the replay stops there and the stream goes on without overlap or hole.
            for name, start in since.items():
                if start != ends[name]:
                    client.put(Replay(engine.stream_reader(name), name, start, ends[name]))
        client.slots.release()

    def _do_unsubscribe(self, client: Peer, request: dict[str, Any]) -> None:
        names: list[str] = request["sessions"]
        known = self._known() | client.names
        unknown = [n for n in names if n != "*" and n not in known]
        if unknown:
            client.put(self._unknown(request, unknown))
        else:
            if "*" in names:
                client.all = False
                client.names.clear()
                client.excluded.clear()
            for name in names:
                client.names.discard(name)
                if client.all:
                    client.excluded.add(name)
            client.put(pr.reply(request, {"type": "unsubscribed", "sessions": names}))
        client.slots.release()

    def _do_list_sessions(self, client: Peer, request: dict[str, Any]) -> None:
        client.put(self._sessions_message(request))
        client.slots.release()

    def _session(self, client: Peer, request: dict[str, Any]) -> str | None:
        """The request's session if it is on the board; else answer an error and free the
        slot."""
        slug: str = request["slug"]
        if slug in self._views:
            return slug
        client.put(self._unknown(request, [slug]))
        client.slots.release()
        return None

    def _result(self, client: Peer, request: dict[str, Any], kind: str,
                slug: str) -> Callable[[Outcome], None]:
        def done(outcome: Outcome) -> None:
            message: dict[str, Any] = {"type": kind, "session": slug, "success": outcome.ok}
            if not outcome.ok:
                message["error"] = outcome.error
            client.put(pr.reply(request, message))
            client.slots.release()
        return done

    def _do_send(self, client: Peer, request: dict[str, Any]) -> None:
        assert self._engine is not None
        slug = self._session(client, request)
        if slug is not None:
            self._engine.send(slug, request["text"],
                              self._result(client, request, "send_result", slug))

    def _do_interrupt(self, client: Peer, request: dict[str, Any]) -> None:
        assert self._engine is not None
        slug = self._session(client, request)
        if slug is not None:
            self._engine.interrupt(slug, self._result(client, request, "interrupt_result",
                                                      slug))

    def _do_answer(self, client: Peer, request: dict[str, Any]) -> None:
        assert self._engine is not None
        slug = self._session(client, request)
        if slug is not None:
            self._engine.answer(slug, request["choice"],
                                self._result(client, request, "answer_result", slug),
                                question=request.get("question"))

    def _do_get_buffer(self, client: Peer, request: dict[str, Any]) -> None:
        engine = self._engine
        assert engine is not None
        slug: str = request["slug"]
        if slug not in self._views and slug in engine.stream_names():
            # No pane any more, but its output is kept: the last output is the best answer.
            data = engine.output(slug).decode("utf-8", "replace")
            client.put(pr.reply(request, {"type": "buffer", "session": slug, "data": data}))
            client.slots.release()
            return
        if self._session(client, request) is None:
            return

        def done(outcome: Outcome) -> None:
            if outcome.ok:
                client.put(pr.reply(request, {"type": "buffer", "session": slug,
                                              "data": outcome.value}))
            else:
                client.put(pr.error(request, outcome.error))
            client.slots.release()

        engine.buffer(slug, done)

    def _do_get_screen(self, client: Peer, request: dict[str, Any]) -> None:
        engine = self._engine
        assert engine is not None
        slug = self._session(client, request)
        if slug is None:
            return

        def done(outcome: Outcome) -> None:
            if outcome.ok:
                data, cols, rows = outcome.value
                client.put(pr.reply(request, {"type": "screen", "session": slug, "data": data,
                                              "cols": cols, "rows": rows}))
            else:
                client.put(pr.error(request, outcome.error))
            client.slots.release()

        engine.screen(slug, done)

    def _do_create_session(self, client: Peer, request: dict[str, Any]) -> None:
        assert self._engine is not None

        def done(outcome: Outcome) -> None:
            client.slots.release()
            if not outcome.ok:
                client.put(pr.error(request, outcome.error))
                return
            slug: str = outcome.value.slug
            view = self._views.get(slug)
            if view is not None:  # the board has it already: no diff will announce it
                client.put(pr.reply(request, {"type": "session_created",
                                              "session": view.to_json()}))
            else:  # the diff that shows it carries the id to this client
                self._pending.setdefault(("created", slug), []).append((client, request))

        self._engine.create(request["path"], request["slug"], done=done)

    def _do_delete_session(self, client: Peer, request: dict[str, Any]) -> None:
        assert self._engine is not None
        found = self._session(client, request)
        if found is None:
            return
        slug: str = found

        def done(outcome: Outcome) -> None:
            client.slots.release()
            if not outcome.ok:
                client.put(pr.error(request, outcome.error))
            elif slug not in self._views:
                client.put(pr.reply(request, {"type": "session_deleted", "slug": slug}))
            else:
                self._pending.setdefault(("deleted", slug), []).append((client, request))

        self._engine.kill(slug, done)

    def _broadcast(self, message: dict[str, Any], key: tuple[str, str] | None = None) -> None:
        """To every client; a client whose request waits on ``key`` gets it with its id."""
        waiting = self._pending.pop(key, []) if key else []
        text = pr.dump(message)
        for client in self._clients:
            mine = [request for c, request in waiting if c is client]
            for request in mine:
                client.put(pr.reply(request, dict(message)))
            if not mine:
                client.put(text)

    def _on_snapshot(self, current: Snapshot, previous: Snapshot | None) -> None:
        """Session events from the diff against the last snapshot we saw (any source)."""
        old, new = self._views, {v.slug: v for v in current.sessions}
        self._views, self._snapshot = new, current
        for slug in sorted(new.keys() - old.keys()):
            self._broadcast({"type": "session_created", "session": new[slug].to_json()},
                            ("created", slug))
        for slug in sorted(old.keys() - new.keys()):
            self._broadcast({"type": "session_deleted", "slug": slug}, ("deleted", slug))
        for slug in sorted(new):
            view, before = new[slug], old.get(slug)
            if before is not None and view != before:
                self._broadcast({"type": "session_update", "session": view.to_json()})
            if view.state in pr.WAITING and (before is None or before.state != view.state):
                self._broadcast({"type": "session_waiting", "slug": slug,
                                 "context": pr.waiting_context(view,
                                                               self._last_message(slug))})

    def _last_message(self, slug: str) -> str:
        """Claude's last reply in full (the reason clips it); the board is ours to read here,
        on the loop thread."""
        if self._engine is None:
            return ""
        try:
            return self._engine.last_message(slug)
        except Exception:
            log.exception("reading the last message of %s", slug)
            return ""

    def _on_output(self, chunks: list[logs.Chunk]) -> None:
        """Fan chunks out to subscribers: one encoding shared by all, an append each."""
        for chunk in chunks:
            readers = [c for c in self._clients if c.wants(chunk.slug)]
            if not readers:
                continue
            texts = pr.stream_messages(chunk)
            for client in readers:
                for text in texts:
                    client.put(text)


HANDLERS: dict[str, Callable[[Hub, Peer, dict[str, Any]], None]] = {
    "subscribe": Hub._do_subscribe,
    "unsubscribe": Hub._do_unsubscribe,
    "list_sessions": Hub._do_list_sessions,
    "send": Hub._do_send,
    "interrupt": Hub._do_interrupt,
    "answer": Hub._do_answer,
    "get_buffer": Hub._do_get_buffer,
    "get_screen": Hub._do_get_screen,
    "create_session": Hub._do_create_session,
    "delete_session": Hub._do_delete_session,
}


@contextlib.contextmanager
def stop_pipe(signals: Sequence[signal.Signals],
              on_signal: Callable[[int], None] | None = None) -> Iterator[tuple[int, int]]:
    """A non-blocking pipe ``(read, write)`` for a headless loop's stop, with ``signals``
    handled while it is open (by writing to the pipe, or by ``on_signal``); on exit the
    previous handlers come back and the pipe is closed. Handlers can only be set from the
    main thread: elsewhere (tests) the signals are left alone."""
    stop_r, stop_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def handle(signum: int, frame: object) -> None:
        if on_signal is not None:
            on_signal(signum)
            return
        with contextlib.suppress(OSError):
            os.write(stop_w, b"s")

    previous: dict[int, Any] = {}
    try:
        if threading.current_thread() is threading.main_thread():
            for signum in signals:
                previous[signum] = signal.signal(signum, handle)
        yield stop_r, stop_w
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        for fd in (stop_r, stop_w):
            os.close(fd)


def serve_loop(engine: Engine, fds: Sequence[int], on_readable: Callable[[int], None],
               stop_fd: int) -> None:
    """A loop thread without a UI (`cbos serve`, `cbos serve --stdio`): the engine's fds and
    a front end's, until ``stop_fd`` is readable; ``engine.tick()`` about once a second."""
    selector = selectors.DefaultSelector()
    try:
        for fd in engine.fds():
            selector.register(fd, selectors.EVENT_READ, engine.on_readable)
        for fd in fds:
            selector.register(fd, selectors.EVENT_READ, on_readable)
        selector.register(stop_fd, selectors.EVENT_READ, None)
        next_tick = time.monotonic() + TICK
        while True:
            for key, _ in selector.select(max(0.0, next_tick - time.monotonic())):
                if key.data is None:
                    return
                key.data(key.fd)
            now = time.monotonic()
            if now >= next_tick:
                engine.tick()
                next_tick = now + TICK
    finally:
        selector.close()
