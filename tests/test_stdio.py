"""`cbos serve --stdio` (cbos/stdio.py): the protocol as JSON lines, run as a real process
over a private tmux server, the way `ssh HOST cbos serve --stdio` runs it."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from cbos.tmux import Tmux
from tests.conftest import CliResult
from tests.support import new_session, wait_until

Cli = Callable[..., CliResult]
Message = dict[str, Any]


class Stdio:
    """A `cbos serve --stdio` child and a thread reading its lines into a queue."""

    def __init__(self, cwd: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "cbos", "serve", "--stdio"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, cwd=cwd)
        self.lines: queue.Queue[Message | None] = queue.Queue()
        self.raw: list[bytes] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.raw.append(line)
            self.lines.put(json.loads(line))
        self.lines.put(None)

    def send(self, message: Message | str) -> None:
        assert self.proc.stdin is not None
        text = message if isinstance(message, str) else json.dumps(message)
        self.proc.stdin.write(text.encode() + b"\n")
        self.proc.stdin.flush()

    def recv(self, timeout: float = 15.0) -> Message:
        message = self.lines.get(timeout=timeout)
        assert message is not None, "the server ended"
        return message

    def ask(self, message: Message, timeout: float = 20.0) -> Message:
        ident = message.setdefault("id", f"r{time.monotonic_ns()}")
        self.send(message)
        deadline = time.monotonic() + timeout
        while True:
            reply = self.recv(max(0.1, deadline - time.monotonic()))
            if reply.get("id") == ident:
                return reply

    def close(self) -> int:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def stdio(tmux: Tmux, tmp_path: Path) -> Iterator[Callable[[], Stdio]]:
    made: list[Stdio] = []

    def start() -> Stdio:
        made.append(Stdio(tmp_path))
        return made[-1]

    yield start
    for server in made:
        server.close()


def test_lines_in_lines_out_and_nothing_left_when_stdin_closes(
        cli: Cli, fake_claude: Path, quiet_fake: Path, tmux: Tmux, tmp_path: Path,
        stdio: Callable[[], Stdio]) -> None:
    new_session(cli, tmp_path, "PIPE")
    server = stdio()
    hello = server.recv()
    assert hello["type"] == "sessions"
    assert [(s["slug"], s["host"]) for s in hello["sessions"]] == [("PIPE", None)]
    assert server.recv()["type"] == "available_streams"
    # Bad input: an error line, and the server carries on.
    server.send("this is not json")
    assert "not valid JSON" in server.recv()["message"]
    assert server.ask({"type": "get_screen", "session": "NOPE"})["type"] == "error"
    # The screen, subscribe and a send whose reply streams back.
    def composer() -> bool:
        screen = server.ask({"type": "get_screen", "session": "PIPE"})
        return screen["type"] == "screen" and "❯" in screen["data"] and screen["cols"] > 0
    wait_until(composer, timeout=20, message="the composer on screen")
    subscribed = server.ask({"type": "subscribe", "sessions": ["*"]})
    assert subscribed["sessions"] == ["PIPE"]
    assert server.ask({"type": "send", "session": "PIPE", "text": "SAY over the pipe"})[
        "success"] is True
    wait_until(lambda: any(b"over the pipe" in line and b'"stream"' in line
                           for line in server.raw), timeout=20, message="the reply streamed")
    children = psutil.Process(server.proc.pid).children(recursive=True)
    # stdin closes: the server ends at once, exit 0, leaving no process behind.
    started = time.monotonic()
    assert server.close() == 0
    assert time.monotonic() - started < 10
    wait_until(lambda: not [c for c in children if c.is_running()
                            and c.status() != psutil.STATUS_ZOMBIE], timeout=10,
               message="no child left")
    assert server.proc.stderr is not None and server.proc.stderr.read() == b""


def test_requests_in_flight_are_answered_before_it_ends(tmux: Tmux, tmp_path: Path) -> None:
    lines = "".join(json.dumps({"type": "list_sessions", "id": n}) + "\n" for n in range(5))
    done = subprocess.run([sys.executable, "-m", "cbos", "serve", "--stdio"], input=lines,
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    replies = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r.get("id") for r in replies if r["type"] == "sessions"] == [None, 0, 1, 2, 3, 4]


def test_stray_prints_never_reach_the_protocol_stream(tmux: Tmux, tmp_path: Path) -> None:
    """A print from anywhere inside the server goes to stderr, not into the protocol."""
    script = ("import sys\n"
              "from cbos import engine\n"
              "start = engine.Engine.start\n"
              "def noisy(self):\n"
              "    print('stray words')\n"
              "    start(self)\n"
              "engine.Engine.start = noisy\n"
              "from cbos.cli import main\n"
              "sys.exit(main(['serve', '--stdio']))\n")
    done = subprocess.run([sys.executable, "-c", script], input="", capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "stray words" in done.stderr
    kinds = [json.loads(line)["type"] for line in done.stdout.splitlines()]
    assert kinds == ["sessions", "available_streams"]
