"""The control room's widgets and its loop: type keys, read the rendered canvas.

Widgets are fed Snapshots built from real SessionViews; nothing of urwid is mocked. The
last tests run the real App (engine, MainLoop) against fake claude sessions in a private
tmux server, with a screen that keeps the last canvas drawn instead of a terminal.
"""

from __future__ import annotations

import gc
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import urwid
import urwid.testing

from cbos import ui
from cbos.app import App, CaptureGate
from cbos.config import Config
from cbos.dialog import Dialog, Option
from cbos.model import SessionView, Snapshot
from cbos.state import State
from cbos.tmux import Tmux
from tests.support import Cli, prompts, start_session, wait_until

NOW = 1_700_000_000.0
WIDE = (120, 24)
SMALL = (60, 15)
PERMISSION = Dialog("permission", "Do you want to create auth.ts?",
                    (Option(1, "Yes"), Option(2, "Yes, allow all edits"), Option(3, "No")),
                    selected=1, title="Create file")
QUESTION = Dialog("question", "Pick one?", (Option(1, "Alpha", "the first"),
                                            Option(2, "Beta", "the second")), selected=1)


def view(slug: str, state: State = State.IDLE, reason: str = "no turn yet", ago: float = 60.0,
         dialog: Dialog | None = None, **changes: Any) -> SessionView:
    fields: dict[str, Any] = dict(
        slug=slug, path=f"/srv/code/{slug.lower()}", state=state, reason=reason,
        since=NOW - ago, pid=4000 + len(slug), claude_session_id=f"sess-{slug.lower()}",
        tmux=f"{slug}:1.0", pane_id=f"%{len(slug)}", adopted=False, dialog=dialog)
    fields.update(changes)
    return SessionView(**fields)


def snap(*views: SessionView, version: int = 1, tmux_up: bool = True) -> Snapshot:
    return Snapshot(version, NOW, tuple(sorted(views, key=lambda v: v.slug)), tmux_up)


def screen(widget: urwid.Widget, size: tuple[int, int] = WIDE) -> list[str]:
    return urwid.testing.render_text(widget, size, focus=True)


def joined(widget: urwid.Widget, size: tuple[int, int] = WIDE) -> str:
    return "\n".join(screen(widget, size))


class Room(NamedTuple):
    room: ui.ControlRoom
    actions: list[ui.Action]

    def press(self, *keys: str, size: tuple[int, int] = WIDE) -> list[ui.Action]:
        """Press keys; return the actions they caused (Selected left out)."""
        start = len(self.actions)
        for key in keys:
            self.room.render(size, focus=True)  # as the loop does between keys
            assert self.room.keypress(size, key) is None
        return [a for a in self.actions[start:] if not isinstance(a, ui.Selected)]

    @property
    def selected(self) -> str | None:
        view = self.room.selected
        return view.slug if view is not None else None


def mode(r: Room) -> ui.Mode:
    return r.room.mode


def make_room(*views: SessionView, popup: bool = False, now: float = NOW) -> Room:
    room = ui.ControlRoom(popup=popup)
    actions: list[ui.Action] = []
    room.on_action(actions.append)
    room.update(snap(*views), now)
    return Room(room, actions)


BOARD = (
    view("WEB", State.IDLE, "no turn yet", ago=3600),
    view("APP", State.WORKING, "Bash running: npm test (pid 4123)", ago=8),
    view("DOCS", State.WAITING, 'done: "I\'ve updated the README"', ago=180),
    view("INTEL", State.WAITING, 'done: "Tests pass. Next?"', ago=41),
    view("AUTH", State.PERMISSION, "asks to use Write: src/auth.ts", ago=12,
         dialog=PERMISSION),
    view("API", State.THINKING, "thinking", ago=5),
    view("OLD", State.EXITED, "claude exited with status 0", ago=7200),
)


# ------------------------------------------------------------------- pure decisions


def test_settle_places_new_sessions_at_once_and_delays_moves_by_a_second() -> None:
    keys = {"A": (1, 10.0, "A"), "B": (2, 5.0, "B")}
    placed, order, due = ui.settle({}, keys, now=100.0)
    assert order == ["A", "B"] and due is None
    # B now sorts first; the list keeps its order for a second, and says when to look again.
    keys2 = {"A": (1, 10.0, "A"), "B": (0, 99.0, "B")}
    placed, order, due = ui.settle(placed, keys2, now=100.2)
    assert order == ["A", "B"] and due == pytest.approx(101.2)
    placed, order, due = ui.settle(placed, keys2, now=101.0)
    assert order == ["A", "B"] and due == pytest.approx(101.2)
    placed, order, due = ui.settle(placed, keys2, now=101.2)
    assert order == ["B", "A"] and due is None
    # A new session takes its place at once; an ended one leaves at once.
    placed, order, _ = ui.settle(placed, {"B": (0, 99.0, "B"), "C": (0, 1.0, "C")}, 101.3)
    assert order == ["C", "B"]


def test_settle_never_reorders_for_a_state_that_flickers() -> None:
    steady = {"A": (1, 0.0, "A"), "B": (2, 0.0, "B")}
    placed, _, _ = ui.settle({}, steady, now=0.0)
    t = 0.0
    for _ in range(20):  # B flips between two keys every 0.4 s: never held for a second
        t += 0.4
        flip = {"A": (1, 0.0, "A"), "B": (0, t, "B")}
        placed, order, _ = ui.settle(placed, flip, now=t)
        assert order == ["A", "B"]
        t += 0.4
        placed, order, _ = ui.settle(placed, steady, now=t)
        assert order == ["A", "B"]


class KeyCase(NamedTuple):
    key: str
    dialog: Dialog | None
    popup: bool
    expect: ui.Command | ui.Choice | None


@pytest.mark.parametrize("case", [
    KeyCase("j", None, False, ui.Command.DOWN),
    KeyCase("down", None, False, ui.Command.DOWN),
    KeyCase("k", None, False, ui.Command.UP),
    KeyCase("up", None, False, ui.Command.UP),
    KeyCase("enter", None, False, ui.Command.INPUT),
    KeyCase("enter", None, True, ui.Command.OPEN),
    KeyCase("enter", PERMISSION, False, ui.Command.INPUT),
    KeyCase("i", None, False, ui.Command.INPUT),
    KeyCase("esc", None, False, ui.Command.BACK),
    KeyCase("esc", PERMISSION, False, ui.Choice("esc")),
    KeyCase("ctrl c", None, False, ui.Command.INTERRUPT),
    KeyCase("r", None, False, ui.Command.REFRESH),
    KeyCase("a", None, False, ui.Command.OPEN),
    KeyCase("c", None, False, ui.Command.PICK),
    KeyCase("n", None, False, ui.Command.NEW),
    KeyCase("n", PERMISSION, False, ui.Choice("no")),
    KeyCase("y", PERMISSION, False, ui.Choice("yes")),
    KeyCase("y", None, False, None),
    KeyCase("2", PERMISSION, False, ui.Choice("2")),
    KeyCase("2", None, False, None),
    KeyCase("x", None, False, ui.Command.KILL),
    KeyCase("d", None, False, ui.Command.DETAIL),
    KeyCase("l", None, False, ui.Command.LIST),
    KeyCase("s", None, False, ui.Command.SORT),
    KeyCase("q", None, False, ui.Command.QUIT),
    KeyCase("?", None, False, ui.Command.HELP),
    KeyCase("z", None, False, None),
], ids=lambda c: f"{c.key}{'-dialog' if c.dialog else ''}{'-popup' if c.popup else ''}")
def test_list_keys(case: KeyCase) -> None:
    assert ui.list_command(case.key, dialog=case.dialog, popup=case.popup) == case.expect


def test_input_keys_edit_unless_a_dialog_waits_and_the_line_is_empty() -> None:
    assert ui.input_command("enter", dialog=None, empty=False) is ui.Command.SUBMIT
    assert ui.input_command("esc", dialog=PERMISSION, empty=True) is ui.Command.BACK
    assert ui.input_command("ctrl c", dialog=None, empty=False) is ui.Command.INTERRUPT
    assert ui.input_command("1", dialog=None, empty=True) is None
    assert ui.input_command("1", dialog=PERMISSION, empty=True) == ui.Choice("1")
    assert ui.input_command("1", dialog=PERMISSION, empty=False) is None
    assert ui.input_command("q", dialog=None, empty=True) is None


def test_row_shows_icon_slug_age_reason_and_the_path_when_there_is_room() -> None:
    v = view("AUTH", State.PERMISSION, "asks to use Write: src/auth.ts", ago=12,
             path="/home/me/code/auth")

    def row(width: int) -> str:
        return "".join(part if isinstance(part, str) else part[1]
                       for part in ui.row_markup(v, NOW, 6, width, home="/home/me"))

    wide = row(110)
    assert wide.startswith("⚠ AUTH    12s  asks to use Write: src/auth.ts")
    assert wide.endswith("~/code/auth") and len(wide) <= 110
    narrow = row(40)
    assert "~/code" not in narrow and narrow.startswith("⚠ AUTH    12s  asks to use")
    assert row(30).endswith("…")


def test_fit_lines_squeezes_blank_runs_before_cutting_the_top() -> None:
    blank = [False, False, True, True, True, True, False, True, False]
    assert ui.fit_lines(blank, 20) == list(range(9))
    assert ui.fit_lines(blank, 6) == [0, 1, 2, 6, 7, 8]
    assert ui.fit_lines(blank, 4) == [2, 6, 7, 8]
    assert ui.fit_lines(blank, 0) == []


def test_capture_gate_one_in_flight_at_most_thirty_a_second() -> None:
    gate = CaptureGate(interval=1 / 30)
    assert gate.next(0.0) is None  # nothing wanted
    gate.want()
    assert gate.next(0.0) == 0.0
    gate.start(0.0)
    gate.want()
    assert gate.next(0.001) is None  # one in flight
    gate.finish()
    assert gate.next(0.010) == pytest.approx(1 / 30 - 0.010)
    gate.timer = True
    assert gate.next(0.020) is None  # an alarm will come back
    gate.timer = False
    assert gate.next(0.040) == 0.0


# ------------------------------------------------------------------------ the room


def test_room_shows_counts_rows_preview_and_the_input_line() -> None:
    r = make_room(*BOARD)
    lines = screen(r.room)
    assert lines[0].startswith(" cbos · 7 sessions")
    assert "⚠ 1  ● 2  ◑ 1  ◐ 1  ○ 1  ✗ 1" in lines[0] and lines[0].rstrip().endswith("ws off")
    text = "\n".join(lines)
    assert "⚠ AUTH   12s  asks to use Write: src/auth.ts" in text
    assert "◑ APP     8s  Bash running: npm test (pid 4123)" in text
    assert lines[1].split("│")[0].rstrip().endswith("/srv/code/auth")  # the path, when wide
    assert "AUTH · /srv/code/auth · permission 12s" in text
    assert lines[-1].startswith(">")
    r.room.set_ws("127.0.0.1:32205")
    assert screen(r.room)[0].rstrip().endswith("ws 127.0.0.1:32205")


def test_the_selected_row_alone_is_drawn_in_the_focus_colours() -> None:
    r = make_room(view("A", State.WAITING, "done", ago=5), view("B"))
    r.press("j")
    assert r.selected == "B"
    first, second = urwid.testing.render_runs(r.room.sessions, (60, 2), focus=True)
    assert [a for a, _ in first][:3] == ["st.waiting", None, "slug"]
    assert "focus" not in repr(first)
    # Every run of the selected row is in a focus colour, the icon's and slug's their own.
    assert all("focus" in repr(a) for a, _ in second)
    assert [repr(a) for a, text in second if text in ("○", "B")] == [
        repr(urwid.LayeredAttr("focus.icon", "focus")),
        repr(urwid.LayeredAttr("focus.slug", "focus"))]


def test_attention_first_then_plain_order_with_s() -> None:
    r = make_room(*BOARD)
    assert r.room.sessions.order == ["AUTH", "DOCS", "INTEL", "APP", "API", "WEB", "OLD"]
    assert r.press("s") == []
    assert r.room.sessions.order == sorted(v.slug for v in BOARD)
    assert "by name" in screen(r.room)[0]
    r.press("s")
    assert r.room.sessions.order[0] == "AUTH"


def test_state_change_shows_at_once_and_reorders_a_second_later() -> None:
    board = [view("A", State.WORKING, "Bash: make", ago=30), view("B", State.IDLE, ago=90)]
    r = make_room(*board)
    r.press("j")
    assert r.selected == "B" and r.room.sessions.order == ["A", "B"]
    changed = view("B", State.PERMISSION, "asks to use Bash: rm -rf build", ago=0)
    due = r.room.update(snap(board[0], changed, version=2), NOW)
    text = joined(r.room)
    assert "⚠ B" in text and "asks to use Bash" in text  # the row changed at once
    assert r.room.sessions.order == ["A", "B"]  # ... the order did not
    assert due == pytest.approx(NOW + ui.REORDER_DELAY)
    assert r.room.settle(NOW + 0.5) is not None and r.room.sessions.order == ["A", "B"]
    assert r.room.settle(NOW + 1.0) is None
    assert r.room.sessions.order == ["B", "A"]
    assert r.selected == "B"  # the selection moved with its session
    assert screen(r.room)[1].startswith("⚠ B")


def test_new_and_ended_sessions_appear_and_go_without_a_key() -> None:
    r = make_room(view("A"), view("B"))
    r.press("j")
    assert r.selected == "B"
    r.room.update(snap(view("A"), view("B"), view("C", State.WAITING, "done", ago=5),
                       version=2), NOW)
    assert r.room.sessions.order == ["C", "A", "B"] and r.selected == "B"
    r.room.update(snap(view("A"), view("C", State.WAITING, "done", ago=5), version=3), NOW)
    assert "B " not in joined(r.room) and r.selected in ("A", "C")
    assert r.actions[-1] == ui.Selected(r.selected)


def test_keys_move_the_selection_and_say_so() -> None:
    r = make_room(view("A"), view("B"), view("C"))
    assert r.actions == [ui.Selected("A")]
    r.press("j", "down", "k")
    assert r.selected == "B"
    assert [a for a in r.actions if isinstance(a, ui.Selected)] == [
        ui.Selected("A"), ui.Selected("B"), ui.Selected("C"), ui.Selected("B")]
    r.press("k", "k")  # the top stays the top
    assert r.selected == "A"


def test_enter_types_into_the_input_line_and_sends_to_the_selected_session() -> None:
    r = make_room(view("A"), view("B"))
    r.press("j", "enter")
    assert mode(r) is ui.Mode.INPUT
    actions = r.press(*"hi; -x q", "enter")
    assert actions == [ui.Send("B", "hi; -x q")]
    assert r.room.input.text == ""
    assert "Enter send" in screen(r.room)[-1]
    assert r.press("esc") == [] and mode(r) is ui.Mode.LIST
    assert r.press("i", "enter") == []  # nothing typed, nothing sent
    r.room.restore_input("hi again")  # a refused send puts the text back
    assert r.room.input.text == "hi again"


def test_popup_enter_opens_and_a_attaches() -> None:
    r = make_room(view("A"), popup=True)
    assert r.press("enter") == [ui.Open("A")]
    assert r.press("a") == [ui.Open("A")]
    assert "Enter open" in screen(r.room)[-1]


def test_a_dialog_is_shown_with_its_options_and_keys_answer_it() -> None:
    r = make_room(view("AUTH", State.PERMISSION, "asks to use Write: auth.ts",
                       dialog=PERMISSION), view("B"))
    text = joined(r.room)
    for line in ("⚠ Do you want to create auth.ts?", "❯ 1. Yes", "2. Yes, allow all edits",
                 "3. No", "1-3 answer · y yes · n no · Esc cancel"):
        assert line in text
    assert r.press("2") == [ui.Answer("AUTH", "2")]
    assert r.press("y") == [ui.Answer("AUTH", "yes")]
    assert r.press("n") == [ui.Answer("AUTH", "no")]
    assert r.press("esc") == [ui.Answer("AUTH", "esc")]
    # In the input line: an empty line answers, a line with text types.
    r.press("enter")
    assert r.press("1") == [ui.Answer("AUTH", "1")]
    assert r.press("x", "1") == [] and r.room.input.text == "x1"
    # A question's descriptions show under its options.
    q = make_room(view("Q", State.PERMISSION, "asks: Pick one?", dialog=QUESTION))
    assert "the second" in joined(q.room) and "n no" not in joined(q.room)


def test_ctrl_c_interrupts_from_the_list_and_the_input_line() -> None:
    r = make_room(view("A"))
    assert r.press("ctrl c") == [ui.Interrupt("A")]
    r.press("enter", "w")
    assert r.press("ctrl c") == [ui.Interrupt("A")] and r.room.mode is ui.Mode.INPUT


def test_kill_asks_first() -> None:
    r = make_room(view("A"), view("B"))
    assert r.press("j", "x") == []
    assert "Kill B? Its log stays." in joined(r.room)
    assert r.press("n") == []
    assert "Kill B?" not in joined(r.room) and "B left running" in joined(r.room)
    assert r.press("x", "y") == [ui.Kill("B")]
    assert r.press("x", "esc") == []


def test_project_picker_pages_and_picks() -> None:
    r = make_room(view("A"))
    assert r.press("c") == [ui.FindProjects()]
    assert "looking for directories with a CLAUDE.md" in joined(r.room)
    r.room.set_projects([ui.PickerItem(f"P{i:02d}", f"/srv/p/{i:02d}") for i in range(25)])
    text = joined(r.room, (100, 20))  # 20 rows: pages of 14 (the overlay is 18 high)
    assert "page 1/2" in text and "P00" in text and "P13" in text and "P14" not in text
    r.press("n", size=(100, 20))
    text = joined(r.room, (100, 20))
    assert "page 2/2" in text and "P14" in text
    assert r.press("j", "enter", size=(100, 20)) == [ui.Create("/srv/p/15")]
    assert "page" not in joined(r.room)
    r.press("c")
    r.room.set_projects([])
    assert "no directory with a CLAUDE.md found" in joined(r.room)
    assert r.press("esc") == [] and r.room.modal is None


def test_n_starts_a_session_at_a_typed_path() -> None:
    r = make_room()
    r.press("n")
    assert "new session at a path" in joined(r.room)
    assert r.press(*"code/new", "enter") == [ui.Create("~/code/new")]
    r.press("n", "esc")
    assert r.room.modal is None


def test_detail_view_shows_every_field() -> None:
    v = view("AUTH", State.WORKING, "Bash running: make (pid 77)", ago=125, pid=4242,
             claude_session_id="3f2a-uuid")
    r = make_room(v)
    r.press("d")
    text = joined(r.room, (120, 30))
    for expected in ("slug           AUTH", "path           /srv/code/auth", "◑ working",
                     "Bash running: make (pid 77)", "(2m ago)", "pid            4242",
                     "claude session 3f2a-uuid", "tmux           AUTH:1.0 (%4)",
                     "AUTH · /srv/code/auth · working 2m"):
        assert expected in text
    r.press("l")
    assert "claude session" not in joined(r.room)
    r.press("d", "esc")
    assert "claude session" not in joined(r.room)


def test_question_mark_lists_the_keys_and_any_key_closes() -> None:
    r = make_room(view("A"))
    r.press("?")
    text = joined(r.room, (100, 30))
    for key, _ in ui.KEYS:
        assert key in text
    assert r.press("q") == []  # closes the help; does not quit
    assert "keys · any key closes" not in joined(r.room)


@pytest.mark.parametrize("size", [SMALL, (80, 24), (100, 30), (200, 50)])
def test_every_size_keeps_status_list_preview_and_input(size: tuple[int, int]) -> None:
    r = make_room(*BOARD)
    r.room.set_screen("AUTH", "banner\n\n\n\n\n\n\n\n\n\n❯ \n  ⏸ manual mode on")
    lines = screen(r.room, size)
    assert len(lines) == size[1] and all(len(line) == size[0] for line in lines)
    assert lines[0].startswith(" cbos · 7 sessions")
    assert lines[-1].startswith(">")
    text = "\n".join(lines)
    assert "⚠ AUTH" in text and "AUTH · /srv/code/auth" in text  # row and preview title
    assert "❯ 1. Yes" in text  # the dialog, even in a small preview


def test_resize_redraws_the_layout() -> None:
    r = make_room(*BOARD)
    wide = screen(r.room, (120, 24))
    assert "│" in wide[1]  # side by side
    small = screen(r.room, SMALL)
    assert "│" not in small[1] and any(set(line) == {"─"} for line in small)  # stacked
    assert screen(r.room, (120, 24)) == wide


def test_a_mouse_click_selects_a_row() -> None:
    r = make_room(view("A"), view("B"), view("C"))
    r.room.render(WIDE, focus=True)
    assert r.room.mouse_event(WIDE, "mouse press", 1, 3, 3, True)  # row 3: C
    assert r.selected == "C" and r.actions[-1] == ui.Selected("C")


def test_tmux_gone_is_said_and_the_list_comes_back() -> None:
    r = make_room(view("A"))
    r.room.update(snap(version=2, tmux_up=False), NOW)
    text = joined(r.room)
    assert "tmux server not running" in text and "The tmux server is not running" in text
    r.room.update(snap(view("A"), version=3), NOW)
    assert "not running" not in joined(r.room) and r.selected == "A"


def test_errors_and_notices_show_as_one_line() -> None:
    r = make_room(view("A"))
    r.room.error("A is asking for permission (asks to use Bash); typing would answer it.\n"
                 "Answer it with `cbos answer`")
    lines = screen(r.room, (80, 24))
    assert lines[-2].startswith(" A is asking for permission") and lines[-2].endswith("…")
    r.room.notice("sent to A")
    assert screen(r.room, (80, 24))[-2].strip() == "sent to A"


def test_the_preview_keeps_the_screens_colours() -> None:
    r = make_room(view("A"))
    r.room.set_screen("A", "\x1b[38;5;174m● red\x1b[0m plain\n\x1b[1mbold\x1b[0m")
    r.room.set_screen("B", "not selected: ignored")
    runs = urwid.testing.render_runs(r.room.preview, (40, 4))
    first = dict((text.strip(), attr) for attr, text in runs[1])
    spec = first["● red"]
    assert spec == urwid.AttrSpec("h174", "default", colors=256)
    assert first["plain"] is None
    assert "not selected" not in joined(r.room)


def test_the_empty_list_says_what_to_do() -> None:
    r = make_room()
    assert "No claude sessions. c: start one in a project" in joined(r.room)
    assert r.press("enter") == [] and "no session to type to" in joined(r.room)
    assert r.press("x") == [] and r.press("ctrl c") == []


# ------------------------------------------------------------------- the real loop


class CanvasScreen(urwid.display.common.BaseScreen):
    """A screen without a terminal: it keeps the last canvas the loop drew."""

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = size
        self.canvas: urwid.Canvas | None = None
        self.draws = 0

    def get_cols_rows(self) -> tuple[int, int]:
        return self.size

    def draw_screen(self, size: tuple[int, int], canvas: urwid.Canvas) -> None:
        self.canvas = canvas
        self.draws += 1

    def hook_event_loop(self, event_loop: Any, callback: Any) -> None:
        pass

    def unhook_event_loop(self, event_loop: Any) -> None:
        pass

    @property
    def text(self) -> str:
        assert self.canvas is not None
        return "\n".join(line.decode() for line in self.canvas.text)


class Harness(NamedTuple):
    app: App
    screen: CanvasScreen

    def step(self, seconds: float = 0.05) -> None:
        """Run the real event loop for a moment."""
        def stop() -> None:
            raise urwid.ExitMainLoop
        self.app.loop.event_loop.alarm(seconds, stop)
        self.app.loop.event_loop.run()
        self.app.loop.draw_screen()  # what the loop would draw when it next goes idle

    def wait(self, condition: Callable[[str], bool], message: str,
             timeout: float = 15.0) -> str:
        def check() -> str | None:
            self.step()
            text = self.screen.text
            return text if condition(text) else None
        try:
            return str(wait_until(check, timeout=timeout, message=message))
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the screen:\n{self.screen.text}") from None

    def keys(self, *keys: str) -> None:
        self.app.loop.process_input(list(keys))




@pytest.fixture
def prompt_log(quiet_fake: Path) -> Path:
    return quiet_fake


@pytest.fixture
def harness(fake_claude: Path, tmux: Tmux, prompt_log: Path) -> Iterator[Harness]:
    from cbos.config import load
    from cbos.engine import Engine

    config: Config = load()
    engine = Engine(config, tmux)
    screen_ = CanvasScreen((120, 30))
    app = App(engine, screen=screen_)
    yield Harness(app, screen_)
    app.stop()


def test_the_loop_lists_sessions_and_previews_the_selected_screen_live(
        cli: Cli, harness: Harness, tmux: Tmux, tmp_path: Path, prompt_log: Path) -> None:
    start_session(cli, tmux, tmp_path, "ALPHA")
    start_session(cli, tmux, tmp_path, "BETA")
    h = harness
    h.app.start()
    text = h.wait(lambda t: "ALPHA" in t and "BETA" in t and "Claude Code" in t,
                  "both sessions listed, the selected screen previewed")
    assert "cbos · 2 sessions" in text
    # Output of the selected session shows without a key: the preview follows its log.
    h.keys("enter", *"SAY streamed-to-preview", "enter")
    h.wait(lambda t: "● streamed-to-preview" in t, "the reply in the preview")
    assert prompts(prompt_log) == ["SAY streamed-to-preview"]
    assert "sent to ALPHA" in h.screen.text
    # Moving the selection previews the other session.
    h.keys("esc", "j")
    text = h.wait(lambda t: "○ BETA · " in t and "Claude Code" in t, "BETA previewed")
    assert "● streamed-to-preview" not in text


def test_the_loop_refuses_typing_into_a_dialog_and_answers_it(
        cli: Cli, harness: Harness, tmux: Tmux, tmp_path: Path, prompt_log: Path) -> None:
    project = start_session(cli, tmux, tmp_path, "ASK").project
    h = harness
    h.app.start()
    h.wait(lambda t: "ASK" in t, "the session listed")
    h.keys("enter", *"WRITE made.txt", "enter")
    h.wait(lambda t: "⚠ Do you want to create made.txt?" in t and "❯ 1. Yes" in t,
           "the dialog in the preview")
    h.keys(*"hello", "enter")  # text into a dialog would answer it: refused, kept
    h.wait(lambda t: "asking for permission" in t, "the refusal in the status line")
    assert h.app.room.input.text == "hello"
    h.keys("esc", "1")
    h.wait(lambda t: "answered ASK: 1" in t, "the answer said")
    wait_until(lambda: (project / "made.txt").exists(), message="the file written")


def test_an_unexpected_error_is_logged_and_shown_as_one_line(
        cli: Cli, harness: Harness, tmux: Tmux, tmp_path: Path) -> None:
    start_session(cli, tmux, tmp_path, "BUG")
    h = harness
    h.app.start()
    h.wait(lambda t: "BUG" in t, "the session listed")

    def broken(slug: str, text: str) -> None:
        raise RuntimeError("boom in set_screen")

    h.app.room.set_screen = broken  # type: ignore[method-assign]
    h.keys("r")
    h.wait(lambda t: "internal error: RuntimeError('boom in set_screen')" in t,
           "the error in the status line")
    logged = h.app.engine.config.own_log.read_text()  # the CLI set logging up (cbos new)
    assert "unexpected error in the TUI" in logged and "boom in set_screen" in logged
    h.keys("j", "k")  # still answering keys
    assert "BUG" in h.screen.text


def test_the_loop_says_when_tmux_is_gone_and_recovers(
        cli: Cli, harness: Harness, tmux: Tmux, tmp_path: Path) -> None:
    start_session(cli, tmux, tmp_path, "GONE")
    h = harness
    h.app.start()
    h.wait(lambda t: "GONE" in t, "the session listed")
    tmux.cmd("kill-server", check=False)
    h.wait(lambda t: "tmux server not running" in t, "tmux gone said", timeout=20)
    start_session(cli, tmux, tmp_path, "BACK")
    h.wait(lambda t: "BACK" in t and "not running" not in t, "the list back", timeout=20)


def test_a_reorder_waits_a_second_in_the_running_loop(harness: Harness) -> None:
    h = harness
    h.app.loop.start()  # the loop alone: these snapshots come from the test, not the board
    try:
        now = time.time()
        board = [view("A", State.WORKING, "Bash: make", since=now - 30),
                 view("B", State.IDLE, since=now - 90)]
        h.app.on_snapshot(Snapshot(1, now, tuple(board), True), None)
        h.keys("j")
        moved = view("B", State.PERMISSION, "asks to use Bash", since=now)
        h.app.on_snapshot(Snapshot(2, now, (board[0], moved), True), None)
        h.step(0.01)
        assert h.app.room.sessions.order == ["A", "B"] and "⚠ B" in h.screen.text
        wait_until(lambda: (h.step(), h.app.room.sessions.order == ["B", "A"])[1],
                   timeout=3, message="the settle alarm reorders")
        assert time.time() - now >= ui.REORDER_DELAY - 0.05
        assert h.app.room.selected is not None and h.app.room.selected.slug == "B"
        assert h.screen.text.splitlines()[1].startswith("⚠ B")
    finally:
        h.app.loop.stop()


def test_ws_runs_beside_the_loop_and_a_taken_port_is_one_line(
        cli: Cli, harness: Harness, tmux: Tmux, tmp_path: Path) -> None:
    pytest.importorskip("cbos.web")
    from websockets.sync.client import connect

    from cbos.app import WsOptions

    start_session(cli, tmux, tmp_path, "WS")
    h = harness
    h.app.start()
    h.app.start_ws(WsOptions("127.0.0.1", 0))
    text = h.wait(lambda t: "ws 127.0.0.1:" in t, "the address in the status bar")
    port = int(text.split("ws 127.0.0.1:")[1].split()[0])
    with connect(f"ws://127.0.0.1:{port}/ws/stream", proxy=None, open_timeout=5) as ws:
        def sessions() -> dict[str, Any] | None:
            h.step()
            try:
                message: dict[str, Any] = json.loads(ws.recv(timeout=0.05))
            except TimeoutError:
                return None
            return message if message.get("type") == "sessions" else None
        greeting = wait_until(sessions, message="the server's greeting")
        assert "WS" in json.dumps(greeting)
        # A second TUI asking for the same port carries on without it, and says why.
        from cbos.config import load
        from cbos.engine import Engine

        other = App(Engine(load(), tmux), screen=CanvasScreen((120, 30)))
        try:
            other.start_ws(WsOptions("127.0.0.1", port))
            assert "WebSocket off: port" in other.room.message.message
            assert other.server is None and "ws off" in joined(other.room)
        finally:
            other.stop()
    h.app.stop()  # shuts the server down
    assert h.app.server is None


def test_ws_with_the_page_shows_its_address_token_included(
        harness: Harness, tmux: Tmux) -> None:
    import http.client

    from cbos.app import WsOptions

    h = harness
    h.app.start()
    h.app.start_ws(WsOptions("127.0.0.1", 0, page=True))
    token = h.app.engine.config.token_file.read_text().strip()
    said = h.app.room.message.message
    found = re.search(r"the page: http://127\.0\.0\.1:(\d+)/#token=(\S+)", said)
    assert found and found.group(2) == token, said
    conn = http.client.HTTPConnection("127.0.0.1", int(found.group(1)), timeout=10)
    try:
        conn.request("GET", "/")
        assert conn.getresponse().status == 200
    finally:
        conn.close()
    h.app.stop()


def test_the_loop_warns_when_claudes_login_expires_soon(
        harness: Harness, private_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time as time_mod

    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    creds = private_home / ".claude" / ".credentials.json"
    creds.parent.mkdir(exist_ok=True)
    creds.write_text(json.dumps({"claudeAiOauth": {
        "accessToken": "secret", "expiresAt": int((time_mod.time() + 7200) * 1000)}}))
    harness.app.start()
    text = harness.wait(lambda t: "login expires in" in t, "the expiry warning")
    assert "secret" not in text


def test_other_machines_sessions_share_the_list_and_a_dropped_host_is_one_line() -> None:
    from cbos.model import HostStatus

    far = view("box1:FAR", State.PERMISSION, "asks to use Bash: make", ago=30, host="box1",
               dialog=PERMISSION)
    near = view("NEAR", State.WAITING, 'done: "ok"', ago=10)
    dropped = HostStatus("box2", False, NOW - 120, "box2: box2 refused the connection",
                         NOW + 8)
    room = ui.ControlRoom()
    actions: list[ui.Action] = []
    room.on_action(actions.append)
    room.update(Snapshot(1, NOW, (far, near), True, (HostStatus("box1", True, NOW, ""),
                                                     dropped)), NOW)
    r = Room(room, actions)
    lines = screen(room)
    assert lines[1].startswith(" box2: unreachable since ")
    assert "box2 refused the connection; retrying in 8s" in lines[1]
    assert not any("box1: " in line for line in lines[:2])  # a host that answers: no line
    rows = [line for line in lines if "FAR" in line or "NEAR" in line]
    assert rows[0].startswith("⚠ box1:FAR") and "NEAR" in rows[1]  # attention across hosts
    assert r.selected == "box1:FAR"
    assert r.press("1") == [ui.Answer("box1:FAR", "1")]
    assert r.press("ctrl c") == [ui.Interrupt("box1:FAR")]
    # Back up: the line goes.
    room.update(Snapshot(2, NOW, (far, near), True, (HostStatus("box2", True, NOW, ""),)),
                NOW)
    assert not any("unreachable" in line for line in screen(room))


# ------------------------------------------------- the preview never hides the question

BLOCKERS = Path(__file__).parent / "fixtures" / "claude-code-2.1.328" / "blockers"
SCREENS = BLOCKERS.parent / "screens"


def test_the_preview_wraps_a_wide_question_keeping_its_colours() -> None:
    """A 160-column trust dialog in a 90-column preview: the question's second half is
    on the next row, not cut off at the edge; the link's grey stays grey."""
    from cbos.dialog import parse_dialog

    ansi_screen = (BLOCKERS / "trust" / "screen.ansi").read_text(encoding="utf-8")
    dialog = parse_dialog(ansi_screen)
    r = make_room(view("A", State.PERMISSION, "dialog: trust", dialog=dialog))
    r.room.set_screen("A", ansi_screen)
    rows = urwid.testing.render_text(r.room.preview, (90, 40))
    text = "\n".join(rows)
    assert "If not," in text and "work from your team)." in text
    assert "review what's in this folder first." in text
    assert all(len(row) <= 90 for row in rows)
    assert not any(set(row.strip()) == {"─"} and len(row.strip()) < 10 for row in rows)
    runs = urwid.testing.render_runs(r.room.preview, (90, 40))
    link = [attr for row in runs for attr, part in row if "Security guide" in part]
    assert link and link[0] == urwid.AttrSpec("h246", "default", colors=256)


def test_a_tall_screen_keeps_the_dialog_options_and_footer_in_view() -> None:
    """The screen is taller than the preview: the dialog at its bottom stays, the
    transcript above goes; blank runs shrink before anything is cut."""
    from cbos.dialog import parse_dialog

    plain = (SCREENS / "09_permission_prompt.txt").read_text(encoding="utf-8")
    dialog = parse_dialog(plain)
    r = make_room(view("A", State.PERMISSION, "asks", dialog=dialog))
    r.room.set_screen("A", plain)
    for cols, rows in ((90, 30), (60, 40), (200, 22)):
        shown = "\n".join(urwid.testing.render_text(r.room.preview, (cols, rows)))
        assert "Do you want to create x.txt?" in shown
        assert "1. Yes" in shown and "3. No" in shown
        assert "Esc to cancel · Tab to amend" in shown


def test_the_control_room_without_a_terminal_is_one_line_and_leaves_nothing_on(
        cli: Cli, tmux: Tmux) -> None:
    """`cbos` builds its engine while urwid imports, with the cyclic collector off: a
    refusal must close that engine and turn the collector back on."""
    result = cli()
    assert result.code == 1 and "the control room needs a terminal" in result.err
    assert gc.isenabled()
    wait_until(lambda: not any(t.name == "cbos-start" for t in threading.enumerate()),
               message="the start-up thread gone")

