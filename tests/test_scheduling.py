"""Scheduling: the loop thread (the TUI's urwid loop, `cbos serve`'s select) never runs a
subprocess, an fsync or a sleep; a person's actions, screen reads, refreshes and slow scans
each have their own worker lane, so a project scan never delays a send; and output read
in bounded rounds gives the loop back between them."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cbos import config as config_mod
from cbos import engine as engine_mod
from cbos import projects
from cbos.tmux import Tmux
from tests.test_ui import Cli, Harness, prompts, start_session
from tests.test_ui import harness as harness  # a fixture: the App on a canvas screen
from tests.test_ui import prompt_log as prompt_log  # a fixture: the fake's prompt record

PACKAGE = str(Path(engine_mod.__file__).resolve().parent)


def test_a_slow_project_scan_does_not_delay_a_send(
        cli: Cli, harness: Harness, tmux: Tmux, tmp_path: Path, prompt_log: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    start_session(cli, tmux, tmp_path, "ALPHA")
    gate = threading.Event()
    scanning = threading.Event()

    def slow_find(roots: Any) -> Iterator[Any]:  # a scan of a slow disk: held open
        scanning.set()
        gate.wait(60)
        return iter(())

    monkeypatch.setattr(projects, "find", slow_find)
    h = harness
    h.app.start()
    try:
        h.wait(lambda t: "ALPHA" in t and "Claude Code" in t, "ALPHA listed and previewed")
        h.keys("c")  # the project scan starts, and does not end
        assert scanning.wait(10), "the scan started"
        h.keys("esc", "enter", *"SAY while scanning", "enter")
        h.wait(lambda t: "sent to ALPHA" in t, "the send went out while the scan runs")
        assert prompts(prompt_log) == ["SAY while scanning"]
        assert not gate.is_set()
    finally:
        gate.set()


class LoopSpy:
    """Subprocesses, fsyncs and sleeps that cbos code runs on the watched thread."""

    def __init__(self) -> None:
        self.thread: int | None = None
        self.seen: list[str] = []

    def note(self, what: str) -> None:
        if threading.get_ident() != self.thread:
            return
        stack = traceback.extract_stack()[:-2]
        ours = [f for f in stack if f.filename.startswith(PACKAGE)]
        if ours:
            self.seen.append(f"{what} from {Path(ours[-1].filename).name}:"
                             f"{ours[-1].name}:{ours[-1].lineno}")


@pytest.fixture
def loop_spy(monkeypatch: pytest.MonkeyPatch) -> LoopSpy:
    spy = LoopSpy()
    real_init, real_fsync, real_sleep = subprocess.Popen.__init__, os.fsync, time.sleep

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        spy.note(f"subprocess {args[0]!r:.60}")
        real_init(self, *args, **kwargs)

    def fsync(fd: int) -> None:
        spy.note("fsync")
        real_fsync(fd)

    def sleep(seconds: float) -> None:
        spy.note(f"sleep({seconds})")
        real_sleep(seconds)

    monkeypatch.setattr(subprocess.Popen, "__init__", init)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(time, "sleep", sleep)
    return spy


def cbos_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`cbos ARGS` in a process of its own (its work is not the loop thread's)."""
    return subprocess.run([sys.executable, "-m", "cbos", *args], capture_output=True,
                          text=True, check=False, timeout=60)


def test_the_loop_thread_runs_no_subprocess_fsync_or_sleep(
        loop_spy: LoopSpy, harness: Harness, tmux: Tmux, tmp_path: Path,
        prompt_log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_mod, "REFRESH_EVERY", 0.3)
    monkeypatch.setattr(engine_mod, "PIPE_CHECK_EVERY", 0.0)
    h = harness
    h.app.start()  # the first look is synchronous, before the loop runs
    loop_spy.thread = threading.get_ident()
    project = tmp_path / "beta"
    project.mkdir()
    # A new session while the loop runs: adopted by a refresh, its conversation id written
    # to the registry (locked, fsynced), its pipe checked.
    made = cbos_cli("new", str(project), "--slug", "BETA")
    assert made.returncode == 0, made.stderr
    h.wait(lambda t: "BETA" in t and "Claude Code" in t, "BETA listed and previewed")
    config = config_mod.load()
    h.wait(lambda t: (config.sessions_file.exists()
                      and '"session_id": "' in config.sessions_file.read_text()
                      and "BETA" in config.sessions_file.read_text()),
           "BETA's conversation recorded")
    # A person's send; a dialog on screen (captures, the notifier); the log deleted (the
    # tail asks for a fresh pipe).
    h.keys("enter", *"SAY hello", "enter")
    h.wait(lambda t: "sent to BETA" in t, "sent")
    h.keys("esc", "enter", *f"WRITE {tmp_path / 'made.txt'}", "enter")
    h.wait(lambda t: "⚠ Do you want to create made.txt?" in t, "BETA asks for permission")
    config.log_path("BETA").unlink()
    h.wait(lambda t: config.log_path("BETA").exists(), "the pipe re-armed")
    h.keys("esc", "r")  # re-read everything
    h.step(0.5)
    assert loop_spy.seen == []


def test_a_flood_of_output_is_read_in_rounds_with_the_loop_between(
        tmux: Tmux, private_home: Path) -> None:
    """Each pass of the loop reads one round; the next round waits for the next pass (the
    loop's select sees the keyboard in between), however much is waiting."""
    config = config_mod.load()
    config_mod.ensure_dirs(config)
    log = config.log_path("FLOOD")
    log.write_bytes(b"")
    engine = engine_mod.Engine(config, tmux, notify=False)
    delivered: list[int] = []
    engine.output_listeners.append(lambda chunks: delivered.append(
        sum(len(c.data) for c in chunks)))
    try:
        engine.start()
        line = b"\x1b[32m%9d\x1b[0m flood line\r\n"
        written = b"".join(line % n for n in range(400_000))  # ~10 MB at once
        with log.open("ab") as out:
            out.write(written)
            passes = 0
            while not delivered or engine.tail.pending:
                passes += 1
                assert passes < 1000, "the flood was never read"
                ready, _, _ = select.select(engine.fds(), [], [], 5)
                assert ready, "nothing to do while output waits"
                before = len(delivered)
                for fd in ready:
                    engine.on_readable(fd)
                assert len(delivered) - before <= 1, "more than one round in one pass"
                if passes < 20:  # a pane that never pauses: inotify wakes every pass
                    more = line % (400_000 + passes)
                    out.write(more)
                    out.flush()
                    written += more
        assert len(delivered) >= 10_000_000 // engine_mod.READ_ROUND
        assert sum(delivered) == len(written), "every byte read, once"
    finally:
        engine.close()


def test_a_round_of_output_is_judged_by_its_first_lines() -> None:
    """Whether output is activity is answered at the first line that is, piece by piece;
    the answer is the same as for the whole text, however it is cut."""
    spinner = "\x1b[2K\x1b[1A\x1b[G✻ Thinking… (3s · ↓ 2 tokens)\x1b[0m\r\n"
    quiet = spinner * 5000  # far more than one piece
    assert len(quiet) > 10 * engine_mod.ACTIVITY_PIECE
    assert not engine_mod.is_activity(quiet)
    assert not engine_mod.is_activity("\x1b[2K\x1b[G\r\n  \x1b[1A")
    assert engine_mod.is_activity(quiet + "\x1b[32m⏺\x1b[0m Read src/a.ts\r\n")
    assert engine_mod.is_activity(quiet[:-2] + "x")  # the last line, with no line end
    flood = "".join(f"\x1b[32m{n:>9}\x1b[0m flood line\r\n" for n in range(20_000))
    assert engine_mod.is_activity(flood)
