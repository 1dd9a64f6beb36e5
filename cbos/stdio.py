"""`cbos serve --stdio`: the protocol as JSON lines on stdin and stdout, nothing listening.

This is what another machine's cbos runs through ``ssh HOST cbos serve --stdio``: whoever
can start the command is already this user, so there is no token and no socket. One
client (the other end of the pipes), one :class:`~cbos.hub.Hub`, one engine; it ends,
leaving nothing running, when stdin closes (or on SIGTERM / SIGINT / SIGHUP).

stdout carries only protocol lines: fd 1 is pointed at stderr at start, so a stray print
can never corrupt the stream; the protocol goes out on a private copy of the old fd 1.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from typing import IO, Any

from cbos import protocol as pr
from cbos.config import Config
from cbos.engine import Engine
from cbos.hub import IN_FLIGHT, Hub, Peer, serve_loop, stop_pipe
from cbos.tmux import Tmux

log = logging.getLogger(__name__)

PIPE_QUEUE_LIMIT = 32 << 20  # characters waiting for the pipe; more ends the connection (resume)
DRAIN_SECONDS = 10.0  # after stdin closes, how long requests in flight may take


class _StdioPeer(Peer):
    """The one client: lines on a pipe. Closing it ends the server."""

    def __init__(self, out: IO[bytes], stop: threading.Event, stop_w: int,
                 on_overflow: Any) -> None:
        super().__init__(PIPE_QUEUE_LIMIT, 5.0, on_overflow)
        self._out = out
        self._stop, self._stop_w = stop, stop_w

    def send_text(self, text: str) -> None:
        self._out.write(text.encode("utf-8") + b"\n")
        self._out.flush()

    def send_close(self, code: int, reason: str) -> None:
        if code != 1000:  # an overflow or a shutdown: say why before the pipe closes
            with contextlib.suppress(OSError, ValueError):
                self.send_text(pr.dump({"type": "error", "message": reason, "code": code}))
        self.cut()

    def cut(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            os.write(self._stop_w, b"s")


def _read_lines(source: IO[bytes], peer: _StdioPeer, hub: Hub) -> None:
    """The reader thread: one request per line until EOF; then the server stops."""
    try:
        while not peer.closing:
            line = source.readline(pr.MAX_MESSAGE + 1)
            if not line:
                break
            if len(line) > pr.MAX_MESSAGE and not line.endswith(b"\n"):
                while line and not line.endswith(b"\n"):  # skip the rest of the line
                    line = source.readline(pr.MAX_MESSAGE)
                kind, request = "error", {"text": pr.error({}, "the message is longer than "
                                                               f"{pr.MAX_MESSAGE} bytes")}
            elif not line.strip():
                continue
            else:
                try:
                    kind, request = "request", pr.parse_request(line)
                except pr.BadRequest as exc:
                    kind, request = "error", {"text": pr.error(exc.request, str(exc))}
            while not peer.slots.acquire(timeout=0.25):
                if peer.closing:
                    return
            hub.submit(peer, kind, request)
    except (OSError, ValueError):
        peer.cut()
        return
    # End of input: answer what was asked (bounded), send what is queued, then stop.
    deadline = time.monotonic() + DRAIN_SECONDS
    for _ in range(IN_FLIGHT):
        if not peer.slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
            break
    hub.submit(peer, "close", {})  # through the loop: after the greeting and every reply


def serve_stdio(config: Config, tmux: Tmux, stdin: IO[bytes] | None = None,
                stdout: IO[bytes] | None = None) -> int:
    """Serve the protocol on the given pipes (default: this process's stdin and stdout)."""
    if stdout is None:
        out_fd = os.dup(sys.stdout.fileno())
        os.set_inheritable(out_fd, False)
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints go to stderr
        stdout = os.fdopen(out_fd, "wb", buffering=0)
    source = stdin if stdin is not None else sys.stdin.buffer
    stop = threading.Event()
    hub = Hub(str(config.own_log))
    peers: list[_StdioPeer] = []

    def on_signal(signum: int) -> None:
        for peer in peers:
            peer.cut()

    with stop_pipe((signal.SIGINT, signal.SIGTERM, signal.SIGHUP), on_signal) as (stop_r,
                                                                                  stop_w):
        peer = _StdioPeer(stdout, stop, stop_w, hub.overflowed)
        peers.append(peer)
        engine: Engine | None = None
        try:
            # Another machine's control room shows its own notifications and status line,
            # and reaches its own hosts: this side links to none (two machines listing each
            # other would otherwise ssh into each other without end).
            engine = Engine(config, tmux, notify=False, status_line=False, hosts=())
            engine.error_listeners.append(lambda text: log.warning("%s", text))
            engine.start()
            fds = hub.attach(engine)
            writer = peer.writer = threading.Thread(target=peer.write_loop,
                                                    name="cbos-stdio-out", daemon=True)
            writer.start()
            hub.submit(peer, "hello", {})
            reader = threading.Thread(target=_read_lines, args=(source, peer, hub),
                                      name="cbos-stdio-in", daemon=True)
            reader.start()
            serve_loop(engine, fds, hub.on_readable, stop_r)
        finally:
            peer.finish()
            hub.detach()
            if engine is not None:
                engine.close()
            with contextlib.suppress(OSError, ValueError):
                stdout.close()
    return 0
