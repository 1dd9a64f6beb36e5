"""Reading dialogs off recorded Claude Code 2.1.328 screens, and the keys that answer them."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from cbos.dialog import (
    CURSOR,
    Dialog,
    Option,
    answer_keys,
    blocking_notice,
    composer_shown,
    parse_dialog,
    retry_notice,
)
from cbos.errors import UsageError
from tests.fakeclaude import screens as frames

RECORDED = Path(__file__).parent / "fixtures" / "claude-code-2.1.328"
SCREENS = RECORDED / "screens"
BLOCKERS = RECORDED / "blockers"


def screen(name: str) -> str:
    return (SCREENS / f"{name}.txt").read_text(encoding="utf-8")


def blocker(name: str, file: str = "screen.txt") -> str:
    return (BLOCKERS / name / file).read_text(encoding="utf-8")


WRITE_OPTION_2 = ("Yes, and switch to accept edits (auto-approve file edits and common file "
                  "commands) for this session; Yes, and always allow access to /tmp for this "
                  "session (shift+tab)")  # wrapped over two screen lines
WRITE = Dialog("permission", "Do you want to create x.txt?",
               (Option(1, "Yes"), Option(2, WRITE_OPTION_2), Option(3, "No")), 1,
               title="Create file")
ASK = Dialog("question", "Pick one?",
             (Option(1, "Alpha", "first option"), Option(2, "Beta", "second option"),
              Option(3, "Type something."), Option(4, "Chat about this")), 1, title="Choice")
TRUST = Dialog("dialog", "This session hasn't worked here before. Is this a directory you "
               "created or one you trust?",
               (Option(1, "No, leave it out"), Option(2, "Yes, add it")), 1,
               title="Adding a new directory: /home/dev/rec/extra", numbered=False)


WORKSPACE = Dialog("dialog", "Quick safety check: Is this a project you created or one you "
                   "trust?", (Option(1, "No, exit"), Option(2, "Yes, I trust this folder")), 1,
                   title="Accessing workspace: /home/dev/proj", numbered=False)
MCP = Dialog("dialog", "New MCP server found in this project: demo",
             tuple(Option(n, label) for n, label in enumerate(frames.MCP_OPTIONS, 1)), 3,
             title="New MCP server found in this project: demo", numbered=False)
PLAN = Dialog("permission", "Exit plan mode?",
              tuple(Option(n, label) for n, label in enumerate(frames.PLAN_OPTIONS, 1)), 1,
              title="Exit plan mode?", cut=True)


class Seen(NamedTuple):
    screen: str
    dialog: Dialog | None


SEEN = [
    Seen("01_idle_startup", None),
    Seen("02_after_say_done", None),
    Seen("03_idle_after_idle_notification", None),
    Seen("04_after_run_echo", None),
    Seen("05_tool_running", None),
    Seen("06_streaming", None),
    Seen("07_waiting_for_first_token", None),
    Seen("08_thinking_block_streaming", None),
    Seen("08b_after_thinking", None),
    Seen("09_permission_prompt", WRITE),
    Seen("10_permission_prompt_after_notification", WRITE),
    Seen("11_after_permission_granted", None),
    Seen("12_after_permission_denied", None),  # "1 written by model backend" in the diff
    Seen("13_ask_user_question", ASK),
    Seen("14_after_esc_interrupt_stream", None),
    Seen("15_after_esc_interrupt_tool", None),
    Seen("16_after_agent", None),
    Seen("17_after_api_error", None),
    Seen("18_after_compact", None),
    Seen("19_add_dir_trust_dialog", TRUST),
    Seen("20_after_exit", None),
    Seen("21_after_one_ctrlc", None),
    Seen("21_after_one_ctrld", None),
]


def test_every_recorded_screen_is_in_the_table() -> None:
    assert {p.stem for p in SCREENS.glob("*.txt")} == {s.screen for s in SEEN}
    assert {p.name for p in BLOCKERS.iterdir() if p.is_dir()} == set(BLOCKED)


class Blocked(NamedTuple):
    dialog: Dialog | None
    notice: str  # blocking_notice() of the screen
    keys: list[str]  # what answer_keys gives for the recording's answer
    choice: str  # that answer, as a person would type it to cbos


# Each blocker (blockers/README.md): what the screen shows, and the recorded answer.
BLOCKED = {
    "trust": Blocked(WORKSPACE, "", ["Down", "Enter"], "2"),
    "mcp-json": Blocked(MCP, "", ["Enter"], "3"),
    "plan-approval": Blocked(PLAN, "", ["Escape"], "esc"),
    "rate-limit": Blocked(None, "", [], ""),
    "no-credentials": Blocked(None, "not logged in: run /login", [], ""),
}


@pytest.mark.parametrize("name", sorted(BLOCKED))
def test_recorded_blockers(name: str) -> None:
    row = BLOCKED[name]
    for file in ("screen.txt", "screen.ansi"):  # plain, and with colours (capture-pane -e)
        text = blocker(name, file)
        assert parse_dialog(text) == row.dialog
        assert blocking_notice(text) == row.notice
    if row.dialog is not None:
        notes = json.loads(blocker(name, "notes.json"))
        assert answer_keys(row.dialog, row.choice) == row.keys == notes["answer"]
    after = blocker(name, "after.txt")
    assert parse_dialog(after) is None  # answered: the composer is back


def test_yes_and_no_on_the_startup_dialogs() -> None:
    assert answer_keys(WORKSPACE, "yes") == ["Down", "Enter"]
    assert answer_keys(WORKSPACE, "no") == ["Enter"]
    assert answer_keys(MCP, "yes") == ["Up", "Up", "Enter"]  # "Use this MCP server"
    assert answer_keys(MCP, "no") == ["Enter"]  # no "No…": the last option
    assert answer_keys(PLAN, "yes") == ["1"]
    assert answer_keys(PLAN, "no") == ["2"]
    with pytest.raises(UsageError, match="more may be below the screen"):
        answer_keys(PLAN, "3")


@pytest.mark.parametrize("row", SEEN, ids=[s.screen for s in SEEN])
def test_dialog_on_each_recorded_screen(row: Seen) -> None:
    assert parse_dialog(screen(row.screen)) == row.dialog


def with_lines_replaced(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new)


# Built from screens/09 (same layout): the Bash form of the prompt asks "proceed?".
BASH_PROMPT = with_lines_replaced(
    screen("09_permission_prompt"), " Do you want to create x.txt?", " Do you want to proceed?")


class Made(NamedTuple):
    name: str
    text: str
    kind: str | None  # None: no dialog


MADE = [
    Made("bash proceed", BASH_PROMPT, "permission"),
    # ANSI colour left in (capture-pane -e) is ignored.
    Made("colour escapes", screen("09_permission_prompt").replace(
        f"{CURSOR} 1. Yes", f"\x1b[38;5;153m{CURSOR} 1. Yes\x1b[39m"), "permission"),
    # The transcript mentions "1." lines; the bottom is the normal composer: no dialog.
    Made("numbered list in transcript", with_lines_replaced(
        screen("04_after_run_echo"), "● done", "● Steps:\n  1. Yes\n  2. No\n  3. Maybe"),
        None),
    # A dialog quoted in the transcript, with the composer below it: not open.
    Made("dialog text above the composer", screen("09_permission_prompt") + "\n"
         + "\n".join(screen("12_after_permission_denied").splitlines()[-4:]), None),
    Made("footer without options", "Some text\n\n Esc to cancel · Tab to amend\n", None),
    # The options alone, without the key-hint footer under them, are not an open dialog.
    Made("no footer", screen("09_permission_prompt").replace(
        " Esc to cancel · Tab to amend", ""), None),
    # A prompt echo and its output above a footer: lines not aligned as one option list.
    Made("unaligned lines above a footer", with_lines_replaced(
        screen("19_add_dir_trust_dialog"), "     Yes, add it", "  ⎿  Yes, add it"), None),
    Made("options out of order", with_lines_replaced(
        screen("09_permission_prompt"), "   3. No", "   5. No"), None),
    Made("footer words inside prose", with_lines_replaced(
        screen("02_after_say_done"), "● hello", "● Press Esc to cancel · 1. Yes"), None),
    Made("empty screen", "", None),
]


@pytest.mark.parametrize("row", MADE, ids=[m.name for m in MADE])
def test_dialog_on_edited_screens(row: Made) -> None:
    dialog = parse_dialog(row.text)
    assert (dialog.kind if dialog else None) == row.kind
    if dialog is not None:
        assert [o.label for o in dialog.options][::2] == ["Yes", "No"]


def test_bash_prompt_question() -> None:
    dialog = parse_dialog(BASH_PROMPT)
    assert dialog is not None and dialog.question == "Do you want to proceed?"


def test_cursor_moved_to_another_option() -> None:
    moved = screen("13_ask_user_question").replace(f"{CURSOR} 1. Alpha", "  1. Alpha").replace(
        "  2. Beta", f"{CURSOR} 2. Beta")
    dialog = parse_dialog(moved)
    assert dialog is not None and dialog.selected == 2


class Answer(NamedTuple):
    dialog: Dialog
    choice: str
    keys: list[str] | None  # None: refused
    error: str = ""  # must appear in the refusal


ANSWERS = [
    Answer(WRITE, "1", ["1"]),
    Answer(WRITE, "3", ["3"]),
    Answer(WRITE, "yes", ["1"]),
    Answer(WRITE, " Y ", ["1"]),
    Answer(WRITE, "no", ["3"]),
    Answer(WRITE, "n", ["3"]),
    Answer(WRITE, "esc", ["Escape"]),
    Answer(WRITE, "cancel", ["Escape"]),
    Answer(WRITE, "4", None, "choose one of 1, 2, 3"),
    Answer(WRITE, "0", None, "no option 0"),
    Answer(WRITE, "maybe", None, "cannot answer 'maybe'"),
    Answer(WRITE, "", None, "option number (1, 2, 3)"),
    Answer(ASK, "2", ["2"]),
    Answer(ASK, "yes", ["1"]),
    Answer(ASK, "no", None, "is a question"),
    Answer(ASK, "5", None, "1, 2, 3, 4"),
    Answer(ASK, "Escape", ["Escape"]),
    # Unnumbered (screens/19): walk from the cursor, then Enter. "yes" is the Yes option.
    Answer(TRUST, "yes", ["Down", "Enter"]),
    Answer(TRUST, "no", ["Enter"]),
    Answer(TRUST, "2", ["Down", "Enter"]),
    Answer(TRUST, "1", ["Enter"]),
    Answer(TRUST, "3", None, "1, 2"),
    Answer(Dialog("dialog", "Go?", (Option(1, "Later"), Option(2, "Now"), Option(3, "Never")),
                  3, numbered=False), "1", ["Up", "Up", "Enter"]),
    # No option labelled "No…": the last option.
    Answer(Dialog("permission", "Go?", (Option(1, "Yes"), Option(2, "Stop")), 1), "no", ["2"]),
    # "Not now" is not "No".
    Answer(Dialog("permission", "Go?", (Option(1, "Not now"), Option(2, "Nope"),
                                        Option(3, "No, thanks")), 1), "no", ["3"]),
]


@pytest.mark.parametrize("row", ANSWERS, ids=[f"{a.dialog.kind}-{a.choice!r}" for a in ANSWERS])
def test_answer_keys(row: Answer) -> None:
    if row.keys is None:
        with pytest.raises(UsageError, match=re.escape(row.error)):
            answer_keys(row.dialog, row.choice)
    else:
        assert answer_keys(row.dialog, row.choice) == row.keys


def test_recorded_dialogs_answer_as_the_recording_did() -> None:
    # write_allow answered with the key "1"; ask_user with Enter on the preselected option.
    write, ask = parse_dialog(screen("09_permission_prompt")), parse_dialog(
        screen("13_ask_user_question"))
    assert write is not None and answer_keys(write, "yes") == ["1"]
    assert ask is not None and ask.selected == 1 and answer_keys(ask, "1") == ["1"]


# ------------------------------------------------- the same dialogs at other sizes

TRANSCRIPT = ["", " ▐▛███▛█   Claude Code v2.1.328", "", "❯ Which one? Pick:",
              "● Steps:", "  1. Yes", "  2. No", "  3. Maybe", ""]
WRITE_OPTIONS = ("Yes", WRITE_OPTION_2, "No")
ASK_OPTIONS = (("Alpha", "first option"), ("Beta", "second option"))
MANY = (("Red, the colour of the first option",
         "warm and bright, and described at some length too so that it wraps"),
        ("Green", "calm"), ("Blue", "cool"))


class Shape(NamedTuple):
    name: str
    draw: Any  # cols -> rows of the dialog
    expected: Dialog


def _opts(labels: Any) -> tuple[Option, ...]:
    return tuple(Option(n, label) for n, label in enumerate(labels, 1))


def _ask_opts(pairs: Any, multi: bool = False, checked: tuple[int, ...] = ()
              ) -> tuple[Option, ...]:
    def tick(n: int) -> bool | None:
        return (n - 1 in checked) if multi else None
    found = [Option(n, label, description, tick(n)) for n, (label, description)
             in enumerate(pairs, 1)]
    n = len(pairs)
    return (*found, Option(n + 1, "Type something."), Option(n + 2, "Chat about this"))


SHAPES = [
    Shape("trust", lambda c: frames.trust(c, "/home/dev/proj"), WORKSPACE),
    Shape("trust-moved", lambda c: frames.trust(c, "/home/dev/proj", selected=1),
          replace(WORKSPACE, selected=2)),
    Shape("mcp", lambda c: frames.mcp_servers(c, "demo"), MCP),
    Shape("plan", frames.plan_approval,
          Dialog("permission", "Exit plan mode?", _opts(frames.PLAN_OPTIONS), 1,
                 "Exit plan mode?")),
    Shape("add-dir", lambda c: frames.add_dir(c, "/home/dev/rec/extra"), TRUST),
    Shape("write", lambda c: frames.write_permission(
        c, "../../../x.txt", "x.txt", ["written by model backend"], WRITE_OPTIONS), WRITE),
    Shape("ask", lambda c: frames.ask(c, "Pick one?", ASK_OPTIONS), ASK),
    Shape("ask-tabs", lambda c: frames.ask(
        c, "Which colour should the new theme use for its accents?", MANY, selected=1,
        headers=("Colour", "Size", "Font")),
        Dialog("question", "Which colour should the new theme use for its accents?",
               _ask_opts(MANY), 2, tabs=("Colour", "Size", "Font", "Submit"))),
    Shape("multi-select", lambda c: frames.ask(
        c, "Which features should we enable?", MANY, headers=("Features",), multi=True,
        checked=(1,)),
        Dialog("question", "Which features should we enable?",
               _ask_opts(MANY, multi=True, checked=(1,)), 1, "Features", multi=True)),
]
WIDTHS = [60, 61, 73, 80, 99, 120, 159, 160, 161, 200, 211, 250]


def _screen(rows: list[str], height: int) -> str:
    body = TRANSCRIPT + rows
    body = [""] * max(0, height - len(body)) + body
    return "\n".join(body[-height:]) + "\n"


@pytest.mark.parametrize("cols", WIDTHS)
@pytest.mark.parametrize("shape", SHAPES, ids=[s.name for s in SHAPES])
def test_dialog_at_any_width(shape: Shape, cols: int) -> None:
    rows = shape.draw(cols)
    assert max(len(row) for row in rows) <= cols
    assert parse_dialog(_screen(rows, 50)) == shape.expected


def _first_option_row(shape: Shape, rows: list[str]) -> int:
    label = shape.expected.options[0].label[:12]
    return next(i for i, row in enumerate(rows) if label in row)


@pytest.mark.parametrize("cols", [60, 97, 160, 250])
@pytest.mark.parametrize("shape", SHAPES, ids=[s.name for s in SHAPES])
def test_dialog_with_its_footer_below_the_screen(shape: Shape, cols: int) -> None:
    """Taller than the pane: the footer (and maybe the blank row above it) is out of
    view; the rest reads the same, marked ``cut``."""
    rows = shape.draw(cols)
    assert rows[-1].strip().startswith(("Enter", "Esc"))
    for hidden in (1, 2) if rows[-2] == "" else (1,):
        dialog = parse_dialog(_screen(rows[:-hidden], 50))
        assert dialog == replace(shape.expected, cut=True), f"{hidden} rows hidden"


@pytest.mark.parametrize("cols", [60, 97, 160, 250])
@pytest.mark.parametrize("shape", SHAPES, ids=[s.name for s in SHAPES])
def test_dialog_cut_inside_its_options(shape: Shape, cols: int) -> None:
    """Cut further up, what is left of the options is read, or nothing: never options
    that are not there, never another question."""
    rows = shape.draw(cols)
    first = _first_option_row(shape, rows)
    for end in range(first + 1, len(rows) - 2):
        dialog = parse_dialog(_screen(rows[:end], 50))
        if dialog is None:
            continue
        assert dialog.cut
        assert dialog.options == shape.expected.options[:len(dialog.options)] or (
            dialog.options[:-1] == shape.expected.options[:len(dialog.options) - 1])
        assert dialog.question == shape.expected.question


@pytest.mark.parametrize("cols", [60, 97, 160, 250])
@pytest.mark.parametrize("shape", SHAPES, ids=[s.name for s in SHAPES])
def test_dialog_with_its_top_above_the_screen(shape: Shape, cols: int) -> None:
    """The screen shows the dialog's last rows only: options and footer stay readable;
    the question is read whole or not at all."""
    rows = shape.draw(cols)
    first = _first_option_row(shape, rows)
    for height in range(len(rows) - first, len(rows) + 1):
        dialog = parse_dialog("\n".join(rows[-height:]))
        assert dialog is not None, f"{height} rows shown"
        assert dialog.options == shape.expected.options
        assert dialog.selected == shape.expected.selected
        assert dialog.question in (shape.expected.question, "")
        if height == len(rows):
            assert dialog == shape.expected


def test_screen_narrower_than_recorded_wraps_the_question() -> None:
    rows = frames.trust(60, "/home/dev/proj")
    assert sum(1 for row in rows if "Quick safety" in row or "trust?" in row) >= 2
    dialog = parse_dialog(_screen(rows, 40))
    assert dialog is not None and dialog.question == WORKSPACE.question


def test_notice_only_above_the_composer() -> None:
    quoted = blocker("rate-limit").replace("● API Error", "● Not logged in · run /login; API Error")
    assert blocking_notice(quoted) == ""
    assert blocking_notice("") == ""
    expired = blocker("no-credentials").replace("Not logged in", "OAuth token has expired")
    assert blocking_notice(expired) == "credentials expired: run /login"


@pytest.mark.parametrize(("name", "shown"), [
    ("01_idle_startup", True), ("02_after_say_done", True),
    ("12_after_permission_denied", True), ("09_permission_prompt", False),
    ("13_ask_user_question", False), ("19_add_dir_trust_dialog", False),
    ("20_after_exit", False),
])
def test_the_prompt_box_is_found_on_recorded_screens(name: str, shown: bool) -> None:
    assert composer_shown(screen(name)) is shown


def test_no_prompt_box_before_the_session_or_on_a_blank_screen() -> None:
    assert not composer_shown(blocker("trust"))
    assert not composer_shown(blocker("mcp-json"))
    assert not composer_shown("")
    assert composer_shown(blocker("no-credentials"))  # a prompt box, though prompts fail


RULE = "─" * 60


@pytest.mark.parametrize(("spinner", "said"), [
    ("✻ Can't reach the API server — check your internet or DNS (ENOTFOUND) · retrying in "
     "2s · attempt 3/10", "retrying: Can't reach the API server — check your internet or DNS "
     "(ENOTFOUND) (attempt 3/10)"),  # Claude Code 2.1.332, seen live
    ("✻ Unable to connect to API (ConnectionRefused) · Retrying in 35s · attempt 8/10",
     "retrying: Unable to connect to API (ConnectionRefused) (attempt 8/10)"),  # 2.1.197
    ("✻ Thinking… (3s)", ""),
])
def test_the_api_retry_is_read_off_the_spinner_row(spinner: str, said: str) -> None:
    screen = "\n".join(["❯ hello", spinner, "  ⎿  Tip: press Esc to interrupt", "", RULE,
                        "❯ ", RULE, "  esc to interrupt"])
    assert retry_notice(screen) == said
    # The same words in the transcript, far above the prompt box, are history.
    assert retry_notice("\n".join([spinner, *["text"] * 8, RULE, "❯ ", RULE])) == ""


def test_not_logged_in_at_the_footers_end_as_claude_2_1_332_shows_it() -> None:
    screen = "\n".join([
        "▎ https://code.claude.com/docs/en/permission-modes", RULE, "❯ ", RULE,
        "  ⏵⏵ auto mode on (shift+tab to cycle) · ← for agents" + " " * 40
        + "Not logged in · run /login",
        " " * 80 + "◐ medium · /effort"])
    assert blocking_notice(screen) == "not logged in: run /login"
    # Words under the footer's two rows, or in the prompt box, are not the footer.
    assert blocking_notice("\n".join([RULE, "❯ Not logged in?", RULE, "a", "b",
                                      "Not logged in · run /login"])) == ""
