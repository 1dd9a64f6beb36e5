"""The WebSocket server (cbos/web.py) against shared/protocol.md.

Each test starts a real Engine over a private tmux server and the server on port 0, runs
`serve_loop` (the same loop `cbos serve` runs) in a thread, and talks to it with the
websockets client (``proxy=None``) or, for handshake cases, raw sockets. Output is
produced either by fake claude sessions or by appending to a log in the stream directory,
which the engine's tail follows like any pane's log.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import pwd
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from cbos import config as config_mod
from cbos import logs, protocol, web
from cbos.engine import Engine
from cbos.errors import CbosError
from cbos.model import SessionView
from cbos.state import State
from cbos.tmux import Tmux
from cbos.web import WebServer
from tests.support import Cli, new_session, prompts, wait_until

Message = dict[str, Any]


# -- harness -------------------------------------------------------------------------------


class Harness:
    """Engine + server + the serve loop in a thread, as `cbos serve` runs them."""

    def __init__(self, tmux: Tmux, host: str = "127.0.0.1", **options: Any) -> None:
        self.config = config_mod.load()
        self.engine = Engine(self.config, tmux)
        self.server = WebServer(self.config, host, 0, **options)
        self.server.start()
        self.engine.start()
        self._stop_r, self._stop_w = os.pipe()
        self.thread = threading.Thread(target=web.serve_loop,
                                       args=(self.engine, self.server, self._stop_r),
                                       name="test-loop", daemon=True)
        self.thread.start()
        self.shutdown_took: float | None = None

    @property
    def port(self) -> int:
        return int(self.server.address.rsplit(":", 1)[1])

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/stream"

    @property
    def token(self) -> str:
        return self.config.token_file.read_text().strip()

    def log(self, slug: str) -> Path:
        return self.config.stream_dir / f"{slug}.log"

    def close(self) -> None:
        if self.shutdown_took is not None:
            return
        os.write(self._stop_w, b"x")
        self.thread.join(5)
        assert not self.thread.is_alive(), "the serve loop did not stop"
        started = time.monotonic()
        self.server.shutdown()
        self.shutdown_took = time.monotonic() - started
        self.engine.close()
        os.close(self._stop_r)
        os.close(self._stop_w)


@pytest.fixture
def start_web(tmux: Tmux) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def start(**options: Any) -> Harness:
        harness = Harness(tmux, **options)
        made.append(harness)
        return harness

    yield start
    for harness in made:
        harness.close()
        assert harness.shutdown_took is not None and harness.shutdown_took < 5.0
        assert harness.server.stopped_cleanly


@pytest.fixture
def quick_fake(quiet_fake: Path) -> Path:
    """The fake claude reports each prompt it receives here; its dialogs answer at once."""
    return quiet_fake


def client(harness: Harness, path: str = "/ws/stream", **options: Any) -> ClientConnection:
    options.setdefault("open_timeout", 5)
    return connect(f"ws://127.0.0.1:{harness.port}{path}", proxy=None, **options)


def recv(ws: ClientConnection, timeout: float = 10.0) -> Message:
    data = ws.recv(timeout=timeout)
    assert isinstance(data, str)
    message: Message = json.loads(data)
    return message


def expect(ws: ClientConnection, match: Callable[[Message], bool], timeout: float = 15.0,
           what: str = "a message") -> Message:
    """The first message matching ``match`` (others are skipped), or fail after timeout."""
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {what} within {timeout}s; saw types {seen[-20:]}")
        try:
            message = recv(ws, timeout=left)
        except TimeoutError:
            continue
        if match(message):
            return message
        seen.append(message.get("type", "?"))


def of_type(kind: str, **fields: Any) -> Callable[[Message], bool]:
    return lambda m: m.get("type") == kind and all(m.get(k) == v for k, v in fields.items())


def greeted(ws: ClientConnection) -> tuple[Message, Message]:
    """The two messages every client gets on connect, in order."""
    sessions = recv(ws)
    streams = recv(ws)
    assert sessions["type"] == "sessions" and streams["type"] == "available_streams"
    return sessions, streams


def ask(ws: ClientConnection, message: Message, timeout: float = 15.0) -> Message:
    """Send a request with an id; return the reply carrying that id."""
    ident = message.setdefault("id", f"req-{time.monotonic_ns()}")
    ws.send(json.dumps(message))
    return expect(ws, lambda m: "id" in m and m["id"] == ident, timeout,
                  f"reply to {message}")


def collect_stream(ws: ClientConnection, slug: str, end: int, timeout: float = 20.0
                   ) -> list[Message]:
    """Stream messages of ``slug`` until one reaches offset ``end``."""
    got: list[Message] = []
    deadline = time.monotonic() + timeout
    while not got or got[-1]["offset"] < end:
        left = deadline - time.monotonic()
        assert left > 0, f"stream of {slug} stopped at {got[-1]['offset'] if got else 0}/{end}"
        try:
            message = recv(ws, timeout=left)
        except TimeoutError:
            continue
        if message["type"] == "stream" and message["session"] == slug:
            got.append(message)
    return got


def check_contiguous(messages: list[Message], start: int, content: bytes) -> None:
    """Messages cover ``content`` from ``start`` exactly: in order, no gap, no overlap."""
    offset = start
    for message in messages:
        data = message["data"].encode("utf-8")
        assert message["offset"] == offset + len(data), (offset, message["offset"])
        assert not message.get("gap")
        offset = message["offset"]
    assert b"".join(m["data"].encode() for m in messages) == content[start:offset]


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as handle:
        handle.write(data)


def lines(first: int, count: int, width: int = 60) -> bytes:
    """Numbered lines with some multi-byte characters, so cuts inside them would show."""
    return b"".join(f"{n:07d} é€😀 {'x' * width}\n".encode() for n in range(first,
                                                                         first + count))


def wait_composer(harness: Harness, ws: ClientConnection, slug: str) -> None:
    def ready() -> bool:
        reply = ask(ws, {"type": "get_buffer", "session": slug})
        return reply["type"] == "buffer" and "❯\u00a0" in reply["data"]
    wait_until(ready, timeout=20, message=f"{slug} shows its composer")


# -- raw handshakes ------------------------------------------------------------------------


def handshake_request(port: int, path: str = "/ws/stream", host: str | None = "DEFAULT",
                      headers: tuple[str, ...] = ()) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    parts = [f"GET {path} HTTP/1.1"]
    if host is not None:
        parts.append(f"Host: {f'127.0.0.1:{port}' if host == 'DEFAULT' else host}")
    parts += ["Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
              "Sec-WebSocket-Version: 13", *headers, "", ""]
    return "\r\n".join(parts).encode("latin-1")


def raw_status(port: int, path: str = "/ws/stream", host: str | None = "DEFAULT",
               headers: tuple[str, ...] = ()) -> tuple[int, str]:
    """(HTTP status, response body) of one opening handshake over a raw socket."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(handshake_request(port, path, host, headers))
        data = b""
        while b"\r\n\r\n" not in data:
            more = sock.recv(4096)
            if not more:
                break
            data += more
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if status != 101:
            sock.settimeout(2)
            try:
                while more := sock.recv(4096):
                    body += more
            except OSError:
                pass
        return status, body.decode("utf-8", "replace")


def masked_text(text: str) -> bytes:
    """A client text frame (clients must mask)."""
    payload = text.encode()
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x81])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def as_user(name: str, work: Callable[[], str]) -> str:
    """Run ``work`` in a forked child that has become user ``name``; return what it says."""
    entry = pwd.getpwnam(name)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no exec (this python is not readable by that user)
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
            os.write(write_fd, f"{os.getuid()} {work()}".encode())
        except BaseException as exc:
            os.write(write_fd, f"error {exc!r}".encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as handle:
        said = handle.read().decode()
    os.waitpid(pid, 0)
    return said


needs_root = pytest.mark.skipif(os.getuid() != 0,
                                reason="acting as another local user needs root")


# -- pure parts ------------------------------------------------------------------------------


class HostCase(NamedTuple):
    host: str
    ok: bool


@pytest.mark.parametrize("case", [
    HostCase("localhost", True), HostCase("localhost:32205", True),
    HostCase("LOCALHOST:1", True), HostCase("127.0.0.1", True), HostCase("127.0.0.1:80", True),
    HostCase("127.1.2.3:9", True), HostCase("[::1]", True), HostCase("[::1]:32205", True),
    HostCase("evil.example.com", False), HostCase("evil.example.com:32205", False),
    HostCase("localhost.evil.example", False), HostCase("10.0.0.1:32205", False),
    HostCase("[::ffff:10.0.0.1]:1", False), HostCase("::1", False), HostCase("", False),
    HostCase("127.0.0.1:80:80", False), HostCase("0.0.0.0", False),
], ids=lambda c: c.host or "empty")
def test_loopback_host(case: HostCase) -> None:
    assert web.loopback_host(case.host) is case.ok


def test_big_chunks_are_cut_between_characters() -> None:
    raw = ("é€😀" * 40_000).encode()  # 9 bytes a round; no cut lands on a boundary by luck
    chunk = logs.Chunk("S", raw.decode(), raw, 1000 + len(raw), 1.0, gap=True)
    messages = [json.loads(t) for t in protocol.stream_messages(chunk, piece=1000)]
    assert len(messages) > 300
    assert "".join(m["data"] for m in messages) == raw.decode()
    assert all("\ufffd" not in m["data"] for m in messages)
    assert messages[0]["gap"] and not any(m.get("gap") for m in messages[1:])
    check_contiguous([{**m, "gap": False} for m in messages], 1000, b"\0" * 1000 + raw)


class ContextCase(NamedTuple):
    state: State
    reason: str
    last: str
    context: str


@pytest.mark.parametrize("case", [
    ContextCase(State.WAITING, 'done: "Tests pass. Next?"', "", "Tests pass. Next?"),
    ContextCase(State.WAITING, 'done: "clipped…" · background: 1 shell running',
                "The whole reply,\nnot clipped.", "The whole reply,\nnot clipped."),
    ContextCase(State.PERMISSION, "asks to use Write: src/auth.ts", "old reply",
                "asks to use Write: src/auth.ts"),
    ContextCase(State.PERMISSION, "from Claude's status file: permission prompt", "",
                "permission prompt"),
    ContextCase(State.WAITING, "interrupted (Esc)", "", "interrupted (Esc)"),
])
def test_waiting_context(case: ContextCase) -> None:
    view = SessionView("S", "/p", case.state, case.reason, 0.0, None, None, "S:0.0", "%1",
                       False)
    assert protocol.waiting_context(view, case.last) == case.context


def test_token_file_is_private_created_once_and_replaced_if_exposed(
        config: config_mod.Config) -> None:
    path = config.token_file
    token = web.load_token(path)
    assert len(token) >= 43 and path.stat().st_mode & 0o777 == 0o600
    assert web.load_token(path) == token  # reused
    path.chmod(0o644)
    fresh = web.load_token(path)
    assert fresh != token and path.stat().st_mode & 0o777 == 0o600
    path.unlink()
    path.symlink_to(path.with_name("elsewhere"))
    assert web.load_token(path) != fresh and not path.is_symlink()
    assert not path.with_name("elsewhere").exists()


# -- connecting, listing, sessions from any source -------------------------------------------


def test_connect_lists_sessions_then_announces_new_ones_from_any_source(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path,
        start_web: Callable[..., Harness]) -> None:
    new_session(cli, tmp_path, "ALPHA")
    harness = start_web()
    with client(harness, path="/") as ws:  # "/" is an alias of /ws/stream
        sessions, streams = greeted(ws)
        (alpha,) = sessions["sessions"]
        assert alpha["slug"] == "ALPHA" and alpha["path"] == str((tmp_path / "alpha").resolve())
        assert {"state", "reason", "since", "pid", "claude_session_id", "tmux"} <= set(alpha)
        assert streams["sessions"] == ["ALPHA"]
        # A session started by someone else (the CLI here) is announced to every client.
        with client(harness) as other:
            greeted(other)
            new_session(cli, tmp_path, "BETA")
            for each in (ws, other):
                created = expect(each, of_type("session_created"), what="session_created")
                assert created["session"]["slug"] == "BETA" and "id" not in created
        listed = ask(ws, {"type": "list_sessions", "id": 7})
        assert listed["type"] == "sessions" and listed["id"] == 7
        assert sorted(s["slug"] for s in listed["sessions"]) == ["ALPHA", "BETA"]


def test_send_types_exactly_and_streams_the_reply(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path, quick_fake: Path,
        start_web: Callable[..., Harness]) -> None:
    new_session(cli, tmp_path, "CHAT")
    harness = start_web()
    with client(harness) as ws:
        greeted(ws)
        wait_composer(harness, ws, "CHAT")
        subscribed = ask(ws, {"type": "subscribe", "sessions": ["*"], "id": "s"})
        assert subscribed["type"] == "subscribed" and subscribed["sessions"] == ["CHAT"]
        text = "SAY it's 100% «fine»; -n $HOME `x` \\ \"q\""
        reply = ask(ws, {"type": "send", "session": "CHAT", "text": text, "id": 1})
        assert reply == {"type": "send_result", "session": "CHAT", "success": True, "id": 1}
        wait_until(lambda: prompts(quick_fake) == [text], message="the prompt arrived")
        said = ""
        while "«fine»" not in said:
            said += expect(ws, of_type("stream", session="CHAT"), what="stream")["data"]
        # The older client form, with "slug".
        reply = ask(ws, {"type": "send_input", "slug": "CHAT", "text": "SAY two", "id": 2})
        assert reply["type"] == "send_result" and reply["success"] is True
        wait_until(lambda: prompts(quick_fake) == [text, "SAY two"], message="second prompt")


def test_waiting_and_permission_are_announced_with_context(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path, quick_fake: Path,
        start_web: Callable[..., Harness]) -> None:
    project = new_session(cli, tmp_path, "TURN")
    harness = start_web()
    with client(harness) as ws:
        greeted(ws)
        wait_composer(harness, ws, "TURN")
        assert ask(ws, {"type": "send", "session": "TURN",
                        "text": "SAY All done, the tests pass."})["success"]
        update = expect(ws, lambda m: m["type"] == "session_update"
                        and m["session"]["state"] == "waiting", what="update to waiting")
        assert update["session"]["slug"] == "TURN"
        waiting = expect(ws, of_type("session_waiting", slug="TURN"), what="session_waiting")
        assert waiting["context"] == "All done, the tests pass."

        target = project / "made.txt"
        assert ask(ws, {"type": "send", "session": "TURN", "text": f"WRITE {target}"})[
            "success"]
        asking = expect(ws, of_type("session_waiting", slug="TURN"), what="permission")
        assert "Write" in asking["context"] and "made.txt" in asking["context"]
        # Typing now would answer the dialog: refused, with a reason.
        refused = ask(ws, {"type": "send", "session": "TURN", "text": "hello"})
        assert refused["success"] is False and "cbos answer TURN" in refused["error"]

        # v2: the SESSION carries the dialog and its host; the screen comes rendered with
        # its size; `answer` picks an option.
        def dialog() -> Message | None:
            # The PermissionRequest hook can announce the dialog a moment before its
            # options have been read off the screen: wait for them.
            for view in ask(ws, {"type": "list_sessions"})["sessions"]:
                if view["slug"] == "TURN" and view["dialog"] and view["dialog"]["options"]:
                    return dict(view)
            return None
        view = wait_until(dialog, timeout=20, message="the dialog in the SESSION")
        assert view["host"] is None and view["dialog"]["options"][0]["number"] == 1
        assert view["dialog"]["options"][0]["label"].startswith("Yes")
        screen = ask(ws, {"type": "get_screen", "session": "TURN"})
        assert screen["type"] == "screen" and screen["cols"] > 0 and screen["rows"] > 0
        assert "made.txt" in screen["data"]
        answered = ask(ws, {"type": "answer", "session": "TURN", "choice": "1"})
        assert answered == {"type": "answer_result", "session": "TURN", "success": True,
                            "id": answered["id"]}
        wait_until(target.exists, timeout=20, message="the answered write happened")
        again = ask(ws, {"type": "answer", "session": "TURN", "choice": "yes"})
        assert again["success"] is False and "no dialog" in again["error"]


def test_interrupt_buffer_create_and_delete(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path, quick_fake: Path,
        start_web: Callable[..., Harness]) -> None:
    harness = start_web()
    project = tmp_path / "made"
    project.mkdir()
    with client(harness) as ws, client(harness) as other:
        greeted(ws)
        greeted(other)
        created = ask(ws, {"type": "create_session", "slug": "MADE", "path": str(project),
                           "id": "c1"})
        assert created["type"] == "session_created" and created["session"]["slug"] == "MADE"
        seen = expect(other, of_type("session_created"), what="broadcast")
        assert seen["session"]["slug"] == "MADE" and "id" not in seen
        wait_composer(harness, ws, "MADE")

        taken = ask(ws, {"type": "create_session", "slug": "MADE", "path": str(project)})
        assert taken["type"] == "error" and "taken" in taken["message"]

        assert ask(ws, {"type": "send", "session": "MADE", "text": "SLOW 30"})["success"]
        wait_until(lambda: "SLOW 30" in ask(ws, {"type": "get_buffer", "slug": "MADE"})[
            "data"], message="SLOW runs")
        stopped = ask(ws, {"type": "interrupt", "session": "MADE", "id": None})
        assert stopped == {"type": "interrupt_result", "session": "MADE", "success": True,
                           "id": None}
        wait_until(lambda: "Interrupted" in ask(ws, {"type": "get_buffer",
                                                     "slug": "MADE"})["data"],
                   message="claude shows the interrupt")

        deleted = ask(ws, {"type": "delete_session", "slug": "MADE", "id": 9})
        assert deleted == {"type": "session_deleted", "slug": "MADE", "id": 9}
        assert expect(other, of_type("session_deleted", slug="MADE"), what="deleted")
        gone = ask(ws, {"type": "interrupt", "session": "MADE"})
        assert gone["type"] == "error" and "MADE" in gone["message"]


# -- streaming ------------------------------------------------------------------------------


def test_every_subscriber_gets_all_output_in_order(
        tmux: Tmux, start_web: Callable[..., Harness]) -> None:
    harness = start_web()
    log = harness.log("LOGA")
    append(log, b"")
    wait_until(lambda: "LOGA" in harness.engine.tail.slugs(), message="tail follows LOGA")
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(client(harness)) for _ in range(3)]
        for ws in clients[:2]:
            greeted(ws)
            assert ask(ws, {"type": "subscribe", "sessions": ["*"]})["type"] == "subscribed"
        greeted(clients[2])
        named = ask(clients[2], {"type": "subscribe", "sessions": ["LOGA"]})
        assert named["sessions"] == ["LOGA"] and named["offsets"] == {"LOGA": 0}
        for n in range(40):  # many small writes and a few big ones
            append(log, lines(n * 1000, 1000 if n % 10 == 0 else 3))
        content = log.read_bytes()
        for ws in clients:
            check_contiguous(collect_stream(ws, "LOGA", len(content)), 0, content)
        # Unsubscribed, a client gets no more of it; the others do.
        assert ask(clients[2], {"type": "unsubscribe", "sessions": ["LOGA"]})[
            "type"] == "unsubscribed"
        append(log, b"after\n")
        end = len(content) + 6
        check_contiguous(collect_stream(clients[0], "LOGA", end), len(content),
                         log.read_bytes())
        marker = ask(clients[2], {"type": "list_sessions"})
        assert marker["type"] == "sessions"  # in order: nothing of LOGA came before it


def test_resume_with_since_replays_then_goes_live_without_overlap(
        tmux: Tmux, start_web: Callable[..., Harness]) -> None:
    harness = start_web()
    log = harness.log("RES")
    append(log, lines(0, 2000))
    wait_until(lambda: harness.engine.tail.offset("RES") == log.stat().st_size,
               message="the tail read RES")
    with client(harness) as ws:
        greeted(ws)
        ask(ws, {"type": "subscribe", "sessions": ["RES"]})
        append(log, lines(2000, 50))
        got = collect_stream(ws, "RES", log.stat().st_size)
        resume_at = got[-1]["offset"]
    # Disconnected: more output comes, and keeps coming while the client resubscribes.
    append(log, lines(3000, 3000))
    stop = threading.Event()

    def writer() -> None:
        n = 10_000
        while not stop.is_set() and n < 10_400:
            append(log, lines(n, 1))
            n += 1
            time.sleep(0.002)  # a steady trickle, so live chunks race the replay

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        with client(harness) as ws:
            greeted(ws)
            ws.send(json.dumps({"type": "subscribe", "sessions": ["RES"],
                                "since": {"RES": resume_at}, "id": "r"}))
            reply = recv(ws)
            assert reply["type"] == "subscribed" and reply["id"] == "r"
            assert reply["offsets"]["RES"] >= resume_at
            thread.join()
            final = log.stat().st_size
            got = collect_stream(ws, "RES", final)
            check_contiguous(got, resume_at, log.read_bytes())
            # Replaying from 0 gives the whole log, also contiguous.
            ask(ws, {"type": "unsubscribe", "sessions": ["RES"]})
            ws.send(json.dumps({"type": "subscribe", "sessions": ["RES"],
                                "since": {"RES": 0}}))
            assert recv(ws)["type"] == "subscribed"
            check_contiguous(collect_stream(ws, "RES", final), 0, log.read_bytes())
    finally:
        stop.set()
        thread.join()


def test_subscribe_without_since_goes_live_exactly_where_it_says(
        tmux: Tmux, start_web: Callable[..., Harness]) -> None:
    harness = start_web()
    log = harness.log("LIVE")
    append(log, lines(0, 100))
    wait_until(lambda: "LIVE" in harness.engine.tail.slugs(), message="tail follows LIVE")
    stop = threading.Event()

    def writer() -> None:  # output keeps coming while the client subscribes
        n = 1000
        while not stop.is_set():
            append(log, lines(n, 1))
            n += 1
            stop.wait(0.001)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        with client(harness) as ws:
            greeted(ws)
            start = ask(ws, {"type": "subscribe", "sessions": ["LIVE"]})["offsets"]["LIVE"]
            wait_until(lambda: log.stat().st_size > start + 5000, message="more output")
            stop.set()
            thread.join()
            got = collect_stream(ws, "LIVE", log.stat().st_size)
            check_contiguous(got, start, log.read_bytes())
    finally:
        stop.set()
        thread.join()


def test_since_from_another_numbering_replays_what_is_kept_marked_as_a_gap(
        tmux: Tmux, start_web: Callable[..., Harness]) -> None:
    harness = start_web()
    log = harness.log("OLD")
    append(log, lines(0, 10))
    wait_until(lambda: harness.engine.tail.offset("OLD") == log.stat().st_size,
               message="the tail read OLD")
    with client(harness) as ws:
        greeted(ws)
        ws.send(json.dumps({"type": "subscribe", "sessions": ["OLD"],
                            "since": {"OLD": 10**9}}))
        assert recv(ws)["type"] == "subscribed"
        first = recv(ws)
        assert first["type"] == "stream" and first["gap"] is True
        first["gap"] = False
        check_contiguous([first], 0, log.read_bytes())


def test_slow_reader_is_closed_1008_and_others_are_not_delayed(
        tmux: Tmux, start_web: Callable[..., Harness]) -> None:
    harness = start_web(queue_limit=2 << 20, stall_grace=30)
    log = harness.log("FLOOD")
    append(log, b"")
    wait_until(lambda: "FLOOD" in harness.engine.tail.slugs(), message="tail follows FLOOD")
    # This one stops reading: websockets' client stops taking frames off the socket once
    # two messages wait unread.
    with client(harness, max_queue=(2, 1)) as slow, client(harness) as fast:
        for ws in (slow, fast):
            greeted(ws)
            assert ask(ws, {"type": "subscribe", "sessions": ["FLOOD"]})["type"] == "subscribed"
        block = lines(0, 1000, width=200)  # ~220 KB
        fast_got: list[Message] = []
        for n in range(64):  # ~14 MB: beyond the socket buffers and the outbox
            append(log, block)
            # The fast client keeps up (this process also runs the server: a reader
            # thread racing a writer that never waits would lose to the GIL, not to I/O).
            fast_got += collect_stream(fast, "FLOOD", len(block) * (n + 1))
        content = log.read_bytes()
        check_contiguous(fast_got, 0, content)
        wait_until(lambda: harness.server.overflows == 1, message="the slow client overflowed")
        # It gets what was already on its way, then the close with 1008 and a reason.
        got: list[Message] = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                got.append(recv(slow))
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        assert "since" in closed.value.rcvd.reason
        stream = [m for m in got if m["type"] == "stream"]
        check_contiguous(stream, 0, content)
        resume = stream[-1]["offset"] if stream else 0
        assert resume < len(content)
        # It reconnects and resumes where it stopped: nothing lost, nothing twice.
        with client(harness) as again:
            greeted(again)
            again.send(json.dumps({"type": "subscribe", "sessions": ["FLOOD"],
                                   "since": {"FLOOD": resume}}))
            assert recv(again)["type"] == "subscribed"
            check_contiguous(collect_stream(again, "FLOOD", len(content)), resume, content)
        # The fast client never noticed.
        assert ask(fast, {"type": "list_sessions"})["type"] == "sessions"


def test_a_stalled_client_is_cut_after_the_grace(
        tmux: Tmux, start_web: Callable[..., Harness]) -> None:
    harness = start_web(queue_limit=256 << 10, stall_grace=0.5)
    log = harness.log("CUT")
    append(log, b"")
    wait_until(lambda: "CUT" in harness.engine.tail.slugs(), message="tail follows CUT")
    port = harness.port
    with socket.socket() as deaf, client(harness) as bystander:
        deaf.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        deaf.connect(("127.0.0.1", port))
        deaf.sendall(handshake_request(port))
        assert b" 101 " in deaf.recv(200)
        deaf.sendall(masked_text(json.dumps({"type": "subscribe", "sessions": ["*"]})))
        greeted(bystander)
        wait_until(lambda: len(harness.server.backlogs()) == 2, message="both connected")
        # Small writes, each delivered before the next: the writer fills the socket and
        # blocks in send(); only then does the outbox grow past its limit. (One burst over
        # the limit would overflow an idle writer, whose close frame has its own timeout.)
        block = lines(0, 200, width=200)
        for _ in range(400):
            append(log, block)
            size = log.stat().st_size
            wait_until(lambda size=size: harness.engine.tail.offset("CUT") == size,
                       message="read")
            if harness.server.overflows:
                break
        assert harness.server.overflows == 1
        # It never reads its close frame, and its writer is stuck in send(): half a second
        # later its socket is cut and its threads end, long before any shutdown.
        wait_until(lambda: len(harness.server.backlogs()) == 1, timeout=5,
                   message="the stalled client was cut")
        assert ask(bystander, {"type": "list_sessions"})["type"] == "sessions"


def test_shutdown_is_quick_with_stalled_clients(
        tmux: Tmux, start_web: Callable[..., Harness]) -> None:
    harness = start_web(queue_limit=64 << 20)
    log = harness.log("STALL")
    append(log, b"")
    wait_until(lambda: "STALL" in harness.engine.tail.slugs(), message="tail follows STALL")
    port = harness.port
    with contextlib.ExitStack() as stack:
        # One that never finishes its handshake, and one that subscribes and never reads.
        stack.enter_context(socket.create_connection(("127.0.0.1", port)))
        deaf = stack.enter_context(socket.socket())
        deaf.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        deaf.connect(("127.0.0.1", port))
        deaf.sendall(handshake_request(port))
        assert b" 101 " in deaf.recv(200)
        deaf.sendall(masked_text(json.dumps({"type": "subscribe", "sessions": ["*"]})))
        # And a websockets client that stops taking frames off its socket.
        stalled = stack.enter_context(client(harness, max_queue=(1, 0)))
        greeted(stalled)
        stalled.send(json.dumps({"type": "subscribe", "sessions": ["*"]}))
        live = stack.enter_context(client(harness))
        greeted(live)
        block = lines(0, 1000, width=200)
        for _ in range(40):
            append(log, block)
        assert log.stat().st_size > 6 << 20
        wait_until(lambda: sum(1 for b in harness.server.backlogs() if b > 0) >= 2,
                   message="two writers blocked with data queued")
        harness.close()
        assert harness.shutdown_took is not None and harness.shutdown_took < 5.0
        assert harness.server.stopped_cleanly  # no thread of it is left behind
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                live.recv(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001


# -- bad input ------------------------------------------------------------------------------


class Bad(NamedTuple):
    frame: str | bytes
    says: str


BAD = [
    Bad("{not json", "not valid JSON"),
    Bad(b"\x00\x01binary", "binary frames"),
    Bad("[1, 2]", "JSON object"),
    Bad('"just a string"', "JSON object"),
    Bad("{}", '"type"'),
    Bad('{"type": 5}', '"type"'),
    Bad('{"type": "launch_missiles"}', "unknown message type"),
    Bad('{"type": "subscribe"}', '"sessions"'),
    Bad('{"type": "subscribe", "sessions": "AUTH"}', '"sessions"'),
    Bad('{"type": "subscribe", "sessions": [1]}', "string"),
    Bad('{"type": "subscribe", "sessions": ["NOPE"]}', "no session named 'NOPE'"),
    Bad('{"type": "subscribe", "sessions": ["*"], "since": {"X": -1}}', "byte offset"),
    Bad('{"type": "subscribe", "sessions": ["*"], "since": {"X": 1.5}}', "byte offset"),
    Bad('{"type": "subscribe", "sessions": ["*"], "since": [1]}', '"since"'),
    Bad('{"type": "send", "session": "NOPE", "text": "hi"}', "no session named 'NOPE'"),
    Bad('{"type": "send", "session": "X"}', '"text"'),
    Bad('{"type": "send", "session": "X", "text": ["hi"]}', '"text"'),
    Bad('{"type": "send", "session": "X", "text": "a\\u001b[201~b"}', "control character"),
    Bad('{"type": "send", "session": "A", "slug": "B", "text": "x"}', "disagree"),
    Bad('{"type": "send", "text": "x"}', '"session"'),
    Bad('{"type": "interrupt", "session": 42}', "string"),
    Bad('{"type": "get_buffer", "session": "NOPE"}', "no session named"),
    Bad('{"type": "delete_session", "slug": "NOPE"}', "no session named"),
    Bad('{"type": "create_session", "slug": "X"}', '"path"'),
    Bad('{"type": "create_session", "slug": "X", "path": "relative/dir"}', "relative"),
    Bad('{"type": "unsubscribe", "sessions": ["NOPE"]}', "no session named"),
    Bad('{"type": "answer", "session": "NOPE", "choice": "1"}', "no session named"),
    Bad('{"type": "answer", "session": "X"}', '"choice"'),
    Bad('{"type": "answer", "session": "X", "choice": "1; rm -rf"}', '"choice"'),
    Bad('{"type": "get_screen", "session": "NOPE"}', "no session named"),
    Bad('{"type": "get_screen"}', '"session"'),
    Bad('{"type": "list_sessions", "id": {"a": 1}}', '"id"'),
    Bad('{"type": "list_sessions", "id": NaN}', '"id"'),
    Bad('{"type": "list_sessions", "id": "\\ud800"}', "surrogate"),
    Bad("[" * 100_000, "nested too deeply"),
    Bad('{"a":' * 50_000 + "1" + "}" * 50_000, "nested too deeply"),
]


def test_bad_input_gets_an_error_and_the_connection_stays(
        tmux: Tmux, start_web: Callable[..., Harness]) -> None:
    harness = start_web()
    with client(harness) as ws, client(harness) as bystander:
        greeted(ws)
        greeted(bystander)
        for bad in BAD:
            ws.send(bad.frame)
            reply = recv(ws)
            assert reply["type"] == "error", (bad, reply)
            assert bad.says in reply["message"], (bad, reply)
        # An id is echoed even when the rest is wrong.
        ws.send(json.dumps({"type": "nope", "id": "keep"}))
        assert recv(ws) == {"type": "error", "id": "keep", "message": (
            "unknown message type 'nope'; known types: answer, create_session, "
            "delete_session, get_buffer, get_screen, interrupt, list_sessions, send, "
            "send_input, subscribe, unsubscribe")}
        assert ask(ws, {"type": "list_sessions"})["type"] == "sessions"
        assert ask(bystander, {"type": "list_sessions"})["type"] == "sessions"


def test_oversized_frame_closes_1009_and_nothing_else(
        tmux: Tmux, start_web: Callable[..., Harness]) -> None:
    harness = start_web()
    with client(harness) as ws, client(harness) as bystander:
        greeted(ws)
        greeted(bystander)
        ws.send(json.dumps({"type": "send", "session": "X", "text": "x" * (1 << 20)}))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        assert ask(bystander, {"type": "list_sessions"})["type"] == "sessions"
    with client(harness) as again:  # and the server still takes new clients
        greeted(again)


def test_a_flood_is_served_in_order_without_hurting_others(
        tmux: Tmux, start_web: Callable[..., Harness]) -> None:
    harness = start_web()
    with client(harness) as ws, client(harness) as bystander:
        greeted(ws)
        greeted(bystander)
        count = 3000
        for n in range(count):  # sent without reading a single reply
            ws.send(json.dumps({"type": "list_sessions", "id": n}) if n % 2
                    else '{"type": "bogus", "id": ' + str(n) + "}")
        started = time.monotonic()
        assert ask(bystander, {"type": "list_sessions"})["type"] == "sessions"
        assert time.monotonic() - started < 2.0
        ids = [recv(ws)["id"] for _ in range(count)]
        assert ids == list(range(count))


# -- security -------------------------------------------------------------------------------


def test_origin_is_refused_unless_allowed(
        tmux: Tmux, start_web: Callable[..., Harness]) -> None:
    harness = start_web(allowed_origins=["http://localhost:3000"])
    port = harness.port
    assert raw_status(port)[0] == 101  # no Origin: not a browser
    status, body = raw_status(port, headers=("Origin: http://evil.example",))
    assert status == 403 and "--allow-origin" in body
    assert raw_status(port, headers=("Origin: null",))[0] == 403
    assert raw_status(port, headers=("Origin: http://localhost:3000",))[0] == 101
    assert raw_status(port, headers=("Origin: http://localhost:3000",
                                     "Origin: http://evil.example"))[0] == 403
    # A web page on the allowed origin works through the real client too.
    with client(harness, origin="http://localhost:3000") as ws:
        greeted(ws)
    with pytest.raises(InvalidStatus) as refused:
        client(harness, origin="http://localhost:3001")
    assert refused.value.response.status_code == 403


@pytest.mark.parametrize("host,status", [
    ("evil.example.com", 403), ("evil.example.com:{port}", 403), ("192.168.1.1:{port}", 403),
    ("localhost:{port}", 101), ("127.0.0.1:{port}", 101), ("[::1]:{port}", 101),
    (None, 400),
])
def test_host_header_must_be_loopback(host: str | None, status: int, tmux: Tmux,
                                      start_web: Callable[..., Harness]) -> None:
    harness = start_web()
    header = host.format(port=harness.port) if host else None
    assert raw_status(harness.port, host=header)[0] == status


def test_ipv6_loopback(tmux: Tmux, start_web: Callable[..., Harness]) -> None:
    harness = start_web(host="::1")
    assert harness.server.address.startswith("[::1]:")
    with connect(f"ws://[::1]:{harness.port}/ws/stream", proxy=None, open_timeout=5) as ws:
        greeted(ws)


def test_unknown_path_is_404(tmux: Tmux, start_web: Callable[..., Harness]) -> None:
    harness = start_web()
    assert raw_status(harness.port, path="/admin")[0] == 404
    assert raw_status(harness.port, path="/ws/stream?x=1")[0] == 101


@needs_root
def test_another_local_user_needs_the_token(
        tmux: Tmux, start_web: Callable[..., Harness]) -> None:
    harness = start_web()
    port, token = harness.port, harness.token

    def attempt(*headers: str, path: str = "/ws/stream") -> Callable[[], str]:
        return lambda: str(raw_status(port, path=path, headers=headers)[0])

    nobody = pwd.getpwnam("nobody").pw_uid
    assert as_user("nobody", attempt()) == f"{nobody} 401"
    assert as_user("nobody", attempt("Authorization: Bearer wrong")) == f"{nobody} 401"
    assert as_user("nobody", attempt(f"Authorization: Bearer {token}")) == f"{nobody} 101"
    assert as_user("nobody", attempt(path=f"/ws/stream?token={token}")) == f"{nobody} 101"
    # The same forked path as the user running cbos needs no token.
    assert as_user(pwd.getpwuid(os.getuid()).pw_name, attempt()) == f"{os.getuid()} 101"


def test_peer_uid_finds_the_owner_of_the_client_socket() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener, \
            socket.create_connection(listener.getsockname()) as _outgoing:
        accepted, _ = listener.accept()
        with accepted:
            assert web.peer_uid(accepted) == os.getuid()
    with socket.create_server(("::1", 0), family=socket.AF_INET6) as listener, \
            socket.create_connection(listener.getsockname()[:2]) as _outgoing:
        accepted, _ = listener.accept()
        with accepted:
            assert web.peer_uid(accepted) == os.getuid()


def test_wrong_token_is_refused_even_for_the_owner(
        tmux: Tmux, start_web: Callable[..., Harness]) -> None:
    harness = start_web()
    port, token = harness.port, harness.token
    assert raw_status(port, headers=("Authorization: Bearer nope",))[0] == 401
    assert raw_status(port, path="/ws/stream?token=nope")[0] == 401
    assert raw_status(port, headers=("Authorization: Basic eDp5",))[0] == 401
    assert raw_status(port, headers=(f"Authorization: Bearer {token}",),
                      path="/ws/stream?token=other")[0] == 401
    assert raw_status(port, headers=(f"Authorization: Bearer {token}",))[0] == 101


def test_remote_bind_needs_the_option_and_then_the_token_everywhere(
        tmux: Tmux, start_web: Callable[..., Harness], config: config_mod.Config) -> None:
    with pytest.raises(CbosError, match=r"not a loopback address.*--allow-remote"):
        WebServer(config, "0.0.0.0", 0).start()
    with pytest.raises(CbosError, match="not a loopback address"):
        WebServer(config, "example.com", 0).start()
    harness = start_web(host="0.0.0.0", allow_remote=True)
    port, token = harness.port, harness.token
    status, body = raw_status(port)
    assert status == 401 and "token" in body  # even the owner, even over loopback
    assert raw_status(port, host=f"my-box.lan:{port}",
                      headers=(f"Authorization: Bearer {token}",))[0] == 101
    assert raw_status(port, path=f"/?token={token}")[0] == 101
    assert raw_status(port, headers=("Origin: http://evil.example",
                                     f"Authorization: Bearer {token}"))[0] == 403
    with client(harness, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        greeted(ws)


def test_token_never_reaches_the_logs(
        tmux: Tmux, start_web: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("CBOS_LOG_LEVEL", "DEBUG")
    caplog.set_level(logging.DEBUG, logger="cbos")
    # `cbos`'s logger does not propagate once the CLI has set up logging (other tests).
    monkeypatch.setattr(logging.getLogger("cbos"), "handlers",
                        [*logging.getLogger("cbos").handlers, caplog.handler])
    harness = start_web()
    token = harness.token
    assert raw_status(harness.port, path=f"/ws/stream?token={token}")[0] == 101
    assert raw_status(harness.port, path=f"/ws/stream?token={token}x")[0] == 401
    with client(harness, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        greeted(ws)
    # The server's records (cbos.*, websockets' server logger included); the test's own
    # client logs its request headers at DEBUG, which is not the server's doing.
    server_records = [r for r in caplog.records if r.name.startswith("cbos")]
    assert any("refused" in r.getMessage() for r in server_records)  # the log did run
    assert not any(token in r.getMessage() for r in server_records)
    own = harness.config.own_log
    assert not own.exists() or token not in own.read_text()


def test_port_in_use_is_a_clear_error(tmux: Tmux, config: config_mod.Config) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(CbosError, match=f"port {port} on 127.0.0.1 is in use"):
            WebServer(config, "127.0.0.1", port).start()


# -- cbos serve ----------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_cbos_serve_runs_headless_and_stops_cleanly(
        signum: int, tmux: Tmux, cli: Cli, fake_claude: Path, tmp_path: Path) -> None:
    new_session(cli, tmp_path, "HEAD")
    proc = subprocess.Popen([sys.executable, "-m", "cbos", "serve", "--port", "0"],
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        match = re.search(r"ws://127\.0\.0\.1:(\d+)/ws/stream", line)
        assert match, line
        assert str(config_mod.load().token_file) in line
        with connect(f"ws://127.0.0.1:{match.group(1)}/ws/stream", proxy=None,
                     open_timeout=5) as ws:
            sessions, _ = greeted(ws)
            assert [s["slug"] for s in sessions["sessions"]] == ["HEAD"]
            # The token is in its file only: not in argv, not in tmux's environment.
            token = config_mod.load().token_file.read_text().strip()
            assert token.encode() not in Path(f"/proc/{proc.pid}/cmdline").read_bytes()
            assert token not in "\n".join(tmux.cmd("show-environment", "-g"))
            assert token not in "\n".join(tmux.cmd("show-environment", "-t", "=HEAD"))
            assert token.encode() not in Path(f"/proc/{proc.pid}/environ").read_bytes()
            started = time.monotonic()
            proc.send_signal(signum)
            assert proc.wait(timeout=10) == 0
            assert time.monotonic() - started < 5
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    ws.recv(timeout=5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cbos_serve_does_not_import_urwid(tmp_path: Path) -> None:
    script = ("import sys; import cbos.web; "
              "print('urwid' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, cwd=tmp_path).stdout
    assert out.strip() == "False"


def test_the_server_is_a_context_manager(config: config_mod.Config, tmux: Tmux) -> None:
    with WebServer(config, "127.0.0.1", 0) as server:
        port = int(server.address.rsplit(":", 1)[1])
        with connect(f"ws://127.0.0.1:{port}/ws/stream", proxy=None, open_timeout=5):
            pass
    assert server.stopped_cleanly is True
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
