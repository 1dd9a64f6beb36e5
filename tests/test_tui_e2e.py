"""The real `cbos` TUI in a tmux pane, driven with send-keys and read with capture-pane.

Two private tmux servers: the sessions' (the `tmux` fixture, where fake claudes run) and a
host server whose pane runs ``python -m cbos -L <sessions socket>``, like a terminal
would. The host is another server, so `a` takes the outside-tmux path: the TUI pauses,
``tmux attach`` runs in its terminal, and it comes back when the client detaches.
"""

from __future__ import annotations

import os
import shlex
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cbos.tmux import Tmux
from tests.support import Cli, prompts, start_session, wait_until

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def prompt_log(quiet_fake: Path) -> Path:
    return quiet_fake


@pytest.fixture
def host() -> Iterator[Tmux]:
    """A second private tmux server: the terminal the TUI runs in."""
    server = Tmux(f"cbos-tui-{uuid.uuid4().hex[:8]}")
    yield server
    path = server.cmd("display-message", "-p", "#{socket_path}", check=False)
    server.cmd("kill-server", check=False)
    if path:
        Path(path[0]).unlink(missing_ok=True)


def cbos_command(socket: str, *options: str) -> str:
    """The shell command that runs `cbos`, then says how it exited."""
    words = " ".join(shlex.quote(o) for o in options)
    return (f"cd {shlex.quote(str(REPO))} && {shlex.quote(sys.executable)} -m cbos "
            f"-L {shlex.quote(socket)} {words}; echo cbos-exited-$?; sleep 600")


def cbos_env(socket: str, home: Path) -> list[str]:
    """``-e`` arguments for new-session: the test's private home and cbos settings."""
    env = {name: os.environ[name] for name in os.environ
           if name.startswith(("CBOS_", "XDG_")) or name in ("PATH", "LANG", "LC_ALL")}
    env.update(HOME=str(home), PYTHONPATH=str(REPO), CBOS_TMUX_SOCKET=socket)
    return [a for k, v in env.items() for a in ("-e", f"{k}={v}")]


class Tui:
    """A terminal: one pane of a tmux server, read with capture-pane."""

    def __init__(self, host: Tmux, pane: str) -> None:
        self.host = host
        self.pane = pane

    @classmethod
    def start(cls, host: Tmux, name: str, command: str, env: list[str]) -> Tui:
        pane = host.cmd("new-session", "-d", "-s", name, "-x", "120", "-y", "32", *env,
                        "-P", "-F", "#{pane_id}", command)[0]
        return cls(host, pane)

    def screen(self) -> str:
        return "\n".join(self.host.cmd("capture-pane", "-p", "-t", self.pane))

    def wait(self, condition: Callable[[str], bool], message: str,
             timeout: float = 20.0) -> str:
        def check() -> str | None:
            screen = self.screen()
            return screen if condition(screen) else None
        try:
            return str(wait_until(check, timeout=timeout, message=message))
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the screen:\n{self.screen()}") from None

    def type(self, text: str) -> None:
        self.host.cmd("send-keys", "-t", self.pane, "-l", text)

    def key(self, *keys: str) -> None:
        self.host.cmd("send-keys", "-t", self.pane, *keys)

    def row(self, slug: str) -> str:
        """The list row of ``slug`` (the list is the left column when wide)."""
        for line in self.screen().splitlines()[1:]:
            left = line.split("│")[0]
            if left[2:].startswith(slug + " "):
                return left
        return ""


def test_the_tui_lists_previews_sends_interrupts_answers_attaches_and_kills(
        cli: Cli, fake_claude: Path, tmux: Tmux, host: Tmux, tmp_path: Path,
        private_home: Path, prompt_log: Path) -> None:
    auth = start_session(cli, tmux, tmp_path, "AUTH").project
    start_session(cli, tmux, tmp_path, "DOCS")
    assert tmux.socket_name is not None
    tui = Tui.start(host, "ui", cbos_command(tmux.socket_name),
                    cbos_env(tmux.socket_name, private_home))

    # The list, the counts, and the selected session's screen.
    text = tui.wait(lambda s: "cbos · 2 sessions" in s and "Claude Code" in s,
                    "the list and the preview")
    assert tui.row("AUTH").startswith("○ AUTH") and tui.row("DOCS").startswith("○ DOCS")
    assert "AUTH · " in text and "ws off" in text

    # Enter, type, Enter: the prompt reaches the fake, the reply shows in the preview.
    tui.key("Enter")
    tui.type("SAY hello from the tui; -x")
    tui.key("Enter")
    wait_until(lambda: prompts(prompt_log) == ["SAY hello from the tui; -x"],
               message="the fake got the prompt")
    tui.wait(lambda s: "● hello from the tui; -x" in s and "sent to AUTH" in s,
             "the reply in the preview")

    # Ctrl+C interrupts the session (and never quits cbos).
    tui.type("SLOW 30")
    tui.key("Enter")
    # (its first streamed line: an interrupt within ~20 ms of the prompt's hook is not
    # told apart from the prompt by the state inference, see CLOCK_SLACK in state.py)
    tui.wait(lambda s: tui.row("AUTH").startswith(("◐", "◑")) and "chunk 00" in s,
             "AUTH at work")
    tui.key("C-c")
    tui.wait(lambda s: "interrupted AUTH" in s and "interrupted" in tui.row("AUTH"),
             "AUTH interrupted")

    # A permission dialog: shown in the preview, answered with 1 from the TUI.
    tui.type("WRITE e2e.txt")
    tui.key("Enter")
    tui.wait(lambda s: "⚠ Do you want to create e2e.txt?" in s and "1-3 answer" in s
             and tui.row("AUTH").startswith("⚠"), "the dialog in the preview")
    tui.key("1")
    wait_until(lambda: (auth / "e2e.txt").exists(), message="the file written")
    tui.wait(lambda s: "answered AUTH: 1" in s and tui.row("AUTH").startswith("●"),
             "the answer said, AUTH waiting again")

    # a: outside tmux the TUI hands its terminal to `tmux attach`, and comes back.
    tui.key("Escape")  # alone: ESC and a key at once would read as Meta+key
    tui.wait(lambda s: "Enter type" in s, "back in the list")
    tui.key("a")
    tui.wait(lambda s: "cbos ·" not in s and "e2e.txt" in s, "attached to AUTH")
    tmux.cmd("detach-client", "-s", "AUTH")
    tui.wait(lambda s: "cbos · 2 sessions" in s and "back from AUTH" in s, "back in cbos")

    # x asks, y kills.
    tui.key("j")
    tui.wait(lambda s: "DOCS · " in s, "DOCS selected")
    tui.key("x")
    tui.wait(lambda s: "Kill DOCS? Its log stays." in s, "the confirmation")
    tui.key("y")
    tui.wait(lambda s: "killed DOCS" in s and not tui.row("DOCS"), "DOCS gone")
    assert "DOCS" not in tmux.session_names()

    # The tmux server gone: said, and the list comes back with the server.
    tmux.cmd("kill-server", check=False)
    tui.wait(lambda s: "tmux server not running" in s, "tmux gone said")
    start_session(cli, tmux, tmp_path, "AGAIN")
    tui.wait(lambda s: tui.row("AGAIN") != "" and "not running" not in s, "the list back")

    # q quits, with status 0, and leaves nothing on the terminal (work still running on
    # the engine's worker goes to cbos's log, not to stderr).
    tui.key("Enter")
    tui.type("SLOW 5")
    tui.key("Enter")
    tui.wait(lambda s: "sent to AGAIN" in s, "AGAIN streaming")
    tui.key("Escape")
    tui.wait(lambda s: "Enter type" in s, "back in the list")
    tui.key("q")
    text = tui.wait(lambda s: "cbos-exited-0" in s, "cbos exited cleanly")
    assert "Traceback" not in text and "Error" not in text


def test_popup_enter_switches_the_client_to_the_session_and_exits(
        cli: Cli, fake_claude: Path, tmux: Tmux, host: Tmux, tmp_path: Path,
        private_home: Path, prompt_log: Path) -> None:
    """`cbos --popup` inside tmux: Enter is switch-client, then cbos exits (the popup
    closes). Here the TUI runs in a window of the sessions' own server, and a client,
    attached from the host server's pane, looks at it."""
    start_session(cli, tmux, tmp_path, "AUTH")
    assert tmux.socket_name is not None
    socket = tmux.socket_name
    ui = Tui.start(tmux, "UI", cbos_command(socket, "--popup"), cbos_env(socket, private_home))
    client = Tui.start(host, "term", f"env -u TMUX tmux -L {shlex.quote(socket)} attach -t UI",
                       ["-e", f"HOME={private_home}"])
    client.wait(lambda s: "cbos · 1 session" in s and "Enter open" in s, "cbos in the popup")
    ui.key("Enter")
    client.wait(lambda s: "cbos ·" not in s and "Claude Code" in s, "the client on AUTH")
    ui.wait(lambda s: "cbos-exited-0" in s, "cbos exited after switching (a popup closes)")
