"""The optional WebSocket server: protocol v1 (shared/protocol.md) on websockets' sync server.

Threads and hand-offs:

- ``cbos-ws``: websockets' ``serve_forever``; it starts one handler thread per connection
  (plus websockets' own reader and keepalive threads).
- a connection's handler thread checks the opening handshake (:meth:`WebServer._admit`),
  then reads frames, validates them, and hands each command to the loop thread through a
  queue plus a wake-up byte on a pipe the loop watches. At most ``IN_FLIGHT`` commands of
  one client wait unanswered: a flooding client is simply read more slowly.
- a writer thread per client drains that client's bounded outbox into its socket. Only
  it sends, so a client that stops reading stalls its own writer and nothing else.
- the loop thread (the TUI's, or `cbos serve`'s :func:`serve_loop`) runs commands through
  the engine and receives the engine's snapshots and output. It never waits: a message for
  a client is an append to its outbox, and an outbox over its byte limit closes that client
  (1008) instead of growing. It alone touches the subscriptions and the engine.

Close codes: 1008 (outbox overflow: too slow; reconnect and resume with ``since``), 1009
(a frame over ``max_size``, by websockets), 1001 (shutdown). A client that does not take its
close frame within ``stall_grace`` seconds has its socket cut.
"""

from __future__ import annotations

import contextlib
import email.utils
import errno
import hmac
import http
import ipaddress
import itertools
import json
import logging
import math
import os
import queue
import re
import secrets
import selectors
import socket
import struct
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve
from websockets.typing import Origin

from cbos import logs
from cbos import state as st
from cbos.config import Config
from cbos.errors import CbosError, UsageError

if TYPE_CHECKING:
    from cbos.engine import Engine, Outcome
    from cbos.model import SessionView, Snapshot

log = logging.getLogger(__name__)
# websockets logs request lines (with ``?token=``) at DEBUG: keep its logger above that,
# whatever CBOS_LOG_LEVEL says.
_ws_log = logging.getLogger("cbos.web.protocol")
_ws_log.setLevel(logging.INFO)

PATHS = frozenset({"/ws/stream", "/"})
MAX_MESSAGE = 1 << 20  # bytes of one incoming message; more closes with 1009
QUEUE_LIMIT = 8 << 20  # characters waiting in one client's outbox; more closes with 1008
PIECE = 64 << 10  # raw bytes per stream message: escaped, it stays under clients' 1 MiB
IN_FLIGHT = 32  # commands of one client handed to the loop and not yet answered
STALL_GRACE = 5.0  # seconds a closing client gets to take its close frame
MAX_CLIENTS = 128
COMMAND_BUDGET = 256  # commands per wake-up, so the loop gets back to the UI
SHUTDOWN_GRACE = 1.5  # seconds clients get to close politely before sockets are cut
TICK = 1.0
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{43,}$")
MAX_NAMES = 1000
WAITING = (st.State.WAITING, st.State.PERMISSION)
CONTEXT_PREFIXES = ("done: ", "from Claude's status file: ")
OVERFLOW_REASON = "too slow: output queue overflowed; reconnect and resume with since"
REMOTE_WARNING = (
    "--allow-remote: whoever reaches this port with the token can type into Claude, and "
    "plain ws:// and http:// carry the token and every screen unencrypted. Safer: keep "
    "cbos on 127.0.0.1 and use an SSH tunnel (ssh -L 32205:127.0.0.1:32205 THIS-HOST) or a "
    "private network (WireGuard, Tailscale)")


# -- requests ------------------------------------------------------------------------------


class BadRequest(Exception):
    """A message that cannot be served; ``request`` carries the id to echo, if known."""

    def __init__(self, message: str, request: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.request = request or {}


def _string(value: Any, what: str, request: Mapping[str, Any], limit: int = 256) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"{what} must be a string", request)
    if len(value) > limit:
        raise BadRequest(f"{what} is longer than {limit} characters", request)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"{what} is not valid Unicode (a lone surrogate)", request) from None
    return value


def _name(message: Mapping[str, Any], request: Mapping[str, Any], required: bool = True
          ) -> str | None:
    """The session a message names: ``session`` and ``slug`` are interchangeable."""
    session, slug = message.get("session"), message.get("slug")
    if session is not None and slug is not None and session != slug:
        raise BadRequest(f'"session" ({session!r}) and "slug" ({slug!r}) disagree; '
                         "give one of them", request)
    value = session if session is not None else slug
    if value is None:
        if required:
            raise BadRequest(f'{request["type"]} needs "session" (or "slug"): the session '
                             "name", request)
        return None
    name = _string(value, '"session"', request)
    if not name:
        raise BadRequest('"session" is empty; give a session name', request)
    return name


def _names(message: Mapping[str, Any], request: Mapping[str, Any]) -> list[str]:
    value = message.get("sessions")
    if not isinstance(value, list) or not value:
        raise BadRequest(f'{request["type"]} needs "sessions": a list of session names, '
                         'or ["*"] for all', request)
    if len(value) > MAX_NAMES:
        raise BadRequest(f'"sessions" has more than {MAX_NAMES} names', request)
    names = [_string(v, "each of \"sessions\"", request) for v in value]
    return list(dict.fromkeys(n for n in names if n))


def _since(message: Mapping[str, Any], request: Mapping[str, Any]) -> dict[str, int]:
    value = message.get("since")
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_NAMES:
        raise BadRequest('"since" must be an object mapping session names to byte offsets',
                         request)
    since: dict[str, int] = {}
    for key, offset in value.items():
        name = _string(key, 'a name in "since"', request)
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise BadRequest(f'"since" for {name!r} must be a byte offset (a whole number, '
                             "0 or more)", request)
        since[name] = offset
    return since


def _check_text(text: str, request: Mapping[str, Any]) -> str:
    from cbos.sessions import check_text

    try:
        return check_text(text)
    except UsageError as exc:
        raise BadRequest(str(exc), request) from None


def parse_request(text: str) -> dict[str, Any]:
    """One client frame as a normalised command, or :class:`BadRequest` saying why not.

    Runs on a connection's own thread: the loop thread only sees well-formed commands.
    """
    try:
        message = json.loads(text)
    except RecursionError:
        raise BadRequest("the message is nested too deeply; send a flat JSON object") from None
    except ValueError as exc:
        raise BadRequest(f"the message is not valid JSON ({exc}); send one JSON object per "
                         "text frame") from None
    if not isinstance(message, dict):
        raise BadRequest('the message must be a JSON object with a "type"')
    request: dict[str, Any] = {"type": "?"}
    if "id" in message:
        ident = message["id"]
        if isinstance(ident, float) and not math.isfinite(ident):
            raise BadRequest('"id" must be a finite number')
        if not (ident is None or isinstance(ident, str | int | float | bool)):
            raise BadRequest('"id" must be a string, a number, a boolean or null')
        if isinstance(ident, str):
            _string(ident, '"id"', {})
        request["id"] = ident
    kind = message.get("type")
    if not isinstance(kind, str):
        raise BadRequest('the message has no "type" string; e.g. {"type": "list_sessions"}',
                         request)
    if kind not in KINDS:
        shown = kind if len(kind) <= 40 else kind[:40] + "…"
        raise BadRequest(f"unknown message type {shown!r}; known types: "
                         f"{', '.join(sorted(KINDS))}", request)
    request["type"] = "send" if kind == "send_input" else kind
    if kind in ("subscribe", "unsubscribe"):
        request["sessions"] = _names(message, request)
        if kind == "subscribe":
            request["since"] = _since(message, request)
    elif kind in ("send", "send_input"):
        request["slug"] = _name(message, request)
        text_value = message.get("text")
        if not isinstance(text_value, str):
            raise BadRequest(f'{kind} needs "text": the string to type', request)
        _string(text_value, '"text"', request, limit=MAX_MESSAGE)
        request["text"] = _check_text(text_value, request)
    elif kind in ("interrupt", "get_buffer", "delete_session", "get_screen"):
        request["slug"] = _name(message, request)
    elif kind == "answer":  # (v2)
        request["slug"] = _name(message, request)
        choice = message.get("choice")
        if not isinstance(choice, str) or not CHOICE_RE.match(choice.strip()):
            raise BadRequest('answer needs "choice": an option number, or yes, no or esc',
                             request)
        request["choice"] = choice.strip().lower()
    elif kind == "create_session":
        path = message.get("path")
        if not isinstance(path, str) or not path:
            raise BadRequest('create_session needs "path": the project directory, an '
                             "absolute path", request)
        path = _string(path, '"path"', request, limit=4096)
        if not os.path.isabs(os.path.expanduser(path)):
            raise BadRequest(f"path {path!r} is relative; give an absolute path", request)
        request["path"] = path
        request["slug"] = _name(message, request, required=False)
    return request


KINDS = frozenset({"subscribe", "unsubscribe", "send", "send_input", "interrupt", "get_buffer",
                   "list_sessions", "create_session", "delete_session", "answer",
                   "get_screen"})
CHOICE_RE = re.compile(r"^(?:[0-9]{1,3}|yes|y|no|n|esc|escape|cancel)$", re.IGNORECASE)


def _dump(message: Mapping[str, Any]) -> str:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


def _reply(request: Mapping[str, Any], message: dict[str, Any]) -> str:
    if "id" in request:
        message["id"] = request["id"]
    return _dump(message)


def _error(request: Mapping[str, Any], text: str) -> str:
    return _reply(request, {"type": "error", "message": text})


def _stream(slug: str, data: str, ts: float, offset: int, gap: bool) -> str:
    message: dict[str, Any] = {"type": "stream", "session": slug, "data": data,
                               "ts": round(ts, 3), "offset": offset}
    if gap:
        message["gap"] = True  # (v1+) bytes before this chunk were lost
    return _dump(message)


def _boundary(raw: bytes, at: int) -> int:
    """``at`` moved back to the start of a UTF-8 character (at most 3 bytes)."""
    for cut in range(at, max(0, at - 3) - 1, -1):
        if cut == 0 or cut >= len(raw) or not 0x80 <= raw[cut] <= 0xBF:
            return cut if cut else at
    return at


def stream_messages(chunk: logs.Chunk, piece: int = PIECE) -> list[str]:
    """A chunk as ``stream`` messages of at most ``piece`` raw bytes, cut between characters."""
    raw = chunk.raw
    if len(raw) <= piece:
        return [_stream(chunk.slug, chunk.data, chunk.ts, chunk.offset, chunk.gap)]
    texts: list[str] = []
    start, offset = 0, chunk.offset - len(raw)
    while start < len(raw):
        end = _boundary(raw, min(len(raw), start + piece))
        part = raw[start:end]
        offset += len(part)
        texts.append(_stream(chunk.slug, part.decode("utf-8", "replace"), chunk.ts, offset,
                             chunk.gap and start == 0))
        start = end
    return texts


def waiting_context(view: SessionView, last_message: str = "") -> str:
    """What a session waits on: Claude's last words, or the permission it asks for."""
    if view.state is st.State.WAITING and last_message.strip():
        return last_message.strip()[:16_384]
    first = view.reason.split(" · ")[0]
    for prefix in CONTEXT_PREFIXES:
        if first.startswith(prefix):
            first = first[len(prefix):]
            if len(first) >= 2 and first[0] == first[-1] == '"':
                first = first[1:-1]
    return first or view.reason


# -- handshake checks ----------------------------------------------------------------------

_HOST = re.compile(r"^(\[[^\]]+\]|[^:\[\]]+)(?::\d{1,5})?$")


def loopback_host(value: str) -> bool:
    """A Host header naming this machine's loopback: localhost, 127.x.y.z or [::1]."""
    match = _HOST.match(value.strip())
    if not match:
        return False
    name = match.group(1).strip("[]").lower().rstrip(".")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _loopback_address(host: str) -> bool:
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _proc_keys(address: str, port: int) -> list[tuple[str, str]]:
    """Where an endpoint may show in /proc/net/tcp{,6}: [(table, "ADDR:PORT"), ...].

    The kernel prints each 32-bit word of the address in host byte order. A v4-mapped
    address of a dual-stack socket may belong to a plain IPv4 socket on the other end.
    """
    ip = ipaddress.ip_address(address.split("%")[0])
    keys: list[tuple[str, str]] = []
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        keys += _proc_keys(str(ip.ipv4_mapped), port)
    packed = ip.packed
    words = "".join(f"{struct.unpack('=I', packed[i:i + 4])[0]:08X}"
                    for i in range(0, len(packed), 4))
    keys.append(("/proc/net/tcp6" if ip.version == 6 else "/proc/net/tcp",
                 f"{words}:{port:04X}"))
    return keys


def peer_uid(sock: socket.socket) -> int | None:
    """The uid owning the other end of a local TCP connection, or None if unknown.

    The client's socket is the row of /proc/net/tcp{,6} whose local end is our peer and
    whose remote end is us; its uid column is the owner. One read of a table every user
    may read, no process walk: psutil.net_connections maps sockets to pids through every
    /proc/PID/fd (slower, and blind to other users' processes without root).
    """
    try:
        ours, theirs = sock.getsockname(), sock.getpeername()
        candidates = [(table, peer, us) for (table, peer), (_, us) in
                      zip(_proc_keys(theirs[0], theirs[1]), _proc_keys(ours[0], ours[1]),
                          strict=False)]
    except (OSError, ValueError):
        return None
    for table, peer, us in candidates:
        try:
            with open(table, encoding="ascii") as handle:
                next(handle, None)
                for line in handle:
                    fields = line.split()
                    if len(fields) > 7 and fields[1] == peer and fields[2] == us:
                        return int(fields[7])
        except OSError:
            continue
    return None


def load_token(path: Path, _again: bool = True) -> str:
    """The shared secret: read from ``path`` (0600), created on first use and reused.

    A file others could read (or not ours, or not a token) is replaced: a secret that may
    have leaked is no secret. A symlink is replaced, never followed.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        fd = -1
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise CbosError(f"cannot read the token file {path} ({exc.strerror}); fix its "
                            "permissions or remove it") from None
        fd = -1
    if fd >= 0:
        with os.fdopen(fd, "r", encoding="ascii", errors="replace") as handle:
            info = os.fstat(handle.fileno())
            token = handle.read(4096).strip()
        if info.st_uid == os.getuid() and not info.st_mode & 0o077 and TOKEN_RE.match(token):
            return token
        log.warning("replacing the token file %s: it was readable by others, not ours, or "
                    "not a token", path)
    token = secrets.token_urlsafe(32)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, token.encode("ascii") + b"\n")
    finally:
        os.close(fd)
    try:
        if os.path.lexists(path):
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # atomic, and fails if another cbos made one meanwhile
            except FileExistsError:
                if _again:
                    return load_token(path, _again=False)
                raise CbosError(f"cannot create the token file {path}; remove it and try "
                                "again") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return token


def _upgrade(request: Request) -> bool:
    """Whether a request asks for a WebSocket (else it is a plain GET, for the page)."""
    return any("websocket" in value.lower() for value in request.headers.get_all("Upgrade"))


def _token_of(request: Request) -> str | bool | None:
    """The token a request presents; None if none; False if it is malformed or ambiguous."""
    found: list[str] = []
    for header in request.headers.get_all("Authorization"):
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        found.append(value.strip())
    _, _, query = request.path.partition("?")
    found += parse_qs(query, keep_blank_values=True).get("token", [])
    if not found:
        return None
    return found[0] if len(set(found)) == 1 else False


# -- clients --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Replay:
    """Read a session's log from ``start`` up to ``end`` and send it (writer thread)."""

    tail: logs.Tail
    slug: str
    start: int
    end: int


@dataclass(frozen=True)
class _Close:
    code: int
    reason: str


_Item = str | _Replay | _Close
_ids = itertools.count(1)


class _Client:
    """One connection: its outbox (any thread puts, its writer takes) and, for the loop
    thread only, its subscriptions."""

    def __init__(self, conn: ServerConnection, limit: int, grace: float,
                 on_overflow: Callable[[_Client], None]) -> None:
        self.conn = conn
        self.id = next(_ids)
        self._limit = limit
        self._grace = grace
        self._on_overflow = on_overflow
        self._cond = threading.Condition()
        self._items: deque[_Item] = deque()
        self._size = 0
        self._cutter: threading.Timer | None = None
        self.closing = False  # a close is queued or done: nothing more is accepted
        self._done = False  # the connection is over: the writer stops
        self.ended = threading.Event()  # its handler is done: the connection is over
        self.writer: threading.Thread | None = None
        self.slots = threading.Semaphore(IN_FLIGHT)
        # Loop thread only:
        self.all = False
        self.names: set[str] = set()
        self.excluded: set[str] = set()

    def __repr__(self) -> str:
        return f"client {self.id}"

    @property
    def backlog(self) -> int:
        return self._size

    def wants(self, slug: str) -> bool:
        return (self.all and slug not in self.excluded) or slug in self.names

    def put(self, item: _Item) -> None:
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
        if overflowed:
            self._on_overflow(self)

    def close(self, code: int, reason: str) -> None:
        """Drop what is queued, send a close frame; cut the socket if it is not taken."""
        with self._cond:
            if not self.closing:
                self._close_locked(code, reason)

    def _close_locked(self, code: int, reason: str) -> None:
        self.closing = True
        self._items.clear()
        self._size = 0
        self._items.append(_Close(code, reason))
        self._cond.notify()
        self._arm_cutter(self._grace)

    def _arm_cutter(self, delay: float) -> None:
        if self._cutter is not None:
            return
        self._cutter = threading.Timer(delay, self.cut)
        self._cutter.daemon = True
        self._cutter.start()

    def cut(self) -> None:
        """Shut the socket down under a writer blocked in send(): it fails and returns.
        (websockets' own close() would wait for the lock that blocked send holds.)"""
        if self.ended.is_set():
            return
        with contextlib.suppress(OSError):
            self.conn.socket.shutdown(socket.SHUT_RDWR)

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
                    self.conn.send(item)
                elif isinstance(item, _Replay):
                    self._replay(item)
                else:
                    self.conn.close(item.code, item.reason)
                    return
            except (ConnectionClosed, OSError):
                self.cut()
                return
            except Exception:
                log.exception("%s: sending failed", self)
                self.cut()
                return

    def _replay(self, item: _Replay) -> None:
        """Send the log from ``start`` to ``end``; live chunks (all after ``end``) follow."""
        offset, end = item.start, item.end
        gap = offset > end  # an offset of another numbering: start again from what is kept
        if gap:
            offset = 0
        while offset < end and not self.closing:
            data, new, lost = item.tail.read_since(item.slug, offset, limit=min(PIECE,
                                                                                end - offset))
            if new <= offset:
                break
            self.conn.send(_stream(item.slug, data.decode("utf-8", "replace"), time.time(),
                                   new, gap or lost))
            gap = False
            offset = new


# -- the server -------------------------------------------------------------------------------


class WebServer:
    """The protocol server; see the module docstring for who runs what."""

    def __init__(self, config: Config, host: str, port: int, allow_remote: bool = False,
                 allowed_origins: Sequence[str] = (), *, queue_limit: int = QUEUE_LIMIT,
                 max_size: int = MAX_MESSAGE, stall_grace: float = STALL_GRACE,
                 max_clients: int = MAX_CLIENTS, page: bool = False) -> None:
        self.config = config
        self.page = page  # also answer GETs for the browser page (cbos serve --web)
        self.host = host
        self.port = port
        self.allow_remote = allow_remote
        self.allowed_origins = frozenset(allowed_origins)
        self.queue_limit = queue_limit
        self.max_size = max_size
        self.stall_grace = stall_grace
        self.max_clients = max_clients
        self.overflows = 0  # clients closed for falling behind (read by tests and people)
        self.stopped_cleanly: bool | None = None  # after shutdown: every thread ended in time
        self._token = ""
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._live: set[_Client] = set()  # every connected client (handler threads)
        self._conns: weakref.WeakSet[ServerConnection] = weakref.WeakSet()  # all sockets
        self._commands: queue.SimpleQueue[tuple[_Client, str, dict[str, Any]]] = \
            queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._closed = False
        # Loop thread only:
        self._engine: Engine | None = None
        self._clients: set[_Client] = set()  # said hello: they get broadcasts
        self._views: dict[str, SessionView] = {}
        self._snapshot: Snapshot | None = None
        self._pending: dict[tuple[str, str], list[tuple[_Client, dict[str, Any]]]] = {}

    # -- lifecycle (any thread) ----------------------------------------------------------

    def start(self) -> None:
        if self._server is not None:
            return
        if not self.allow_remote and not _loopback_address(self.host):
            raise UsageError(f"{self.host} is not a loopback address: anyone who can reach "
                             "it could type into Claude. Use 127.0.0.1, or pass "
                             "--allow-remote (every client then needs the token in "
                             f"{self.config.token_file})")
        try:
            self._token = load_token(self.config.token_file)
        except OSError as exc:
            raise CbosError(f"cannot create the token file {self.config.token_file} "
                            f"({exc.strerror or exc}); check that directory") from None
        server_self = self

        class Connection(ServerConnection):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                with server_self._lock:
                    server_self._conns.add(self)

        host = self.host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self._server = serve(
                self._handle, host, self.port, family=family,
                process_request=self._admit,
                # With the page on, the page's own origin depends on the Host it was
                # loaded from: _refusal checks every Origin itself.
                origins=None if self.page else [
                    None, *(Origin(o) for o in sorted(self.allowed_origins))],
                max_size=self.max_size, compression=None, open_timeout=5,
                close_timeout=2, logger=_ws_log, create_connection=Connection,
                server_header=None)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise CbosError(f"port {self.port} on {self.host} is in use (another `cbos "
                                "serve` or `cbos --ws`?); pick another with --port or "
                                "CBOS_API_PORT") from None
            raise CbosError(f"cannot listen on {self.host}:{self.port}: "
                            f"{exc.strerror or exc}") from None
        self._thread = threading.Thread(target=self._server.serve_forever, name="cbos-ws",
                                        daemon=True)
        self._thread.start()
        log.info("WebSocket server on %s", self.address)

    @property
    def address(self) -> str:
        if self._server is None:
            return f"{self.host}:{self.port}"
        host, port = self._server.socket.getsockname()[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def page_url(self) -> str:
        """The page's address with the token in its fragment: a fragment is never sent to
        a server, so the token stays out of request lines, logs and Referers."""
        host, _, port = self.address.rpartition(":")
        bare = host.strip("[]")
        if bare in ("0.0.0.0", "::"):  # every interface: name this machine
            host = socket.gethostname()
        return f"http://{host}:{port}/#token={self._token}"

    def shutdown(self) -> None:
        """Close every client (1001), cut the ones that do not go, stop; well under 5 s."""
        if self._closed:
            return
        self._closed = True
        started = time.monotonic()
        with self._lock:
            clients = list(self._live)
        for client in clients:
            client.close(1001, "cbos is shutting down")
        for client in clients:
            client.ended.wait(max(0.0, started + SHUTDOWN_GRACE - time.monotonic()))
        with self._lock:
            conns = list(self._conns)
        for conn in conns:  # stalled clients, and sockets still in the handshake
            with contextlib.suppress(OSError):
                conn.socket.shutdown(socket.SHUT_RDWR)
        stopped = True
        if self._server is not None:
            # websockets' shutdown waits for every handler thread; bounded here all the same.
            stopper = threading.Thread(target=self._server.shutdown, name="cbos-ws-stop",
                                       daemon=True)
            stopper.start()
            stopper.join(max(0.5, started + 4.0 - time.monotonic()))
            stopped = not stopper.is_alive()
        if self._thread is not None:
            self._thread.join(max(0.1, started + 4.3 - time.monotonic()))
            stopped = stopped and not self._thread.is_alive()
        for client in clients:
            if client.writer is not None:
                client.writer.join(max(0.0, started + 4.5 - time.monotonic()))
                stopped = stopped and not client.writer.is_alive()
        self.stopped_cleanly = stopped
        if not stopped:
            log.warning("WebSocket server: some connection threads did not stop in time")
        engine = self._engine
        if engine is not None:
            with contextlib.suppress(ValueError):
                engine.snapshot_listeners.remove(self._on_snapshot)
            with contextlib.suppress(ValueError):
                engine.output_listeners.remove(self._on_output)
        if stopped:  # else a late thread could write into whatever reuses the number
            for fd in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)
        log.info("WebSocket server stopped in %.2f s", time.monotonic() - started)

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
                log.exception("WebSocket command %s failed", request.get("type"))
                if kind == "request":
                    client.put(_error(request, f"internal error: {exc!r} (details in "
                                               f"{self.config.own_log})"))
                    client.slots.release()
        self._wake()  # more than one budget's worth: come back after the loop's other work

    def _run(self, client: _Client, kind: str, request: dict[str, Any]) -> None:
        if kind == "hello":
            if client.closing:
                return
            self._clients.add(client)
            client.put(self._sessions_message({}))
            client.put(_dump({"type": "available_streams", "sessions": sorted(
                v.slug for v in self._views.values() if v.state is not st.State.EXITED)}))
        elif kind == "error":
            client.put(request["text"])
            client.slots.release()
        elif kind == "bye":
            self._clients.discard(client)
            for key, waiting in list(self._pending.items()):
                self._pending[key] = [w for w in waiting if w[0] is not client]
                if not self._pending[key]:
                    del self._pending[key]
        else:
            HANDLERS[request["type"]](self, client, request)

    def _sessions_message(self, request: Mapping[str, Any]) -> str:
        return _reply(request, {"type": "sessions",
                                "sessions": [v.to_json() for v in self._views.values()]})

    def _known(self) -> set[str]:
        assert self._engine is not None
        return set(self._views) | set(self._engine.tail.slugs())

    def _unknown(self, request: Mapping[str, Any], names: Sequence[str]) -> str:
        listed = ", ".join(repr(n) for n in names[:5])
        return _error(request, f"no session named {listed}; ask with list_sessions for the "
                               "names")

    def _do_subscribe(self, client: _Client, request: dict[str, Any]) -> None:
        assert self._engine is not None
        tail = self._engine.tail
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
            client.put(_error(request, f'"since" names {", ".join(map(repr, extra))}, which '
                                       "this subscribe does not; list it in \"sessions\""))
        else:
            if star:
                client.all = True
                client.excluded.clear()
                listed = sorted(set(self._views) | set(explicit))
            else:
                client.names.update(explicit)
                client.excluded.difference_update(explicit)
                listed = explicit
            ends = {n: tail.offset(n) for n in {*listed, *since}}
            client.put(_reply(request, {"type": "subscribed", "sessions": listed,
                                        "offsets": {n: ends[n] for n in listed}}))
            # Taken on the loop thread, so every later live chunk starts at or after `end`:
            # the replay stops there and the stream goes on without overlap or hole.
            for name, start in since.items():
                if start != ends[name]:
                    client.put(_Replay(tail, name, start, ends[name]))
        client.slots.release()

    def _do_unsubscribe(self, client: _Client, request: dict[str, Any]) -> None:
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
            client.put(_reply(request, {"type": "unsubscribed", "sessions": names}))
        client.slots.release()

    def _do_list_sessions(self, client: _Client, request: dict[str, Any]) -> None:
        client.put(self._sessions_message(request))
        client.slots.release()

    def _session(self, client: _Client, request: dict[str, Any]) -> str | None:
        """The request's session if it is on the board; else answer an error and free the
        slot."""
        slug: str = request["slug"]
        if slug in self._views:
            return slug
        client.put(self._unknown(request, [slug]))
        client.slots.release()
        return None

    def _do_send(self, client: _Client, request: dict[str, Any]) -> None:
        assert self._engine is not None
        slug = self._session(client, request)
        if slug is not None:
            self._engine.send(slug, request["text"],
                              self._result(client, request, "send_result", slug))

    def _do_interrupt(self, client: _Client, request: dict[str, Any]) -> None:
        assert self._engine is not None
        slug = self._session(client, request)
        if slug is not None:
            self._engine.interrupt(slug, self._result(client, request, "interrupt_result",
                                                      slug))

    def _result(self, client: _Client, request: dict[str, Any], kind: str,
                slug: str) -> Callable[[Outcome], None]:
        def done(outcome: Outcome) -> None:
            message: dict[str, Any] = {"type": kind, "session": slug, "success": outcome.ok}
            if not outcome.ok:
                message["error"] = outcome.error
            client.put(_reply(request, message))
            client.slots.release()
        return done

    def _do_get_buffer(self, client: _Client, request: dict[str, Any]) -> None:
        assert self._engine is not None
        slug: str = request["slug"]
        if slug not in self._views and slug in self._engine.tail.slugs():
            # No pane any more, but its log is kept: the last output is the best answer.
            data = self._engine.tail.buffer(slug).decode("utf-8", "replace")
            client.put(_reply(request, {"type": "buffer", "session": slug, "data": data}))
            client.slots.release()
            return
        if self._session(client, request) is None:
            return

        def done(outcome: Outcome) -> None:
            if outcome.ok:
                client.put(_reply(request, {"type": "buffer", "session": slug,
                                            "data": outcome.value}))
            else:
                client.put(_error(request, outcome.error))
            client.slots.release()

        self._engine.buffer(slug, done)

    def _do_answer(self, client: _Client, request: dict[str, Any]) -> None:
        """(v2) Pick an option of the dialog on screen, as `cbos answer` does."""
        assert self._engine is not None
        slug = self._session(client, request)
        if slug is not None:
            self._engine.answer(slug, request["choice"],
                                self._result(client, request, "answer_result", slug))

    def _do_get_screen(self, client: _Client, request: dict[str, Any]) -> None:
        """(v2) The screen as tmux renders it, colours included, and the pane's size."""
        assert self._engine is not None
        slug = self._session(client, request)
        if slug is None:
            return
        session = self._engine.core.board.sessions.get(slug)
        cols, rows = (session.pane.width, session.pane.height) if session else (0, 0)

        def done(outcome: Outcome) -> None:
            if outcome.ok:
                client.put(_reply(request, {"type": "screen", "session": slug,
                                            "data": outcome.value, "cols": cols,
                                            "rows": rows}))
            else:
                client.put(_error(request, outcome.error))
            client.slots.release()

        self._engine.buffer(slug, done)

    def _do_create_session(self, client: _Client, request: dict[str, Any]) -> None:
        assert self._engine is not None

        def done(outcome: Outcome) -> None:
            client.slots.release()
            if not outcome.ok:
                client.put(_error(request, outcome.error))
                return
            slug: str = outcome.value.slug
            view = self._views.get(slug)
            if view is not None:  # the board has it already: no diff will announce it
                client.put(_reply(request, {"type": "session_created",
                                            "session": view.to_json()}))
            else:  # the diff that shows it carries the id to this client
                self._pending.setdefault(("created", slug), []).append((client, request))

        self._engine.create(request["path"], request["slug"], done=done)

    def _do_delete_session(self, client: _Client, request: dict[str, Any]) -> None:
        assert self._engine is not None
        found = self._session(client, request)
        if found is None:
            return
        slug: str = found

        def done(outcome: Outcome) -> None:
            client.slots.release()
            if not outcome.ok:
                client.put(_error(request, outcome.error))
            elif slug not in self._views:
                client.put(_reply(request, {"type": "session_deleted", "slug": slug}))
            else:
                self._pending.setdefault(("deleted", slug), []).append((client, request))

        self._engine.kill(slug, done)

    def _broadcast(self, message: dict[str, Any], key: tuple[str, str] | None = None) -> None:
        """To every client; a client whose request waits on ``key`` gets it with its id."""
        waiting = self._pending.pop(key, []) if key else []
        text = _dump(message)
        for client in self._clients:
            mine = [request for c, request in waiting if c is client]
            for request in mine:
                client.put(_reply(request, dict(message)))
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
            if view.state in WAITING and (before is None or before.state != view.state):
                self._broadcast({"type": "session_waiting", "slug": slug,
                                 "context": waiting_context(view, self._last_message(slug))})

    def _last_message(self, slug: str) -> str:
        """Claude's last reply in full (the reason clips it); the board is ours to read here,
        on the loop thread."""
        if self._engine is None:
            return ""
        try:
            board = self._engine.core.board
            session = board.sessions.get(slug)
            track = board.track_for(session) if session is not None else None
            text = getattr(track, "last_message", "")
            return text if isinstance(text, str) else ""
        except Exception:
            log.exception("reading the last message of %s", slug)
            return ""

    def _on_output(self, chunks: list[logs.Chunk]) -> None:
        """Fan chunks out to subscribers: one encoding shared by all, an append each."""
        for chunk in chunks:
            readers = [c for c in self._clients if c.wants(chunk.slug)]
            if not readers:
                continue
            texts = stream_messages(chunk)
            for client in readers:
                for text in texts:
                    client.put(text)

    def backlogs(self) -> list[int]:
        """Characters waiting in each client's outbox (for tests and diagnostics)."""
        with self._lock:
            return [c.backlog for c in self._live]

    def _overflowed(self, client: _Client) -> None:
        self.overflows += 1
        log.info("%s fell behind (%d bytes queued); closing it with 1008", client,
                 self.queue_limit)

    # -- connection threads -----------------------------------------------------------

    def _wake(self) -> None:
        if self._commands.empty():
            return
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"c")

    def _submit(self, client: _Client, kind: str, request: dict[str, Any]) -> None:
        self._commands.put((client, kind, request))
        if self._closed:
            return
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"c")

    def _admit(self, conn: ServerConnection, request: Request) -> Response | None:
        """The opening handshake's checks: path, Origin, Host, then the token or the uid.
        With the page on, a GET that is no WebSocket handshake is for the page."""
        if self.page and not _upgrade(request) and (
                request.path.partition("?")[0] not in PATHS - {"/"}):
            return self._page_answer(conn, request)
        refusal = self._refusal(conn, request)
        if refusal is None:
            return None
        status, text = refusal
        log.info("refused a WebSocket connection from %s: %s", conn.remote_address, text)
        response = conn.respond(status, text + "\n")
        if status == http.HTTPStatus.UNAUTHORIZED:
            response.headers["WWW-Authenticate"] = 'Bearer realm="cbos"'
        return response

    def _refusal(self, conn: ServerConnection, request: Request
                 ) -> tuple[http.HTTPStatus, str] | None:
        path = request.path.partition("?")[0]
        if path not in PATHS:
            return http.HTTPStatus.NOT_FOUND, "no such endpoint; connect to /ws/stream"
        origins = request.headers.get_all("Origin")
        hosts = request.headers.get_all("Host")
        own_page = bool(self.page and origins and len(hosts) == 1
                        and origins[0].lower() == f"http://{hosts[0].strip().lower()}")
        if origins and (len(origins) > 1 or (origins[0] not in self.allowed_origins
                                             and not own_page)):
            return (http.HTTPStatus.FORBIDDEN, "this Origin is not allowed (web pages may not "
                    "connect); start cbos with --allow-origin ORIGIN to allow one")
        if len(hosts) != 1:
            return http.HTTPStatus.BAD_REQUEST, "the request needs exactly one Host header"
        if not self.allow_remote and not loopback_host(hosts[0]):
            return (http.HTTPStatus.FORBIDDEN, "the Host header must name this machine's "
                    "loopback (localhost, 127.0.0.1 or [::1])")
        token = _token_of(request)
        if token is not None:
            if token is False or not hmac.compare_digest(
                    str(token).encode("utf-8", "replace"), self._token.encode("ascii")):
                return http.HTTPStatus.UNAUTHORIZED, "wrong token"
        elif own_page:
            return (http.HTTPStatus.UNAUTHORIZED, "the page needs the token: open the URL "
                    "cbos printed (it ends in #token=...)")
        elif self.allow_remote:
            return (http.HTTPStatus.UNAUTHORIZED, "a token is required (Authorization: "
                    "Bearer TOKEN, or ?token=TOKEN); it is in cbos's token file")
        elif peer_uid(conn.socket) != os.getuid():
            return (http.HTTPStatus.UNAUTHORIZED, "only the user running cbos may connect "
                    "without the token; present it (Authorization: Bearer TOKEN)")
        with self._lock:
            if len(self._live) >= self.max_clients:
                return (http.HTTPStatus.SERVICE_UNAVAILABLE,
                        f"too many clients (at most {self.max_clients}); try again later")
        return None

    def _page_answer(self, conn: ServerConnection, request: Request) -> Response:
        """The page and its files (cbos.page), after the same Host check as the socket."""
        from cbos import page

        hosts = request.headers.get_all("Host")
        if len(hosts) != 1:
            answer = page.respond("", "", "")
        elif not self.allow_remote and not loopback_host(hosts[0]):
            answer = page.Answer(403, page.security_headers("localhost"),
                                 b"the Host header must name this machine's loopback "
                                 b"(localhost, 127.0.0.1 or [::1])\n")
        else:
            answer = page.respond(request.path, hosts[0].strip(),
                                  request.headers.get("Accept-Encoding", ""),
                                  request.headers.get("If-None-Match", ""))
        status = http.HTTPStatus(answer.status)
        headers = Headers([("Date", email.utils.formatdate(usegmt=True)),
                           ("Connection", "close"),
                           ("Content-Length", str(len(answer.body))), *answer.headers])
        return Response(status.value, status.phrase, headers, answer.body)

    def _handle(self, conn: ServerConnection) -> None:
        """A connection's own thread: read and validate; its writer thread sends."""
        client = _Client(conn, self.queue_limit, self.stall_grace, self._overflowed)
        with self._lock:
            if self._closed:
                return
            self._live.add(client)
        writer = client.writer = threading.Thread(target=client.write_loop,
                                                  name=f"cbos-ws-out-{client.id}", daemon=True)
        writer.start()
        self._submit(client, "hello", {})
        try:
            self._read_loop(client)
        finally:
            client.finish()
            self._submit(client, "bye", {})
            with self._lock:
                self._live.discard(client)

    def _read_loop(self, client: _Client) -> None:
        while True:
            try:
                message = client.conn.recv()
            except ConnectionClosed:
                return
            if client.closing:
                continue  # being closed: drain until the close completes
            kind = "request"
            if isinstance(message, bytes):
                kind, request = "error", {"text": _error({}, "binary frames are not "
                                                             "understood; send JSON text")}
            else:
                try:
                    request = parse_request(message)
                except BadRequest as exc:
                    # Through the loop too, so replies keep the order of the requests.
                    kind, request = "error", {"text": _error(exc.request, str(exc))}
            # Back-pressure: a client with IN_FLIGHT unanswered messages waits here, and
            # websockets stops reading its socket.
            while not client.slots.acquire(timeout=0.25):
                if client.closing:
                    break
            else:
                self._submit(client, kind, request)


HANDLERS: dict[str, Callable[[WebServer, _Client, dict[str, Any]], None]] = {
    "subscribe": WebServer._do_subscribe,
    "unsubscribe": WebServer._do_unsubscribe,
    "list_sessions": WebServer._do_list_sessions,
    "send": WebServer._do_send,
    "interrupt": WebServer._do_interrupt,
    "get_buffer": WebServer._do_get_buffer,
    "create_session": WebServer._do_create_session,
    "delete_session": WebServer._do_delete_session,
    "answer": WebServer._do_answer,
    "get_screen": WebServer._do_get_screen,
}


# -- cbos serve -------------------------------------------------------------------------------


def serve_loop(engine: Engine, server: WebServer, stop_fd: int) -> None:
    """`cbos serve`'s loop thread: the engine's fds and the server's, until ``stop_fd`` is
    readable; ``engine.tick()`` about once a second."""
    selector = selectors.DefaultSelector()
    try:
        for fd in engine.fds():
            selector.register(fd, selectors.EVENT_READ, engine.on_readable)
        for fd in server.attach(engine):
            selector.register(fd, selectors.EVENT_READ, server.on_readable)
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
