"""`cbos tail -f`, raw and rendered: nothing the pane writes while the command starts is
lost between the snapshot it prints first and the live read after it. Real tmux, real
pipe-pane, real files and inotify."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cbos import follow
from cbos.config import Config, ensure_dirs, touch_private
from cbos.tmux import SLUG_OPTION, Tmux
from tests.support import NumberedLines, wait_until


@pytest.fixture
def pane(tmux: Tmux, config: Config) -> Iterator[str]:
    """A session named FOL running `cat`, piped into its log as cbos pipes its own."""
    tmux.cmd("new-session", "-d", "-s", "FOL", "-x", "100", "-y", "30", "cat")
    [pane_id] = tmux.cmd("list-panes", "-t", "FOL", "-F", "#{pane_id}")
    tmux.set_pane_option(pane_id, SLUG_OPTION, "FOL")
    ensure_dirs(config)
    touch_private(config.log_path("FOL"))
    tmux.pipe(pane_id, config.log_path("FOL"))
    yield pane_id


def test_raw_follow_loses_nothing_written_while_it_starts(
        pane: str, config: Config, tmux: Tmux) -> None:
    out = bytearray()
    with NumberedLines(config.log_path("FOL")) as lines:
        proc = subprocess.Popen([sys.executable, "-m", "cbos", "tail", "FOL", "-f", "--raw",
                                 "--lines", "3"], stdout=subprocess.PIPE, env=os.environ.copy())
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)

        def enough() -> bool:
            out.extend(proc.stdout.read() or b"")  # type: ignore[union-attr]
            return len(lines.numbers(bytes(out))) > 300

        try:
            wait_until(enough, timeout=30, message="300 lines followed")
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    NumberedLines.assert_whole(NumberedLines.numbers(bytes(out)))


class PrintsAfterCapture(Tmux):
    """Real tmux; right after the first screen is read, the pane prints one more line and
    then nothing (it lands in the log before the capture returns)."""

    def __init__(self, socket_name: str | None, log: Path) -> None:
        super().__init__(socket_name)
        self.log = log
        self.captures = 0

    def capture(self, pane_id: str, colours: bool = True, lines: int | None = None) -> str:
        screen = super().capture(pane_id, colours, lines)
        self.captures += 1
        if self.captures == 1:
            self.send_text(pane_id, "MARKER", "FOL")
            wait_until(lambda: b"MARKER" in self.log.read_bytes(), message="in the log")
        return screen


def test_rendered_follow_sees_output_written_as_it_takes_the_first_screen(
        pane: str, config: Config, tmux: Tmux) -> None:
    probe = PrintsAfterCapture(tmux.socket_name, config.log_path("FOL"))
    out = io.StringIO()
    stop = threading.Event()
    thread = threading.Thread(target=follow.rendered,
                              args=(config, probe, "FOL", pane, False, None, out, stop))
    thread.start()
    try:
        wait_until(lambda: "MARKER" in out.getvalue(), timeout=15,
                   message="the line printed as the first screen was taken")
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
