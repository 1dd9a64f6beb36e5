"""Other machines over SSH (cbos/hosts.py, cbos/cli/remote.py, the engine's links).

The "other machines" are real OpenSSH servers on loopback ports (tests/sshd.py) with
throwaway keys; each remote side runs this cbos through the host's ``command`` with its own
tmux socket, HOME and state dirs, and the fake claude.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from cbos import config as config_mod
from cbos import hosts
from cbos.engine import Engine
from cbos.errors import CbosError, ConfigError, UsageError
from cbos.hub import serve_loop
from cbos.logs import Chunk
from cbos.model import HostStatus, SessionView, stale
from cbos.state import State
from cbos.tmux import Tmux
from tests.conftest import CliResult
from tests.sshd import SshWorld
from tests.support import NumberedLines, wait_until

Cli = Callable[..., CliResult]


# -- fixtures --------------------------------------------------------------------------------


def configure(world: SshWorld, names: list[str], extra: str = "") -> config_mod.Config:
    world.configure(names, extra)
    return config_mod.load()


def remote_session(world: SshWorld, host: str, slug: str) -> Path:
    return world.new_session(host, slug)


def remote_log(world: SshWorld, host: str, slug: str) -> Path:
    return world.remote_home(host) / "state" / "cbos" / "logs" / f"{slug}.log"


# -- configuration and addressing (no ssh) ---------------------------------------------------


def write_config(text: str) -> None:
    directory = Path(os.environ["HOME"]) / ".config" / "cbos"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.toml").write_text(text)


@pytest.mark.parametrize(("table", "says"), [
    ('name = "box 1"\nssh = "box1"', "host name 'box 1' is not valid"),
    ('name = "-oProxy"\nssh = "box1"', "is not valid"),
    ('name = "box1"\nssh = "-oProxyCommand=touch /tmp/x"', "ssh destination"),
    ('name = "box1"\nssh = "box1 rm -rf ~"', "ssh destination"),
    ('name = "box1"\nssh = "a;b"', "ssh destination"),
    ('name = "box1"', "ssh is missing"),
    ('name = "box1"\nssh = "box1"\ncommand = ""', "command must be"),
    ('name = "box1"\nssh = "box1"\nport = 22', "unknown key 'port'"),
])
def test_bad_hosts_are_refused_with_the_file_and_the_host(table: str, says: str,
                                                          private_home: Path) -> None:
    write_config(f'log_level = "INFO"\n\n[[hosts]]\n{table}\n')
    with pytest.raises(ConfigError, match=says) as raised:
        config_mod.load()
    assert "config.toml:3: [[hosts]] #1" in str(raised.value)


def test_hosts_are_read_in_order_and_names_must_differ(private_home: Path) -> None:
    write_config('[[hosts]]\nname = "box1"\nssh = "dev@box1.example"\n\n'
                 '[[hosts]]\nname = "vm.2"\nssh = "ssh://me@vm2:2222"\n'
                 'command = "~/.local/bin/cbos"\n')
    config = config_mod.load()
    assert [(h.name, h.ssh, h.command) for h in config.hosts] == [
        ("box1", "dev@box1.example", "cbos"), ("vm.2", "ssh://me@vm2:2222",
                                               "~/.local/bin/cbos")]
    write_config('[[hosts]]\nname = "a"\nssh = "x"\n[[hosts]]\nname = "a"\nssh = "y"\n')
    with pytest.raises(ConfigError, match="a second host named 'a'"):
        config_mod.load()


def test_addresses_are_checked_before_any_ssh(private_home: Path) -> None:
    write_config('[[hosts]]\nname = "box1"\nssh = "box1"\n')
    config = config_mod.load()
    assert hosts.address(config, "AUTH") == hosts.Address(None, "AUTH")
    where = hosts.address(config, "box1:AUTH")
    assert (where.host and where.host.name, where.slug, where.name) == ("box1", "AUTH",
                                                                        "box1:AUTH")
    with pytest.raises(UsageError, match=r"no host named .box9.*hosts: box1"):
        hosts.address(config, "box9:AUTH")
    for bad in ("box1:", "box1:a;b", "box1:$(touch x)", "box1:a b", "box1:x:y"):
        with pytest.raises(UsageError, match="invalid slug"):
            hosts.address(config, bad)


def test_the_ssh_command_line(private_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config('[[hosts]]\nname = "box1"\nssh = "dev@box1"\ncommand = "env X=1 cbos"\n')
    config = config_mod.load()
    host = config.hosts[0]
    monkeypatch.setenv("CBOS_SSH_COMMAND", "ssh -F '/my dir/config' -i key")
    argv = hosts.ssh_argv(config, host, ["serve", "--stdio"])
    assert argv[:5] == ["ssh", "-F", "/my dir/config", "-i", "key"]
    assert argv[5] == "-T" and "BatchMode=yes" in argv and "ControlMaster=auto" in argv
    control = next(a for a in argv if a.startswith("ControlPath="))
    assert control.endswith("/%C") and os.stat(control[12:-3]).st_mode & 0o777 == 0o700
    assert argv[-3:] == ["--", "dev@box1", "env X=1 cbos serve --stdio"]
    assert hosts.ssh_argv(config, host, ["attach", "AUTH"], tty=True)[5] == "-t"
    for word in ("a;b", "$(x)", "--evil", "a b", ""):
        with pytest.raises(UsageError, match="cannot go on a remote command line"):
            hosts.ssh_argv(config, host, ["attach", word])
    monkeypatch.delenv("CBOS_SSH_COMMAND")
    assert hosts.ssh_argv(config, host, [])[0] == "ssh"


def test_host_status_line() -> None:
    at = time.mktime((2026, 1, 2, 12, 3, 0, 0, 0, -1))
    down = HostStatus("box1", False, at, "box1: box1 refused the connection", at + 8)
    assert down.line(now=at) == ("box1: unreachable since 12:03 — box1 refused the "
                                 "connection; retrying in 8s")
    assert HostStatus("box1", True, at, "").line() == "box1: connected"
    assert HostStatus("box1", False, at, "").line() == "box1: connecting…"


def test_a_down_hosts_sessions_are_shown_as_last_known() -> None:
    at = time.mktime((2026, 1, 2, 12, 3, 0, 0, 0, -1))
    view = SessionView(slug="box1:API", path="/p", state=State.WORKING, reason="running Bash",
                       since=at - 60, pid=7, claude_session_id="x", tmux="API:0.0",
                       pane_id="%1", adopted=False, host="box1")
    down = stale(view, HostStatus("box1", False, at, "box1: box1 refused the connection"))
    assert down.read_only and down.state is State.WORKING
    assert down.reason == "box1 unreachable since 12:03; last known: working · running Bash"
    assert stale(view, HostStatus("box1", False, at, "")) is view  # first connection


# -- the CLI against real sshd ---------------------------------------------------------------


def test_ls_lists_every_host_and_names_the_unreachable(
        world: SshWorld, cli: Cli, fake_claude: Path, quiet_fake: Path, tmux: Tmux,
        tmp_path: Path) -> None:
    world.add("box1")
    world.add("box2", start=False)  # configured, but nothing answers there
    remote_session(world, "box1", "FAR")
    local = tmp_path / "near"
    local.mkdir()
    assert cli("new", str(local), "--slug", "NEAR").code == 0
    configure(world, ["box1", "box2"])

    listed = cli("ls")
    assert listed.code == 0, listed.err
    head, *rows = listed.out.splitlines()
    assert head.split()[:2] == ["HOST", "SLUG"]
    cells = {tuple(row.split()[1:3]) for row in rows}
    assert ("box1", "box1:FAR") in cells and ("-", "NEAR") in cells
    assert "box2:" in listed.err and "refused the connection" in listed.err
    as_json = json.loads(cli("ls", "--json").out)
    assert {(v["host"], v["slug"]) for v in as_json} == {(None, "NEAR"), ("box1", "box1:FAR")}

    hosts_out = cli("hosts", "--json")
    assert hosts_out.code == 1  # one host is unreachable
    rows_json = {r["name"]: r for r in json.loads(hosts_out.out)}
    assert rows_json["box1"]["reachable"] and rows_json["box1"]["sessions"] == 1
    assert "refused" in rows_json["box2"]["error"]


def test_remote_sessions_are_driven_by_name(
        world: SshWorld, cli: Cli, fake_claude: Path, quiet_fake: Path, tmux: Tmux) -> None:
    world.add("box1")
    configure(world, ["box1"])
    project = world.remote_home("box1") / "proj"
    project.mkdir()
    made = cli("new", "--host", "box1", str(project), "--slug", "RED")
    assert made.code == 0, made.err
    assert made.out.strip() == "box1:RED"
    # It runs on the remote tmux server, not on ours.
    remote_socket = world.remote_env("box1")["CBOS_TMUX_SOCKET"]
    names = subprocess.run(["tmux", "-L", remote_socket, "list-sessions", "-F",
                            "#{session_name}"], capture_output=True, text=True).stdout
    assert "RED" in names
    assert "RED" not in "\n".join(tmux.cmd("list-sessions", "-F", "#{session_name}",
                                           check=False))

    def screen_shows(text: str) -> bool:
        shown = cli("buffer", "box1:RED")
        return shown.code == 0 and text in shown.out
    wait_until(lambda: screen_shows("❯"), timeout=30, message="the remote composer")
    secret = "SAY remote words $(touch /tmp/never) ; `x` 'q'"
    sent = cli("send", "box1:RED", secret)
    assert sent.code == 0, sent.err
    wait_until(lambda: screen_shows("remote words $(touch /tmp/never)"), timeout=30,
               message="the reply on the remote screen")
    assert not Path("/tmp/never").exists()
    waited = cli("wait", "box1:RED", "--state", "waiting", "--timeout", "30")
    assert waited.code == 0 and waited.out.startswith("box1:RED waiting"), waited
    raw = cli("buffer", "box1:RED", "--raw")
    assert "remote words" in raw.out

    # A dialog, answered by number through the protocol.
    target = project / "made.txt"
    assert cli("send", "box1:RED", f"WRITE {target}").code == 0
    wait_until(lambda: cli("wait", "box1:RED", "--state", "permission", "--timeout",
                           "5").code == 0, timeout=30, message="the permission dialog")
    refused = cli("send", "box1:RED", "typed into a dialog")
    assert refused.code == 1 and "cbos answer RED" in refused.err
    answered = cli("answer", "box1:RED", "1")
    assert answered.code == 0, answered.err
    wait_until(target.exists, timeout=30, message="the write the answer allowed")

    chat = cli("chat", "box1:RED", "SAY chatted over ssh", "--timeout", "60")
    assert chat.code == 0 and chat.out.strip() == "chatted over ssh", chat
    history = wait_until(lambda: "chatted over ssh" in cli("history", "box1:RED").out,
                         timeout=20, message="the remote history")
    assert history
    assert "no session named" in cli("history", "box1:NOPE").err
    assert cli("interrupt", "box1:RED").code == 0
    unknown = cli("send", "box1:NOPE", "hi")
    assert unknown.code == 2 and "no session named 'NOPE' on box1" in unknown.err
    killed = cli("kill", "box1:RED")
    assert killed.code == 0, killed.err
    wait_until(lambda: "RED" not in subprocess.run(
        ["tmux", "-L", remote_socket, "list-sessions", "-F", "#{session_name}"],
        capture_output=True, text=True).stdout, timeout=20, message="the remote kill")


def test_host_errors_in_words(world: SshWorld, cli: Cli, tmux: Tmux, tmp_path: Path) -> None:
    world.add("box1")
    world.add("nocbos")
    world.add("nokey")
    world.add("badkey")
    (world.servers["nokey"].root / "authorized_keys").write_text("")
    directory = Path(os.environ["HOME"]) / ".config" / "cbos"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.toml").write_text(
        world.toml(["box1", "nokey", "badkey"])
        + '\n[[hosts]]\nname = "nocbos"\nssh = "nocbos"\ncommand = "/nowhere/cbos"\n')
    # A known_hosts entry for badkey that is not its key: a changed host key.
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)],
                   check=True)
    port = world.servers["badkey"].port
    world.known_hosts.write_text(f"[127.0.0.1]:{port} "
                                 f"{other.with_suffix('.pub').read_text().split(' ', 2)[0]} "
                                 f"{other.with_suffix('.pub').read_text().split()[1]}\n")
    result = cli("hosts", "--json")
    rows = {r["name"]: r for r in json.loads(result.out)}
    assert rows["box1"]["reachable"]
    assert "was not found there" in rows["nocbos"]["error"]
    assert "[[hosts]]" in rows["nocbos"]["error"]
    assert "without a prompt" in rows["nokey"]["error"]
    assert "host key" in rows["badkey"]["error"]
    assert "box1" not in result.err


def test_repeated_commands_share_one_ssh_connection(
        world: SshWorld, cli: Cli, tmux: Tmux) -> None:
    server = world.add("box1")
    configure(world, ["box1"])
    for _ in range(3):
        assert cli("hosts").code == 0
    accepted = server.log.read_text().count("Accepted publickey")
    assert accepted == 1, server.log.read_text()
    hosts.stop_master(config_mod.load(), config_mod.load().hosts[0])


# -- the engine's link: the control room's view ----------------------------------------------


class Room:
    """An engine with hosts, run by the headless loop in a thread, collecting output."""

    def __init__(self, tmux: Tmux) -> None:
        self.engine = Engine(config_mod.load(), tmux, notify=False, status_line=False)
        self.chunks: list[Chunk] = []
        self.lock = threading.Lock()
        self.engine.output_listeners.append(self._got)
        self.engine.start()
        self._stop_r, self._stop_w = os.pipe()
        self.thread = threading.Thread(target=serve_loop, args=(
            self.engine, [], lambda fd: None, self._stop_r), daemon=True)
        self.thread.start()

    def _got(self, chunks: list[Chunk]) -> None:
        with self.lock:
            self.chunks.extend(chunks)

    def output(self, name: str) -> list[Chunk]:
        with self.lock:
            return [c for c in self.chunks if c.slug == name]

    def names(self) -> set[str]:
        return {v.slug for v in self.engine.snapshot().sessions}

    def status(self, host: str) -> HostStatus:
        return next(h for h in self.engine.snapshot().hosts if h.name == host)

    def close(self) -> None:
        os.write(self._stop_w, b"x")
        self.thread.join(10)
        self.engine.close()


@pytest.fixture
def room(tmux: Tmux) -> Iterator[Callable[[], Room]]:
    made: list[Room] = []

    def start() -> Room:
        made.append(Room(tmux))
        return made[-1]

    yield start
    for item in made:
        item.close()


def test_a_dropped_host_recovers_without_gap_or_duplicate(
        world: SshWorld, fake_claude: Path, quiet_fake: Path, tmux: Tmux,
        room: Callable[[], Room]) -> None:
    server = world.add("box1")
    remote_session(world, "box1", "BURST")
    configure(world, ["box1"])
    control = room()
    wait_until(lambda: "box1:BURST" in control.names(), timeout=30,
               message="the remote session on the board")
    assert control.status("box1").up
    wait_until(lambda: "box1:BURST" in control.engine.stream_names(), timeout=30,
               message="the link's subscription in place")
    log = remote_log(world, "box1", "BURST")
    wait_until(log.exists, timeout=20, message="the remote log")
    start = log.stat().st_size

    written: list[bytes] = []
    stop = threading.Event()

    def burst() -> None:
        number = 0
        while not stop.is_set() or number < 400:
            line = f"burst {number:06d} é€😀 {'x' * 50}\n".encode()
            with open(log, "ab") as handle:
                handle.write(line)
            written.append(line)
            number += 1
            time.sleep(0.002)
            if number >= 60000:  # (a bound: stop ends it once the link is back)
                return

    writer = threading.Thread(target=burst, daemon=True)
    writer.start()
    wait_until(lambda: len(control.output("box1:BURST")) > 5, timeout=20,
               message="output arriving before the cut")
    server.kill()  # mid-stream: the server, its connections, the remote `serve --stdio`
    wait_until(lambda: not control.status("box1").up, timeout=30, message="the link down")
    down = control.status("box1")
    assert down.line().startswith("box1: unreachable since ")
    # Its sessions stay listed, as what was last known: watch-only, said to be stale.
    view = wait_until(lambda: next(v for v in control.engine.snapshot().sessions
                                   if v.slug == "box1:BURST" and v.read_only),
                      timeout=30, message="the remote session marked stale")
    assert view.reason.startswith("box1 unreachable since ") and "last known: " in view.reason
    assert "refused" in down.error or "ended" in down.error or "ssh" in down.error
    # The remote session keeps running while the control room cannot see it.
    socket_name = world.remote_env("box1")["CBOS_TMUX_SOCKET"]
    assert "BURST" in subprocess.run(["tmux", "-L", socket_name, "list-sessions", "-F",
                                      "#{session_name}"], capture_output=True,
                                     text=True).stdout
    mark = len(written)  # the burst goes on while the link is down
    wait_until(lambda: len(written) >= mark + 50, message="lines written while it is down")
    server.start()
    stop.set()
    writer.join(60)
    wait_until(lambda: control.status("box1").up, timeout=60, message="the link back up")
    wait_until(lambda: not next(v for v in control.engine.snapshot().sessions
                                if v.slug == "box1:BURST").read_only,
               timeout=30, message="the remote session live again")
    content = b"".join(written)

    def whole() -> bool:
        got = b"".join(c.raw for c in control.output("box1:BURST"))
        return got.endswith(content[-200:])
    wait_until(whole, timeout=60, message="every line after the reconnect")
    chunks = control.output("box1:BURST")
    assert not any(c.gap for c in chunks)
    offsets = [c.offset for c in chunks]
    assert offsets == sorted(set(offsets)), "an offset went back: a duplicate"
    got = b"".join(c.raw for c in chunks)
    first_end = chunks[0].offset - len(chunks[0].raw)
    full = log.read_bytes()
    assert got == full[first_end:chunks[-1].offset]  # in order, each byte once
    assert content in got  # everything written, also while the link was down
    assert first_end <= start
    assert control.engine.links["box1"].connections == 2  # it did reconnect


def test_the_board_spans_hosts_and_actions_reach_them(
        world: SshWorld, fake_claude: Path, quiet_fake: Path, tmux: Tmux, cli: Cli,
        tmp_path: Path, room: Callable[[], Room]) -> None:
    world.add("box1")
    world.add("box2", start=False)
    remote_session(world, "box1", "FAR")
    local = tmp_path / "near"
    local.mkdir()
    assert cli("new", str(local), "--slug", "NEAR").code == 0
    configure(world, ["box1", "box2"])
    control = room()
    wait_until(lambda: {"NEAR", "box1:FAR"} <= control.names(), timeout=30,
               message="both machines' sessions on one board")
    view = control.engine.view("box1:FAR")
    assert view is not None and view.host == "box1" and view.bare == "FAR"
    wait_until(lambda: control.status("box2").error, timeout=30, message="box2's error")
    assert "refused the connection" in control.status("box2").line()

    results: list[Any] = []

    def act(call: Callable[[Callable[[Any], None]], None]) -> Any:
        results.clear()
        call(results.append)  # the engine calls back on the loop thread
        return wait_until(lambda: results and results[0], timeout=30, message="a reply")

    def screen() -> bool:
        outcome = act(lambda done: control.engine.buffer("box1:FAR", done))
        return outcome.ok and "❯" in outcome.value
    wait_until(screen, timeout=30, message="the remote screen")
    sent = act(lambda done: control.engine.send("box1:FAR", "SAY across the board", done))
    assert sent.ok, sent.error
    wait_until(lambda: b"across the board" in b"".join(
        c.raw for c in control.output("box1:FAR")), timeout=30, message="remote output")
    shot = act(lambda done: control.engine.screen("box1:FAR", done))
    assert shot.ok and shot.value[1] > 0 and shot.value[2] > 0
    down = act(lambda done: control.engine.send("box2:X", "hi", done))
    assert not down.ok and "no session named 'box2:X'" in down.error
    made = act(lambda done: control.engine.create(str(world.remote_home("box1")), "NEW",
                                                  done=done, host="box1"))
    assert made.ok, made.error
    assert made.value.slug == "box1:NEW"
    wait_until(lambda: "box1:NEW" in control.names(), timeout=30, message="the new one")
    gone = act(lambda done: control.engine.kill("box1:NEW", done))
    assert gone.ok, gone.error
    wait_until(lambda: "box1:NEW" not in control.names(), timeout=30, message="killed")


# -- security ----------------------------------------------------------------------------------


def test_text_never_reaches_an_ssh_command_line_and_nothing_listens(
        world: SshWorld, cli: Cli, fake_claude: Path, quiet_fake: Path, tmux: Tmux,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world.add("box1")
    remote_session(world, "box1", "SAFE")
    configure(world, ["box1"])
    calls = tmp_path / "ssh-calls.jsonl"
    wrapper = tmp_path / "ssh-wrapper"
    wrapper.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                       f"open({str(calls)!r}, 'a').write(json.dumps(sys.argv) + '\\n')\n"
                       "os.execvp('ssh', ['ssh', *sys.argv[1:]])\n")
    wrapper.chmod(0o755)
    monkeypatch.setenv("CBOS_SSH_COMMAND",
                       f"{shlex.quote(str(wrapper))} -F {shlex.quote(str(world.ssh_config))}")
    control = str(hosts.control_dir(config_mod.load()))

    def listening() -> set[tuple[str, int]]:
        """TCP/UDP sockets listening in this process, its children and cbos's ssh
        masters (they leave the tree when they go to the background)."""
        procs = [p for p in [psutil.Process(), *psutil.Process().children(recursive=True)]
                 if p.name() != "sshd"]  # the other machine's server is not ours
        for proc in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(psutil.Error):
                if control in " ".join(proc.info["cmdline"] or ()):
                    procs.append(proc)
        found = set()
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                found |= {(c.laddr.ip, c.laddr.port) for c in proc.net_connections("inet")
                          if c.status == psutil.CONN_LISTEN}
        return found

    before = listening()
    secret = "SAY the secret words 4711"
    wait_until(lambda: cli("send", "box1:SAFE", secret).code == 0, timeout=30,
               message="the send")
    assert cli("ls").code == 0
    masters = [p for p in psutil.process_iter(["cmdline"])
               if control in " ".join(p.info["cmdline"] or ())]
    assert masters, "the ssh master is the process to check"
    assert listening() == before == set()
    argvs = [json.loads(line) for line in calls.read_text().splitlines()]
    assert argvs
    for argv in argvs:
        assert "4711" not in " ".join(argv)
        assert argv[-1].endswith(" serve --stdio")
        assert argv[-3] == "--"
    with pytest.raises(UsageError):
        hosts.address(config_mod.load(), "box1:SAFE;touch /tmp/x")
    refused = cli("send", "box1:$(touch /tmp/x)", "hi")
    assert refused.code == 2 and "invalid slug" in refused.err
    assert len(calls.read_text().splitlines()) == len(argvs)  # no ssh was started for it


def test_no_listening_socket_is_opened_by_the_stdio_server(tmux: Tmux, tmp_path: Path
                                                          ) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "cbos", "serve", "--stdio"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=tmp_path)
    try:
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline())["type"] == "sessions"
        mine = psutil.Process(proc.pid)
        listening = [c for c in mine.net_connections("all")
                     if c.status == psutil.CONN_LISTEN or (c.type == socket.SOCK_STREAM
                     and not c.raddr and c.laddr)]
        assert listening == []
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(timeout=20) == 0


def test_the_control_socket_path_always_fits(private_home: Path) -> None:
    config = config_mod.load()
    for state in (Path("/tmp/s"), Path("/tmp") / ("long" * 12)):
        directory = hosts.control_dir(config.replace(state_dir=state))
        # ssh binds DIR/<40 hex>.<16 random> first: that must fit a Unix socket address.
        assert len(f"{directory}/{'a' * 40}.{'b' * 16}") < 108
        assert directory == state / "ssh" or str(directory).startswith("/tmp/cbos-")


def test_a_control_directory_others_could_use_is_refused(
        private_home: Path, tmp_path: Path) -> None:
    config = config_mod.load().replace(state_dir=tmp_path / "state")
    host = config_mod.HostConfig("box1", "box1", "cbos")
    directory = hosts.control_dir(config)
    assert hosts.ssh_argv(config, host, ["serve", "--stdio"])  # made private: fine
    directory.chmod(0o755)
    with pytest.raises(CbosError, match="only you can use"):
        hosts.ssh_argv(config, host, ["serve", "--stdio"])
    directory.rmdir()
    directory.symlink_to(tmp_path)  # a link planted where the directory goes
    with pytest.raises(CbosError, match="only you can use"):
        hosts.ssh_argv(config, host, ["serve", "--stdio"])


def test_websocket_clients_see_and_drive_remote_sessions(
        world: SshWorld, fake_claude: Path, quiet_fake: Path, tmux: Tmux) -> None:
    from websockets.sync.client import connect

    from cbos.web import WebServer
    from cbos.web import serve_loop as web_loop

    world.add("box1")
    remote_session(world, "box1", "FAR")
    config = configure(world, ["box1"])
    engine = Engine(config, tmux, notify=False, status_line=False)
    server = WebServer(config, "127.0.0.1", 0)
    server.start()
    engine.start()
    stop_r, stop_w = os.pipe()
    loop = threading.Thread(target=web_loop, args=(engine, server, stop_r), daemon=True)
    loop.start()
    try:
        port = int(server.address.rsplit(":", 1)[1])
        with connect(f"ws://127.0.0.1:{port}/ws/stream", proxy=None, open_timeout=5) as ws:
            def ask(message: dict[str, Any]) -> dict[str, Any]:
                message["id"] = f"r{time.monotonic_ns()}"
                ws.send(json.dumps(message))
                while True:
                    reply = json.loads(ws.recv(timeout=30))
                    if reply.get("id") == message["id"]:
                        return dict(reply)

            def listed() -> dict[str, Any] | None:
                for item in ask({"type": "list_sessions"})["sessions"]:
                    if item["slug"] == "box1:FAR":
                        return dict(item)
                return None
            far = wait_until(listed, timeout=30, message="the remote session over ws")
            assert far["host"] == "box1"
            assert ask({"type": "subscribe", "sessions": ["box1:FAR"]})["type"] == "subscribed"
            wait_until(lambda: "❯" in ask({"type": "get_screen", "session": "box1:FAR"})
                       .get("data", ""), timeout=30, message="the remote screen over ws")
            sent = ask({"type": "send", "session": "box1:FAR", "text": "SAY hello via ws"})
            assert sent["success"] is True, sent
            deadline = time.monotonic() + 30
            seen = ""
            while "hello via ws" not in seen and time.monotonic() < deadline:
                message = json.loads(ws.recv(timeout=30))
                if message["type"] == "stream" and message["session"] == "box1:FAR":
                    seen += message["data"]
            assert "hello via ws" in seen
    finally:
        os.write(stop_w, b"x")
        loop.join(10)
        server.shutdown()
        engine.close()


def _spawn_tail(*words: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "cbos", "tail", *words],
                            stdout=subprocess.PIPE, env=os.environ.copy())
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    return proc


def test_remote_tail_follows_raw_with_no_gap_and_rendered_as_text(
        world: SshWorld, cli: Cli, fake_claude: Path, quiet_fake: Path, tmux: Tmux) -> None:
    world.add("box1")
    remote_session(world, "box1", "FOL")
    configure(world, ["box1"])
    log = remote_log(world, "box1", "FOL")
    wait_until(log.exists, timeout=20, message="the remote log")
    out = bytearray()
    with NumberedLines(log) as lines:
        proc = _spawn_tail("box1:FOL", "-f", "--raw", "--lines", "3")

        def numbers() -> list[int]:
            out.extend(proc.stdout.read() or b"")  # type: ignore[union-attr]
            return lines.numbers(bytes(out))
        try:
            wait_until(lambda: len(numbers()) > 500, timeout=60, message="500 lines followed")
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    seen = NumberedLines.numbers(bytes(out))
    assert seen[0] >= 20  # the backlog is the last 3 lines only, then every line once
    NumberedLines.assert_whole(seen)

    # Rendered: what the screen shows, as text, the new lines as they come.
    shown_last: list[CliResult] = []

    def composer() -> bool:
        shown_last[:] = [cli("buffer", "box1:FOL")]
        return "❯" in shown_last[0].out
    try:
        wait_until(composer, timeout=30, message="the remote composer")
    except AssertionError:
        raise AssertionError(f"no composer: {shown_last}") from None
    proc = _spawn_tail("box1:FOL", "-f")
    shown = bytearray()

    def text() -> str:
        shown.extend(proc.stdout.read() or b"")  # type: ignore[union-attr]
        return shown.decode("utf-8", "replace")
    try:
        wait_until(lambda: "❯" in text(), timeout=30, message="the first screen")
        assert cli("send", "box1:FOL", "SAY rendered over ssh").code == 0
        wait_until(lambda: "rendered over ssh" in text(), timeout=30,
                   message="the reply, rendered")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert "\x1b" not in text()  # text, not the raw stream (stdout is not a terminal)
