"""Other machines: ``ssh HOST COMMAND serve --stdio``, the protocol over OpenSSH's pipes.

Nothing listens anywhere: OpenSSH carries the bytes, authenticates and checks host keys;
the remote cbos is started by ssh and ends when the pipe closes. cbos's own ssh options:
``-T`` (no terminal), ``BatchMode=yes`` (never a password prompt: a host that needs one
is an error in words), and a ControlMaster of cbos's own (ControlPath in cbos's state
dir, ControlPersist) so repeated CLI calls share one connection. The ssh program comes
from ``CBOS_SSH_COMMAND`` (default ``ssh``), split like git's ``GIT_SSH_COMMAND``.

What reaches an ssh command line is checked first: the host's name and destination (at
config load), slugs (:func:`address`). Text for a session travels only inside protocol
messages, never in a remote command line.

Two clients: :class:`Remote`, one-shot and synchronous (the CLI: connect, ask, close), and
:class:`HostLink`, long-lived (the engine: reconnects with backoff and resubscribes with
``since`` offsets so output crossing a dropped connection arrives whole and once). A
``HostLink`` runs on its own threads and hands what it reads to the loop thread through a
callback; the loop thread never waits on ssh.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import itertools
import logging
import os
import queue
import re
import shlex
import stat
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from cbos import logs
from cbos import protocol as pr
from cbos.config import Config, HostConfig
from cbos.errors import CbosError, UsageError
from cbos.model import HostStatus, SessionView
from cbos.sessions import validate_slug

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10  # seconds ssh may take to connect (ConnectTimeout)
PERSIST = 300  # seconds the shared connection outlives its last user (ControlPersist)
BACKOFF = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)  # seconds between reconnection attempts
HELLO_TIMEOUT = 30.0  # seconds from starting ssh to the remote's session list
ASK_TIMEOUT = 60.0
FLAGS = frozenset({"--stdio", "--full", "--json"})  # the only options cbos puts there
SUBSCRIBE_ID = "cbos-link"  # the id of the link's own subscribe (requests use numbers)
UNIX_PATH_MAX = 104  # sun_path holds 108 bytes with its NUL; ssh's own limit is lower


# -- addressing ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Address:
    """A session named on the command line, a WebSocket or an MCP tool."""

    host: HostConfig | None  # None: this machine
    slug: str  # the slug on that machine

    @property
    def name(self) -> str:
        return f"{self.host.name}:{self.slug}" if self.host else self.slug


def address(config: Config, name: str) -> Address:
    """``SLUG`` (this machine) or ``HOST:SLUG`` (a [[hosts]] entry), checked.

    Raises UsageError naming the unknown host or the bad slug: nothing unchecked ever
    reaches an ssh command line.
    """
    host_name, colon, slug = name.partition(":")
    if not colon:
        return Address(None, name)
    host = config.host(host_name)
    if host is None:
        known = ", ".join(h.name for h in config.hosts) or "none configured"
        raise UsageError(f"no host named {host_name!r} in {config.config_dir}/config.toml "
                         f"(hosts: {known}); add a [[hosts]] table or use a local slug")
    return Address(host, validate_slug(slug))


def is_remote(name: str) -> bool:
    return ":" in name


# -- the ssh command line ------------------------------------------------------------------


def ssh_program(environ: Mapping[str, str] | None = None) -> list[str]:
    """``CBOS_SSH_COMMAND`` split as a shell would (git's GIT_SSH_COMMAND), default ssh."""
    env = os.environ if environ is None else environ
    text = env.get("CBOS_SSH_COMMAND", "").strip() or "ssh"
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"CBOS_SSH_COMMAND={text!r} cannot be split ({exc}); quote it as "
                         "for a shell") from None
    return words


def control_dir(config: Config) -> Path:
    """Where cbos's ControlMaster sockets live: cbos's state dir, or (when that path is
    too long for a Unix socket) a private directory under /tmp named after it."""
    preferred = config.state_dir / "ssh"
    # ssh binds "<dir>/<40 hex of %C>.<16 random>" first, then renames it.
    if len(str(preferred)) + 1 + 40 + 17 <= UNIX_PATH_MAX:
        return preferred
    digest = hashlib.sha256(str(preferred).encode()).hexdigest()[:12]
    return Path("/tmp") / f"cbos-{os.getuid()}-{digest}"


def ssh_argv(config: Config, host: HostConfig, remote: Sequence[str], tty: bool = False,
             environ: Mapping[str, str] | None = None) -> list[str]:
    """The whole ssh command line running ``remote`` (words, each checked) on ``host``.

    The remote words are joined after ``host.command`` (from the user's own config file):
    every word cbos adds is a fixed keyword or a checked slug, never text to type.
    """
    for word in remote:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", word) or (word.startswith("-")
                                                          and word not in FLAGS):
            raise UsageError(f"{word!r} cannot go on a remote command line")
    directory = control_dir(config)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    found = directory.lstat()
    if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.getuid() \
            or found.st_mode & 0o077:
        # (under /tmp another user could have made it first and wait there for our text)
        raise CbosError(f"{directory} must be a directory of yours that only you can use "
                        "(mode 700); remove it and try again")
    return [
        *ssh_program(environ), "-t" if tty else "-T",
        "-o", "BatchMode=yes",
        "-o", f"ConnectTimeout={CONNECT_TIMEOUT}",
        "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=3",
        "-o", "ControlMaster=auto", "-o", f"ControlPath={directory}/%C",
        "-o", f"ControlPersist={PERSIST}",
        "--", host.ssh, " ".join([host.command, *remote]),
    ]


def run_remote(config: Config, host: HostConfig, words: Sequence[str]) -> str:
    """Run the remote cbos with fixed, checked ``words`` (no text): its stdout, or
    CbosError with its error (or ssh's, in words)."""
    argv = ssh_argv(config, host, words)
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          check=False)
    if done.returncode == 0:
        return done.stdout
    if done.returncode == 255 or done.returncode == 127:
        raise CbosError(explain(host, done.returncode, done.stderr))
    text = done.stderr.strip().splitlines()
    raise CbosError(f"{host.name}: {text[-1].removeprefix('cbos: ') if text else 'failed'}")


def attach_remote(config: Config, host: HostConfig, slug: str) -> int:
    """``ssh -t HOST COMMAND attach SLUG`` on this terminal until it ends; its status."""
    argv = ssh_argv(config, host, ["attach", validate_slug(slug)], tty=True)
    return subprocess.run(argv, check=False).returncode


def exec_remote(config: Config, host: HostConfig, words: Sequence[str]) -> None:
    """Become ``ssh -t HOST COMMAND WORDS...`` (an interactive terminal there)."""
    argv = ssh_argv(config, host, words, tty=True)
    os.execvp(argv[0], argv)


def stop_master(config: Config, host: HostConfig) -> None:
    """End cbos's shared connection to ``host`` (`ssh -O exit`), if there is one."""
    argv = ssh_argv(config, host, [])
    cut = argv.index("--")
    subprocess.run([*argv[:cut], "-O", "exit", "--", host.ssh], stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10,
                   check=False)


def explain(host: HostConfig, status: int | None, stderr: str) -> str:
    """Why a connection failed or ended, in words a person can act on."""
    text = " ".join(stderr.split())
    last = next((line.strip() for line in reversed(stderr.splitlines()) if line.strip()),
                "")
    name, dest = host.name, host.ssh
    if "Host key verification failed" in text or "IDENTIFICATION HAS CHANGED" in text \
            or "No ED25519 host key is known" in text or "host key is known" in text:
        return (f"{name}: the host key of {dest} is unknown or has changed (Host key "
                f"verification failed); check it and accept it with a plain `ssh {dest}`")
    if "Permission denied" in text or "Too many authentication failures" in text:
        return (f"{name}: ssh cannot log in to {dest} without a prompt (Permission denied; "
                "cbos never asks for passwords or passphrases): load the key into ssh-agent "
                "or set up key login")
    if "Could not resolve hostname" in text:
        return f"{name}: cannot resolve the host name of {dest} ({last})"
    if "Connection refused" in text:
        return f"{name}: {dest} refused the connection (is its ssh server running?)"
    if "timed out" in text or "No route to host" in text or "Network is unreachable" in text:
        return f"{name}: {dest} is unreachable ({last})"
    if status == 127 or "command not found" in text or "No such file or directory" in text:
        return (f"{name}: {host.command!r} was not found there (is cbos installed, and on the "
                "PATH of a non-interactive ssh login?); set command = \"~/.local/bin/cbos\" "
                "or the right path in its [[hosts]] table")
    if "invalid choice" in text or "unrecognized arguments" in text:
        return (f"{name}: the cbos there is too old for `serve --stdio`; upgrade it "
                f"({last})")
    if status == 255:
        return f"{name}: ssh failed: {last or 'the connection ended'}"
    if last:
        return f"{name}: {last}"
    return f"{name}: the connection ended (exit status {status})"


# -- one connection ------------------------------------------------------------------------


class _Pipe:
    """One ``ssh … serve --stdio`` process: send lines, read lines, keep stderr's tail."""

    def __init__(self, config: Config, host: HostConfig) -> None:
        self.host = host
        argv = ssh_argv(config, host, ["serve", "--stdio"])
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            raise CbosError(f"{host.name}: cannot run {argv[0]!r} ({exc.strerror}); install "
                            "OpenSSH's client or set CBOS_SSH_COMMAND") from None
        self._errors: deque[str] = deque(maxlen=20)
        self._err_thread = threading.Thread(target=self._read_errors, daemon=True,
                                            name=f"cbos-ssh-err-{host.name}")
        self._err_thread.start()
        self._write_lock = threading.Lock()

    def _read_errors(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self._errors.append(line)

    def send(self, text: str) -> None:
        """Write one line (any thread; raises OSError when the pipe is gone)."""
        stdin = self.proc.stdin
        assert stdin is not None
        with self._write_lock:
            stdin.write(text.encode("utf-8") + b"\n")
            stdin.flush()

    def lines(self) -> IO[bytes]:
        assert self.proc.stdout is not None
        return self.proc.stdout

    def why(self) -> str:
        """Why it ended: waits for ssh to exit (briefly) and reads its stderr."""
        try:
            status: int | None = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            status = None
        self._err_thread.join(2)
        return explain(self.host, status, "\n".join(self._errors))

    def close(self) -> None:
        """Close stdin (the remote cbos ends), then make sure ssh is gone."""
        with contextlib.suppress(OSError, ValueError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            with contextlib.suppress(OSError, ValueError):
                if stream is not None:
                    stream.close()


def _read_line(stream: IO[bytes]) -> dict[str, Any] | None:
    """The next protocol message, or None at the end; a bad line is skipped (and logged)."""
    while True:
        line = stream.readline(pr.MAX_MESSAGE * 8)
        if not line:
            return None
        try:
            return pr.parse_event(line)
        except pr.BadEvent as exc:
            log.warning("ignoring a line from a host: %s", exc)


class Remote:
    """A one-shot connection for the CLI: the session list, a few requests, then closed.

    ``with Remote(config, host) as remote: remote.ask({...})``. Errors are CbosError
    naming the host.
    """

    def __init__(self, config: Config, host: HostConfig, timeout: float = HELLO_TIMEOUT
                 ) -> None:
        self.host = host
        self.timeout = timeout
        self._pipe = _Pipe(config, host)
        self._messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._held: collections.deque[dict[str, Any]] = collections.deque()
        self._ids = itertools.count(1)
        threading.Thread(target=self._read, daemon=True,
                         name=f"cbos-remote-{host.name}").start()
        self.views: list[SessionView] = []
        try:
            hello = self._next(timeout, "its session list")
            if hello.get("type") != "sessions":
                raise CbosError(f"{host.name}: the remote cbos did not start with its "
                                "session list")
            self.views = [pr.view_from_json(v, host.name) for v in hello.get("sessions", [])]
        except pr.BadEvent as exc:
            self._pipe.close()
            raise CbosError(f"{host.name}: the remote cbos sent a session cbos cannot read "
                            f"({exc}); are both sides the same cbos version?") from None
        except BaseException:
            self._pipe.close()  # (no __exit__ will run: the ssh process must not stay)
            raise

    def _read(self) -> None:
        stream = self._pipe.lines()
        with contextlib.suppress(OSError, ValueError):
            while (message := _read_line(stream)) is not None:
                self._messages.put(message)
        self._messages.put(None)

    def _next(self, timeout: float, what: str) -> dict[str, Any]:
        try:
            message = self._messages.get(timeout=timeout)
        except queue.Empty:
            self._pipe.close()
            raise CbosError(f"{self.host.name}: no answer within {timeout:g} s (waiting for "
                            f"{what})") from None
        if message is None:
            self._messages.put(None)
            raise CbosError(self._pipe.why())
        return message

    def send(self, kind: str, **fields: Any) -> int:
        ident = next(self._ids)
        try:
            self._pipe.send(pr.request(kind, ident, **fields))
        except pr.BadRequest as exc:
            raise UsageError(str(exc)) from None
        except (OSError, ValueError):
            raise CbosError(self._pipe.why()) from None
        return ident

    def ask(self, kind: str, timeout: float = ASK_TIMEOUT, **fields: Any) -> dict[str, Any]:
        """Send a request and return its reply; an error reply or a failed action raises."""
        ident = self.send(kind, **fields)
        deadline = time.monotonic() + timeout
        while True:
            message = self._next(max(0.1, deadline - time.monotonic()), f"the reply to {kind}")
            if message.get("id") != ident:
                self._held.append(message)  # for events(): a stream chunk is not dropped
                continue
            if message["type"] == "error":
                raise CbosError(f"{self.host.name}: {message.get('message')}")
            if message.get("success") is False:
                raise CbosError(f"{self.host.name}: {message.get('error')}")
            return message

    def forget_streams(self, slug: str) -> bool:
        """Drop the held output of ``slug`` (what a subscription since ended had sent, or
        wake-ups already served); whether there was any."""
        kept = collections.deque(m for m in self._held if not (
            m.get("type") == "stream" and m.get("session") == slug))
        dropped = len(kept) != len(self._held)
        self._held = kept
        return dropped

    def events(self, timeout: float) -> dict[str, Any] | None:
        """The next message, or None if nothing came within ``timeout``."""
        if self._held:
            return self._held.popleft()
        try:
            message = self._messages.get(timeout=timeout)
        except queue.Empty:
            return None
        if message is None:
            self._messages.put(None)
            raise CbosError(self._pipe.why())
        return message

    def chat(self, name: str, slug: str, text: str, timeout: float,
             watch: Callable[[dict[str, Any]], None] | None = None) -> str:
        """Send ``text`` to ``slug`` and return Claude's last words once the turn has ended
        (the session waits again: the protocol's session_waiting). ``watch`` sees every
        other message on the way, and may raise to stop (a budget running out). ``name``
        is how errors call the session (HOST:SLUG)."""
        deadline = time.monotonic() + timeout
        self.ask("send", session=slug, text=text)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CbosError(f"{name}: no reply within {timeout:g}s")
            message = self.events(left)
            if message is None:
                continue
            kind, about = message.get("type"), message.get("slug")
            if kind == "session_waiting" and about == slug:
                return str(message.get("context", ""))
            if kind == "session_deleted" and about == slug:
                raise CbosError(f"{name} ended before it replied")
            if watch is not None:
                watch(message)

    def close(self) -> None:
        self._pipe.close()

    def __enter__(self) -> Remote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def gather(config: Config, hosts: Sequence[HostConfig] | None = None
           ) -> tuple[list[SessionView], dict[str, str]]:
    """Every host's session list, asked in parallel: (views, {host: error})."""
    hosts = config.hosts if hosts is None else hosts
    views: dict[str, list[SessionView]] = {}
    errors: dict[str, str] = {}

    def one(host: HostConfig) -> None:
        try:
            with Remote(config, host) as remote:
                views[host.name] = remote.views
        except CbosError as exc:
            errors[host.name] = str(exc)

    threads = [threading.Thread(target=one, args=(h,), daemon=True) for h in hosts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HELLO_TIMEOUT + 10)
    for host in hosts:
        if host.name not in views and host.name not in errors:
            errors[host.name] = f"{host.name}: no answer within {HELLO_TIMEOUT:g} s"
    return [v for h in hosts for v in views.get(h.name, [])], errors


# -- the long-lived link (the engine's) ----------------------------------------------------


Reply = Callable[[dict[str, Any] | None, str], None]  # (reply, error)


class _Ring:
    """A session's newest output with the offset after it (reader thread writes)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.end = 0

    def add(self, raw: bytes, end: int) -> None:
        self.data += raw
        if len(self.data) > self.limit:
            del self.data[:len(self.data) - self.limit]
        self.end = end

    def read(self, offset: int, limit: int) -> tuple[bytes, int, bool]:
        start = self.end - len(self.data)
        gap = offset < start or offset > self.end
        offset = start if gap else offset
        piece = bytes(self.data[offset - start:offset - start + limit])
        return piece, offset + len(piece), gap


class HostLink:
    """The engine's connection to one host: views and output in, requests out.

    Threads: ``cbos-host-NAME`` connects, reads lines and reconnects with backoff; it puts
    what it read on a queue and calls ``wake`` (which must be cheap and thread-safe; the
    engine's wake-up pipe). The loop thread calls :meth:`drain` and the request methods;
    it never waits: a line to send goes to the pipe from a small writer queue.
    """

    def __init__(self, config: Config, host: HostConfig, wake: Callable[[], None],
                 buffer_bytes: int = 100_000) -> None:
        self.config = config
        self.host = host
        self.name = host.name
        self._wake = wake
        self._buffer_bytes = buffer_bytes
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._outbox: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._lock = threading.Lock()  # rings and offsets (reader writes, others read)
        self._rings: dict[str, _Ring] = {}  # by bare slug
        self._pipe: _Pipe | None = None
        self._thread: threading.Thread | None = None
        self._ids = itertools.count(1)
        self.connections = 0  # connections made (tests and the benchmark read it)
        # Loop thread only:
        self.views: dict[str, SessionView] = {}  # by HOST:SLUG
        self.version = 0  # moves when views or the status change
        self.status = HostStatus(host.name, False, time.time(), "", None)
        self._pending: dict[int, Reply] = {}

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"cbos-host-{self.name}")
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._outbox.put(None)
        pipe = self._pipe
        if pipe is not None:
            with contextlib.suppress(Exception):
                pipe.close()
        if self._thread is not None:
            self._thread.join(10)

    # -- the link thread -----------------------------------------------------------------

    def _put(self, kind: str, value: Any) -> None:
        self._inbox.put((kind, value))
        self._wake()

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            seen = self.connections  # (counted once a greeting came)
            error = self._connect_once()
            if self._stop.is_set():
                return
            if self.connections > seen or error is None:
                attempt = 0  # a connection that worked: the next try comes soon again
            delay = BACKOFF[min(attempt, len(BACKOFF) - 1)]
            attempt += 1
            self._put("down", (error or f"{self.name}: the connection ended",
                               time.time() + delay))
            self._stop.wait(delay)

    def _connect_once(self) -> str | None:
        """One connection, until it ends; the error text, or None after a clean session."""
        # A fresh outbox: requests queued for a connection that dropped are never sent on
        # the next one (their callers were told they failed).
        self._outbox = queue.SimpleQueue()
        try:
            pipe = self._pipe = _Pipe(self.config, self.host)
        except CbosError as exc:
            return str(exc)
        writer = threading.Thread(target=self._write, args=(pipe, self._outbox), daemon=True,
                                  name=f"cbos-host-out-{self.name}")
        stream = pipe.lines()
        hello_seen = False
        try:
            hello = _read_line(stream)
            if hello is None or hello.get("type") != "sessions":
                return pipe.why()
            hello_seen = True
            self.connections += 1
            bare = [v["slug"] for v in hello.get("sessions", []) if isinstance(v, dict)
                    and isinstance(v.get("slug"), str) and ":" not in v["slug"]]
            with self._lock:
                since = {slug: ring.end for slug, ring in self._rings.items() if slug in bare}
                if self.connections > 1:
                    # Sessions that appeared while the link was down: from their start.
                    since.update({slug: 0 for slug in bare if slug not in since})
            # Resume every known stream where it stopped: no gap, and (offsets are
            # checked below) no duplicate.
            pipe.send(pr.request("subscribe", SUBSCRIBE_ID, sessions=["*"], since=since))
            writer.start()
            self._put("up", hello)
            while (message := _read_line(stream)) is not None:
                if message["type"] == "subscribed" and message.get("id") == SUBSCRIBE_ID:
                    self._started(message.get("offsets"))
                elif message["type"] == "stream":
                    chunk = self._chunk(message)
                    if chunk is not None:
                        self._put("chunk", chunk)
                else:
                    self._put("event", message)
            return pipe.why() if not self._stop.is_set() else None
        except (OSError, ValueError):
            return pipe.why()
        finally:
            self._outbox.put(None)  # ends this connection's writer
            if hello_seen:
                writer.join(5)
            pipe.close()
            self._pipe = None

    def _write(self, pipe: _Pipe, outbox: queue.SimpleQueue[str | None]) -> None:
        while (text := outbox.get()) is not None:
            try:
                pipe.send(text)
            except (OSError, ValueError):
                return

    def _started(self, offsets: Any) -> None:
        """Where each stream stood when the subscription began: a session that prints
        nothing before a drop still resumes from there."""
        if not isinstance(offsets, dict):
            return
        with self._lock:
            for slug, offset in offsets.items():
                if isinstance(slug, str) and isinstance(offset, int) and ":" not in slug \
                        and slug not in self._rings:
                    ring = self._rings[slug] = _Ring(self._buffer_bytes)
                    ring.end = offset

    def _chunk(self, message: dict[str, Any]) -> logs.Chunk | None:
        """A stream message as a chunk named HOST:SLUG, trimmed of anything seen already."""
        slug, data, offset = message.get("session"), message.get("data"), message.get("offset")
        if not isinstance(slug, str) or not isinstance(data, str) \
                or not isinstance(offset, int) or ":" in slug:
            return None
        raw = data.encode("utf-8", "surrogatepass")
        gap = bool(message.get("gap"))
        with self._lock:
            ring = self._rings.get(slug)
            if ring is None:
                ring = self._rings[slug] = _Ring(self._buffer_bytes)
            if not gap and offset <= ring.end:
                return None  # all of it was delivered before the connection dropped
            if not gap and offset - len(raw) < ring.end:
                raw = raw[ring.end - (offset - len(raw)):]  # the part not delivered yet
                data = raw.decode("utf-8", "replace")
            ring.add(raw, offset)
        ts = message.get("ts")
        return logs.Chunk(f"{self.name}:{slug}", data, raw, offset,
                          float(ts) if isinstance(ts, int | float) else time.time(), gap)

    # -- the loop thread -----------------------------------------------------------------

    def drain(self) -> tuple[bool, list[logs.Chunk]]:
        """Apply what the link read: (views or status changed, new output)."""
        changed, chunks = False, []
        while True:
            try:
                kind, value = self._inbox.get_nowait()
            except queue.Empty:
                break
            if kind == "chunk":
                chunks.append(value)
            elif kind == "event":
                changed = self._event(value) or changed
            elif kind == "up":
                self.views = self._views_of(value.get("sessions", []))
                self.status = HostStatus(self.name, True, time.time(), "", None)
                changed = True
            elif kind == "down":
                error, retry_at = value
                if self.status.up or self.status.error != error or not self.status.since:
                    since = time.time() if self.status.up or not self.status.error \
                        else self.status.since
                    self.status = HostStatus(self.name, False, since, error, retry_at)
                else:
                    self.status = HostStatus(self.name, False, self.status.since, error,
                                             retry_at)
                pending, self._pending = self._pending, {}
                for reply in pending.values():
                    reply(None, error)
                changed = True
        if changed:
            self.version += 1
        return changed, chunks

    def _views_of(self, items: Any) -> dict[str, SessionView]:
        views: dict[str, SessionView] = {}
        for item in items if isinstance(items, list) else ():
            try:
                view = pr.view_from_json(item, self.name)
            except pr.BadEvent as exc:
                log.warning("%s: ignoring a session: %s", self.name, exc)
                continue
            views[view.slug] = view
        return views

    def _event(self, message: dict[str, Any]) -> bool:
        kind = message["type"]
        ident = message.get("id")
        if isinstance(ident, int) and ident in self._pending:
            reply = self._pending.pop(ident)
            if kind == "error":
                reply(None, f"{self.name}: {message.get('message')}")
            else:
                reply(message, "")
        if kind in ("session_created", "session_update"):
            with contextlib.suppress(pr.BadEvent):
                view = pr.view_from_json(message.get("session"), self.name)
                if self.views.get(view.slug) != view:
                    self.views[view.slug] = view
                    return True
        elif kind == "session_deleted":
            return self.views.pop(f"{self.name}:{message.get('slug')}", None) is not None
        elif kind == "sessions" and ident is None:
            self.views = self._views_of(message.get("sessions", []))
            return True
        return False

    def request(self, kind: str, reply: Reply, **fields: Any) -> None:
        """Send a request (loop thread); ``reply(message, "")`` or ``reply(None, error)``
        comes later on the loop thread, or at once when the host is down."""
        if not self.status.up:
            reply(None, self.status.error or f"{self.name}: not connected yet; try again in "
                                              "a moment")
            return
        ident = next(self._ids)
        try:
            text = pr.request(kind, ident, **fields)
        except pr.BadRequest as exc:
            reply(None, str(exc))
            return
        self._pending[ident] = reply
        self._outbox.put(text)

    def offset(self, slug: str) -> int:
        with self._lock:
            ring = self._rings.get(slug)
            return ring.end if ring else 0

    def names(self) -> list[str]:
        with self._lock:
            return [f"{self.name}:{slug}" for slug in self._rings]

    def reader(self, slug: str) -> Callable[[int, int], tuple[bytes, int, bool]]:
        def read(offset: int, limit: int) -> tuple[bytes, int, bool]:
            with self._lock:
                ring = self._rings.get(slug)
                return ring.read(offset, limit) if ring else (b"", 0, offset > 0)
        return read

    def output(self, slug: str) -> bytes:
        with self._lock:
            ring = self._rings.get(slug)
            return bytes(ring.data) if ring else b""
