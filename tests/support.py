"""What many test files share: one retry helper, the fake claude's prompt log, a session
started the way a person would (`cbos new`, then its composer on screen), and a test
standing in for the engine's loop."""

from __future__ import annotations

import json
import re
import select
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from cbos import config as config_mod
from cbos import sessions
from cbos.tmux import Tmux
from tests.conftest import CliResult

T = TypeVar("T")
Cli = Callable[..., CliResult]
COMPOSER = "❯\u00a0"  # Claude's empty prompt line


def wait_until(condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.02,
               message: str = "") -> T:
    """Call ``condition`` until it returns something truthy; return that, or fail.

    Exceptions raised by ``condition`` count as "not yet" (the thing may not exist yet);
    the last one is reported if time runs out. Tests synchronise with this, never a sleep.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:  # retried, reported on timeout
            last_error = exc
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise AssertionError(f"timed out after {timeout}s: {message}{detail}")
        time.sleep(interval)


def received(path: Path) -> list[dict[str, Any]]:
    """Each prompt the fake claude reported to ``path`` (FAKE_CLAUDE_LOG), oldest first."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def prompts(path: Path) -> list[str]:
    """The text of each prompt the fake claude received."""
    return [entry["prompt"] for entry in received(path)]


class Started(NamedTuple):
    project: Path
    pane_id: str


def new_session(cli: Cli, tmp_path: Path, slug: str) -> Path:
    """``cbos new`` in a fresh project dir named after the slug; its path."""
    project = tmp_path / slug.lower()
    project.mkdir(exist_ok=True)
    result = cli("new", str(project), "--slug", slug)
    assert result.code == 0, result.err
    return project


def start_session(cli: Cli, tmux: Tmux, tmp_path: Path, slug: str,
                  timeout: float = 15.0) -> Started:
    """``cbos new`` in a fresh project dir, then wait until claude shows its composer
    (keys typed before that are lost)."""
    project = new_session(cli, tmp_path, slug)

    def composer() -> str | None:
        pane = sessions.find(tmux, config_mod.load(), slug).pane.pane_id
        return pane if COMPOSER in tmux.capture(pane, colours=False) else None

    pane = wait_until(composer, timeout=timeout, message=f"{slug} shows the composer")
    return Started(project, pane)


def pump(engine: Any, condition: Callable[[], Any], timeout: float, message: str) -> None:
    """Be the engine's loop (select on its fds, tick) until ``condition`` holds."""
    deadline = time.monotonic() + timeout
    last_tick = 0.0
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout}s: {message}"
        ready, _, _ = select.select(engine.fds(), [], [], 0.05)
        for fd in ready:
            engine.on_readable(fd)
        if time.monotonic() - last_tick >= 1.0:
            engine.tick()
            last_tick = time.monotonic()


class NumberedLines:
    """A thread appending ``line NNNNNN`` to a file every millisecond, for tests that start a
    follower while output is arriving: ``numbers(out)`` reads back what the follower
    printed, and ``assert_whole(numbers)`` checks that each line came once, in order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.written = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._write)

    def _write(self) -> None:
        with open(self.path, "ab", buffering=0) as f:
            while not self._stop.is_set():
                f.write(b"line %06d\n" % self.written)
                self.written += 1
                self._stop.wait(0.001)

    def __enter__(self) -> NumberedLines:
        self._thread.start()
        wait_until(lambda: self.written > 20, message="the writer runs")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @staticmethod
    def numbers(out: bytes) -> list[int]:
        return [int(n) for n in re.findall(rb"line (\d{6})\n", out)]

    @staticmethod
    def assert_whole(numbers: list[int]) -> None:
        assert len(numbers) >= 3
        missing = sorted(set(range(numbers[0], numbers[-1] + 1)) - set(numbers))
        assert not missing, f"lines lost between the backlog and the live tail: {missing[:10]}"
        assert numbers == sorted(set(numbers)), "a line printed twice"
