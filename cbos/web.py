"""The optional WebSocket server: the protocol (shared/protocol.md) on websockets' sync server.

This module is the transport: the listening socket, the opening handshake's checks
(:meth:`WebServer._admit`), and a thread per connection that reads frames. What the
messages mean is :mod:`cbos.protocol`'s and :mod:`cbos.hub`'s, shared with the stdio
server; see the hub's docstring for the threads and hand-offs.

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
import logging
import os
import re
import secrets
import socket
import struct
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve
from websockets.typing import Origin

from cbos import protocol as pr
from cbos.config import Config
from cbos.errors import CbosError, UsageError
from cbos.hub import QUEUE_LIMIT, Hub, Peer
from cbos.hub import serve_loop as hub_loop

if TYPE_CHECKING:
    from cbos.engine import Engine

log = logging.getLogger(__name__)
# websockets logs request lines (with ``?token=``) at DEBUG: keep its logger above that,
# whatever CBOS_LOG_LEVEL says.
_ws_log = logging.getLogger("cbos.web.protocol")
_ws_log.setLevel(logging.INFO)

PATHS = frozenset({"/ws/stream", "/"})
MAX_MESSAGE = pr.MAX_MESSAGE  # bytes of one incoming frame; more closes with 1009
STALL_GRACE = 5.0  # seconds a closing client gets to take its close frame
MAX_CLIENTS = 128
SHUTDOWN_GRACE = 1.5  # seconds clients get to close politely before sockets are cut
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{43,}$")
REMOTE_WARNING = (
    "--allow-remote: whoever reaches this port with the token can type into Claude, and "
    "plain ws:// and http:// carry the token and every screen unencrypted. Safer: keep "
    "cbos on 127.0.0.1 and use an SSH tunnel (ssh -L 32205:127.0.0.1:32205 THIS-HOST) or a "
    "private network (WireGuard, Tailscale)")


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


class _Client(Peer):
    """One WebSocket connection: the hub's outbox, sent as text frames."""

    def __init__(self, conn: ServerConnection, limit: int, grace: float,
                 on_overflow: Callable[[Peer], None]) -> None:
        super().__init__(limit, grace, on_overflow)
        self.conn = conn

    def send_text(self, text: str) -> None:
        self.conn.send(text)

    def send_close(self, code: int, reason: str) -> None:
        self.conn.close(code, reason)

    def cut(self) -> None:
        """Shut the socket down under a writer blocked in send(): it fails and returns.
        (websockets' own close() would wait for the lock that blocked send holds.)"""
        if self.ended.is_set():
            return
        with contextlib.suppress(OSError):
            self.conn.socket.shutdown(socket.SHUT_RDWR)


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
        self.stopped_cleanly: bool | None = None  # after shutdown: every thread ended in time
        self.hub = Hub(str(config.own_log))
        self._token = ""
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._live: set[_Client] = set()  # every connected client (handler threads)
        self._conns: weakref.WeakSet[ServerConnection] = weakref.WeakSet()  # all sockets
        self._closed = False

    def __enter__(self) -> WebServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    @property
    def overflows(self) -> int:
        """Clients closed for falling behind (read by tests and people)."""
        return self.hub.overflows

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
        self.hub.detach(close_fds=stopped)
        log.info("WebSocket server stopped in %.2f s", time.monotonic() - started)

    # -- the loop thread -----------------------------------------------------------------

    def attach(self, engine: Engine) -> list[int]:
        """Listen to the engine; the caller's loop must call :meth:`on_readable` for the fds."""
        return self.hub.attach(engine)

    def on_readable(self, fd: int) -> None:
        self.hub.on_readable(fd)

    def backlogs(self) -> list[int]:
        """Characters waiting in each client's outbox (for tests and diagnostics)."""
        with self._lock:
            return [c.backlog for c in self._live]

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
        method = getattr(request, "method", "GET")  # websockets < 14 only parses GET
        if method not in ("GET", "HEAD"):
            answer = page.HttpReply(405, [*page.security_headers("localhost"),
                                       ("Allow", "GET, HEAD")],
                                 b"only GET is served here: the page is read-only\n")
        elif len(hosts) != 1:
            answer = page.respond("", "", "")
        elif not self.allow_remote and not loopback_host(hosts[0]):
            answer = page.HttpReply(403, page.security_headers("localhost"),
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
        body = b"" if method == "HEAD" else answer.body
        return Response(status.value, status.phrase, headers, body)

    def _handle(self, conn: ServerConnection) -> None:
        """A connection's own thread: read and validate; its writer thread sends."""
        client = _Client(conn, self.queue_limit, self.stall_grace, self.hub.overflowed)
        with self._lock:
            if self._closed:
                return
            self._live.add(client)
        writer = client.writer = threading.Thread(target=client.write_loop,
                                                  name=f"cbos-ws-out-{client.id}", daemon=True)
        writer.start()
        self.hub.submit(client, "hello", {})
        try:
            self._read_loop(client)
        finally:
            client.finish()
            self.hub.submit(client, "bye", {})
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
                kind, request = "error", {"text": pr.error({}, "binary frames are not "
                                                               "understood; send JSON text")}
            else:
                try:
                    request = pr.parse_request(message)
                except pr.BadRequest as exc:
                    # Through the loop too, so replies keep the order of the requests.
                    kind, request = "error", {"text": pr.error(exc.request, str(exc))}
            # Back-pressure: a client with IN_FLIGHT unanswered messages waits here, and
            # websockets stops reading its socket.
            while not client.slots.acquire(timeout=0.25):
                if client.closing:
                    break
            else:
                self.hub.submit(client, kind, request)


# -- cbos serve -------------------------------------------------------------------------------


def serve_loop(engine: Engine, server: WebServer, stop_fd: int) -> None:
    """`cbos serve`'s loop thread: the engine's fds and the server's, until ``stop_fd`` is
    readable; ``engine.tick()`` about once a second."""
    hub_loop(engine, server.attach(engine), server.on_readable, stop_fd)
