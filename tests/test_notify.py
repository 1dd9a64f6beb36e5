"""Notifications: which changes are news (tables), and what the Notifier does with them
(real tmux: the message on an attached client, the window's bell flag, notify-send)."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import libtmux
import pytest

from cbos import config as config_mod
from cbos import notify
from cbos.model import SessionView, Snapshot
from cbos.notify import Channels, Notice, Notifier, Settle, parse_switch, transitions
from cbos.state import State
from cbos.tmux import Client as TmuxClient
from cbos.tmux import Tmux
from tests.support import Cli, pump, start_session, wait_until
from tests.test_plugin import Client
from tests.test_plugin import attach as attach  # a fixture: a client on a pty
from tests.test_plugin import quick_fake as quick_fake  # a fixture: quicker fake claude

P, W, T, K, IDLE, X = (State.PERMISSION, State.WAITING, State.THINKING, State.WORKING,
                    State.IDLE, State.EXITED)


def view(slug: str, state: State, reason: str = "", since: float = 100.0,
         pane_id: str = "%1") -> SessionView:
    return SessionView(slug=slug, path=f"/code/{slug.lower()}", state=state,
                       reason=reason or f"{state.value} reason", since=since, pid=10,
                       claude_session_id=None, tmux=f"{slug}:1.0", pane_id=pane_id,
                       adopted=False)


def snap(*views: SessionView, taken: float = 1000.0, version: int = 1) -> Snapshot:
    return Snapshot(version, taken, tuple(views))


# -- transitions: a table ------------------------------------------------------------------

S = tuple[str, State, str, float]  # slug, state, reason, since


class Case(NamedTuple):
    name: str
    before: tuple[S, ...] | None  # None: no previous snapshot
    after: tuple[S, ...]
    news: tuple[tuple[str, State], ...]


CASES = [
    Case("first snapshot: nothing", None, (("A", W, "done", 1),), ()),
    Case("idle to waiting", (("A", IDLE, "no turn yet", 1),), (("A", W, "done", 2),),
         (("A", W),)),
    Case("thinking to permission", (("A", T, "thinking", 1),),
         (("A", P, "asks to use Write: a.txt", 2),), (("A", P),)),
    Case("working to permission", (("A", K, "Bash running", 1),),
         (("A", P, "asks to use Bash: rm x", 2),), (("A", P),)),
    Case("permission to waiting (denied)", (("A", P, "asks to use Write: a", 1),),
         (("A", W, "permission denied: Write a", 2),), (("A", W),)),
    Case("permission, same reason, re-dated: nothing", (("A", P, "asks to use Write: a", 1),),
         (("A", P, "asks to use Write: a", 5),), ()),
    Case("permission re-worded (the dialog read off the screen): nothing",
         (("A", P, "asks to use Write: a", 1),), (("A", P, "Do you want to create a?", 1),),
         ()),
    Case("permission re-worded and re-dated (a stale dialog): nothing",
         (("A", P, "asks to use Write: a", 1),), (("A", P, "Do you want to create a?", 4),),
         ()),
    Case("waiting, reason grows: nothing", (("A", W, "done", 1),),
         (("A", W, "done · 1 shell", 1),), ()),
    Case("waiting, re-dated: nothing", (("A", W, 'done: "a"', 1),),
         (("A", W, 'done: "b"', 3),), ()),
    Case("waiting to thinking: nothing", (("A", W, "done", 1),), (("A", T, "thinking", 2),),
         ()),
    Case("working to exited: nothing", (("A", K, "Bash", 1),), (("A", X, "exit 0", 2),), ()),
    Case("a session seen for the first time: nothing", (("A", IDLE, "x", 1),),
         (("A", IDLE, "x", 1), ("B", P, "asks", 2)), ()),
    Case("several: permission first, then by slug",
         (("C", T, "t", 1), ("A", T, "t", 1), ("B", K, "k", 1), ("D", IDLE, "i", 1)),
         (("C", W, "done", 2), ("A", W, "done", 2), ("B", P, "asks", 2), ("D", IDLE, "i", 1)),
         (("B", P), ("A", W), ("C", W))),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_transitions(case: Case) -> None:
    def build(rows: tuple[S, ...]) -> Snapshot:
        return snap(*(view(slug, state, reason, since) for slug, state, reason, since in rows))

    before = None if case.before is None else build(case.before)
    got = transitions(before, build(case.after))
    assert [(n.slug, n.state) for n in got] == list(case.news)


def test_notice_text_names_the_session_and_the_ask() -> None:
    asking = Notice.of(view("AUTH", P, "asks to use Write: src/auth.ts"))
    assert asking.message == "cbos: ⚠ AUTH needs permission: asks to use Write: src/auth.ts"
    done = Notice.of(view("DOCS", W, 'done: "I updated\nthe README"'))
    assert done.message == 'cbos: ● DOCS is waiting: done: "I updated the README"'
    assert notify.summary([asking, done]) == (
        "cbos: ⚠ AUTH needs permission: asks to use Write: src/auth.ts · "
        '● DOCS is waiting: done: "I updated the README"')
    long = Notice.of(view("A", W, "x" * 500))
    assert len(long.message) == notify.MAX_TEXT and long.message.endswith("…")
    assert notify.one_line("a\x1b[31mb\tc\r\n\x7fd") == "a [31mb c d"


# -- flapping: sequences of snapshots --------------------------------------------------------


class Step(NamedTuple):
    at: float  # the snapshot's time
    state: State
    reason: str
    notified: bool


FLAPS = {
    "a permission left briefly, twice, then back: one notice": [
        Step(0.0, T, "thinking", False),
        Step(1.0, P, "asks to use Write: a", True),
        Step(1.5, K, "Write a", False),
        Step(2.0, P, "Do you want to create a?", False),
        Step(2.2, K, "Write a", False),
        Step(2.4, P, "asks to use Write: a", False),
    ],
    "back after the settle time: announced again": [
        Step(0.0, T, "thinking", False),
        Step(1.0, P, "asks to use Write: a", True),
        Step(2.0, K, "Write a", False),
        Step(4.6, P, "asks to use Write: b", True),
    ],
    "a thinking blip after a turn ended: one notice": [
        Step(0.0, T, "thinking", False),
        Step(5.0, W, "done", True),
        Step(5.3, T, "from Claude's status file: busy", False),
        Step(5.6, W, "done", False),
    ],
    "quick turns in a row: once, then again after a real turn": [
        Step(0.0, W, 'done: "a"', False),
        Step(1.0, T, "thinking", False),
        Step(1.5, W, 'done: "a"', True),
        Step(2.0, T, "thinking", False),
        Step(2.4, W, 'done: "b"', False),
        Step(3.0, T, "thinking", False),
        Step(6.0, W, 'done: "c"', True),
    ],
    "a denial in between: the wait is news, the quick return is not": [
        Step(0.0, T, "thinking", False),
        Step(1.0, P, "asks to use Write: a", True),
        Step(1.2, W, "permission denied", True),
        Step(1.4, P, "asks to use Write: a", False),
        Step(1.6, W, "permission denied", False),
    ],
}


@pytest.mark.parametrize("steps", FLAPS.values(), ids=list(FLAPS))
def test_settle_drops_quick_returns(steps: list[Step]) -> None:
    settle = Settle(2.5)
    previous: Snapshot | None = None
    for number, step in enumerate(steps):
        current = snap(view("A", step.state, step.reason, step.at), view("B", IDLE, "idle"),
                       taken=1000 + step.at, version=number + 1)
        due = settle.filter(transitions(previous, current), current)
        assert [n.slug for n in due] == (["A"] if step.notified else []), step
        previous = current


def test_settle_forgets_sessions_that_are_gone() -> None:
    settle = Settle(2.5)
    first = snap(view("A", T), taken=1000)
    asking = snap(view("A", P, "asks", 1001), taken=1001)
    assert settle.filter(transitions(first, asking), asking)
    gone = snap(taken=1001.5)
    settle.filter(transitions(asking, gone), gone)
    back = snap(view("A", T), taken=1002)
    again = snap(view("A", P, "asks", 1001), taken=1002.1)
    settle.filter(transitions(gone, back), back)
    assert settle.filter(transitions(back, again), again), "a new session of that name"


# -- options ---------------------------------------------------------------------------------


class Switch(NamedTuple):
    text: str
    states: frozenset[State] | None


SWITCHES = [
    Switch("on", frozenset({P, W})), Switch(" ON ", frozenset({P, W})),
    Switch("yes", frozenset({P, W})), Switch("1", frozenset({P, W})),
    Switch("off", frozenset()), Switch("no", frozenset()), Switch("0", frozenset()),
    Switch("permission", frozenset({P})), Switch("waiting", frozenset({W})),
    Switch("waiting, permission", frozenset({P, W})),
    Switch("thinking", None), Switch("sometimes", None), Switch(",", None),
]


@pytest.mark.parametrize("case", SWITCHES, ids=[s.text for s in SWITCHES])
def test_parse_switch(case: Switch) -> None:
    assert parse_switch(case.text) == case.states


def test_channels_default_and_fall_back_on_nonsense() -> None:
    assert Channels.from_options({}) == Channels(frozenset({P, W}), frozenset({P, W}),
                                                 frozenset())
    chosen = Channels.from_options({"@cbos-notify": "permission", "@cbos-notify-bell": "bogus",
                                    "@cbos-notify-desktop": "on"})
    assert chosen == Channels(frozenset({P}), frozenset({P, W}), frozenset({P, W}))


# -- the Notifier, with a fake engine ----------------------------------------------------------


class FakeEngine:
    """``run`` queues the work, as the real engine hands it to its worker thread."""

    def __init__(self) -> None:
        self.snapshot_listeners: list[Callable[[Snapshot, Snapshot | None], None]] = []
        self.queued: list[Callable[[], Any]] = []

    def run(self, work: Callable[[], Any], done: Any = None) -> None:
        self.queued.append(work)

    def work(self) -> None:
        while self.queued:
            self.queued.pop(0)()

    def publish(self, current: Snapshot, previous: Snapshot | None) -> None:
        for listener in self.snapshot_listeners:
            listener(current, previous)


class RecordingTmux:
    """The Tmux calls a Notifier makes; one client, on a tty that is not there."""

    def __init__(self, options: dict[str, str] | None = None) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.options = options or {}

    def global_option(self, name: str) -> str:
        self.calls.append(("global_option", name))
        return self.options.get(name, "")

    def clients(self) -> list[TmuxClient]:
        self.calls.append(("clients",))
        return [TmuxClient("/dev/pts/99", "/dev/pts/99")]

    def show_message(self, client: str, text: str, milliseconds: int) -> None:
        self.calls.append(("show_message", client, text, str(milliseconds)))


def test_the_listener_only_computes_the_worker_does_the_rest() -> None:
    tmux = RecordingTmux()
    engine = FakeEngine()
    notifier = Notifier(tmux, engine).start()
    assert engine.snapshot_listeners == [notifier.on_snapshot]
    engine.work()  # the options, read on the worker
    assert [c[0] for c in tmux.calls] == ["global_option"] * 3
    tmux.calls.clear()
    engine.publish(snap(view("A", T), version=1), None)
    engine.publish(snap(view("A", P, "asks to use Write: a", 5), version=2),
                   snap(view("A", T), version=1))
    assert tmux.calls == [], "the loop thread ran a tmux command"
    assert len(engine.queued) == 1
    engine.work()
    assert tmux.calls == [
        ("clients",),
        ("show_message", "/dev/pts/99", "cbos: ⚠ A needs permission: asks to use Write: a",
         "4000"),
        ("clients",)]  # the bell: the client's tty is gone, which is logged, not raised


def test_options_choose_the_channels() -> None:
    tmux = RecordingTmux({"@cbos-notify": "permission", "@cbos-notify-bell": "off"})
    engine = FakeEngine()
    Notifier(tmux, engine).start()
    engine.work()
    tmux.calls.clear()
    engine.publish(snap(view("A", W, "done", 5), version=2), snap(view("A", T), version=1))
    engine.work()
    assert tmux.calls == [], "waiting is off for the message, the bell is off"
    engine.publish(snap(view("A", P, "asks", 7), version=3),
                   snap(view("A", W, "done", 5), version=2))
    engine.work()
    assert [c[0] for c in tmux.calls] == ["clients", "show_message"]


def test_tmux_literal_shows_text_exactly(tmux: Tmux) -> None:
    tmux.cmd("new-session", "-d", "-s", "lit")
    for text in ["100% #{pane_id} #(echo pwned) ##", "%H:%M %%", "ends with;",
                 "ends with \\;", "-starts with a dash", "a\\b"]:
        assert tmux.cmd("display-message", "-p", "-t", "=lit:", "--",
                        notify.tmux_literal(text)) == [text], text


# -- the Notifier against real tmux ----------------------------------------------------------


@pytest.fixture
def notify_send(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake notify-send on PATH that records its arguments, one JSON line per call."""
    record = tmp_path / "notify-send.jsonl"
    bin_dir = tmp_path / "notify-bin"
    bin_dir.mkdir()
    fake = bin_dir / "notify-send"
    fake.write_text(f"#!{sys.executable}\n"
                    "import json, sys\n"
                    f"open({str(record)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return record


def calls(record: Path) -> list[list[str]]:
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text().splitlines()]


class Panes:
    def __init__(self, tmux: Tmux) -> None:
        self.tmux = tmux
        tmux.cmd("new-session", "-d", "-s", "home", "-x", "160", "-y", "40")

    def new(self, name: str) -> str:
        return self.tmux.cmd("new-session", "-d", "-s", name, "-P", "-F", "#{pane_id}",
                             "cat")[0]

    def bell(self, pane_id: str) -> str:
        """The window's bell flag: "1" only if something wrote a BEL into the pane."""
        return self.tmux.cmd("display-message", "-p", "-t", pane_id, "#{window_bell_flag}")[0]


def bells(client: Client) -> int:
    """BELs the client's terminal received (escape sequences ending in BEL removed)."""
    return client.output.count("\a")


def test_notices_reach_clients_bell_and_desktop(tmux: Tmux, server: libtmux.Server,
                                                notify_send: Path,
                                                attach: Callable[..., Client]) -> None:
    panes = Panes(tmux)
    auth, docs = panes.new("AUTH"), panes.new("DOCS")
    client = attach(server.socket_name, "home")
    tmux.cmd("set-option", "-g", "@cbos-notify-desktop", "on")
    engine = FakeEngine()
    Notifier(tmux, engine).start()
    engine.work()
    before = snap(view("AUTH", T, pane_id=auth), view("DOCS", K, pane_id=docs), version=1)
    after = snap(view("AUTH", P, "asks to use Bash: rm -rf #{x} 100%", 5, pane_id=auth),
                 view("DOCS", K, pane_id=docs), version=2)
    assert (panes.bell(auth), panes.bell(docs), bells(client)) == ("0", "0", 0)
    engine.publish(after, before)
    engine.work()
    wait_until(lambda: "cbos: ⚠ AUTH needs permission: asks to use Bash: rm -rf #{x} 100%"
               in client.output, message="the message on the attached client")
    wait_until(lambda: bells(client) == 1, message="the client's terminal got the bell")
    # Nothing went into the panes: no bell flag, no byte for `cat` to echo.
    assert (panes.bell(auth), panes.bell(docs)) == ("0", "0")
    wait_until(lambda: calls(notify_send), message="notify-send ran")
    assert calls(notify_send) == [["--app-name=cbos", "--", "cbos: AUTH needs permission",
                                   "asks to use Bash: rm -rf #{x} 100%"]]
    # The pane's program read nothing: `cat` would echo it back.
    assert tmux.capture(auth, colours=False) == ""


def test_desktop_is_off_by_default_and_the_bell_can_be_turned_off(
        tmux: Tmux, server: libtmux.Server, notify_send: Path,
        attach: Callable[..., Client]) -> None:
    panes = Panes(tmux)
    auth = panes.new("AUTH")
    client = attach(server.socket_name, "home")
    tmux.cmd("set-option", "-g", "@cbos-notify-bell", "off")
    engine = FakeEngine()
    notifier = Notifier(tmux, engine).start()
    engine.work()
    engine.publish(snap(view("AUTH", W, "done", 5, pane_id=auth), version=2),
                   snap(view("AUTH", T, pane_id=auth), version=1))
    engine.work()
    wait_until(lambda: "cbos: ● AUTH is waiting" in client.output, message="the message")
    assert bells(client) == 0 and calls(notify_send) == []
    # Options are read again on reload (the refresh key): the bell comes back.
    tmux.cmd("set-option", "-gu", "@cbos-notify-bell")
    notifier.reload()
    engine.work()
    thinking = snap(view("AUTH", T, pane_id=auth), version=3, taken=1001)
    engine.publish(thinking, snap(view("AUTH", W, "done", 5, pane_id=auth), version=2))
    engine.publish(snap(view("AUTH", W, "done", 9, pane_id=auth), version=4, taken=1010),
                   thinking)
    engine.work()
    wait_until(lambda: bells(client) == 1, message="the bell rang after the reload")
    assert calls(notify_send) == []


def test_no_tmux_server_is_not_an_error(notify_send: Path) -> None:
    lonely = Tmux(f"cbos-none-{os.getpid()}-{time.monotonic_ns()}")
    engine = FakeEngine()
    Notifier(lonely, engine).start()
    engine.work()
    engine.publish(snap(view("A", P, "asks", 5, pane_id="%1"), version=2),
                   snap(view("A", T, pane_id="%1"), version=1))
    engine.work()  # logged, not raised
    assert calls(notify_send) == []


# -- end to end: the real engine, fake claude --------------------------------------------------


@pytest.fixture
def engine(quick_fake: None, fake_claude: Path, tmux: Tmux) -> Iterator[Any]:
    from cbos.engine import Engine

    made: list[Any] = []

    def make() -> Any:
        built = Engine(config_mod.load(), tmux)
        made.append(built)
        return built

    yield make
    for built in made:
        built.close()


def test_a_session_asking_for_permission_is_announced_once(
        engine: Callable[[], Any], tmux: Tmux, server: libtmux.Server, cli: Cli,
        tmp_path: Path, notify_send: Path, attach: Callable[..., Client]) -> None:
    tmux.cmd("new-session", "-d", "-s", "home", "-x", "160", "-y", "40")
    tmux.cmd("set-option", "-g", "@cbos-notify-desktop", "on")
    pane = start_session(cli, tmux, tmp_path, "AUTH").pane_id
    client = attach(server.socket_name, "home")
    the_engine = engine()
    # The engine starts its own Notifier (engine.start), as the TUI and serve rely on.
    the_engine.start()

    def bell() -> str:
        return tmux.cmd("display-message", "-p", "-t", pane, "#{window_bell_flag}")[0]

    assert bell() == "0" and bells(client) == 0
    assert cli("send", "AUTH", f"WRITE {tmp_path / 'made.txt'}").code == 0
    pump(the_engine, lambda: calls(notify_send), 20, "notify-send for AUTH")
    assert calls(notify_send)[0][2] == "cbos: AUTH needs permission"
    assert "Write" in calls(notify_send)[0][3]
    pump(the_engine, lambda: "cbos: ⚠ AUTH needs permission" in client.output, 10,
         "the tmux message")
    pump(the_engine, lambda: bells(client) >= 1, 10, "the client's terminal got the bell")
    # The bell is not claude's output: not in the pane, its log, or the activity clock.
    log = config_mod.load().log_path("AUTH")
    assert bell() == "0"
    assert b"\a" not in re.sub(rb"\x1b\][^\x07\x1b]*(\x07|\x1b\\)", b"", log.read_bytes())
    # Granting it: working, then waiting, announced once more; nothing repeats meanwhile.
    assert cli("answer", "AUTH", "yes").code == 0
    pump(the_engine, lambda: len(calls(notify_send)) >= 2, 20, "AUTH is waiting")
    assert calls(notify_send)[1][2] == "cbos: AUTH is waiting"
    settled = time.monotonic() + 3
    pump(the_engine, lambda: time.monotonic() > settled, 10, "a few quiet seconds")
    assert len(calls(notify_send)) == 2
