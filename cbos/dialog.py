"""Reading a dialog, or a notice that blocks every prompt, off a Claude Code screen.

The input is ``tmux capture-pane -p`` text (colour escapes are dropped) of Claude Code
2.1.328. A dialog replaces the composer box at the bottom of the screen, inside a frame
whose top edge is a rule (``───``); only that frame is read, so numbered lists in the
transcript above are never taken for options.

Shapes recorded (``tests/fixtures/claude-code-2.1.328/screens`` and ``blockers``):

- a tool permission (screens/09): ``Create file`` / path, a diff fenced by ``╌``, the
  question ``Do you want to create x.txt?``, numbered options (one wrapped onto a second
  line), footer ``Esc to cancel · Tab to amend``;
- AskUserQuestion (screens/13): ``☐ Choice`` (the tab header), the question, options each
  with a description line, a rule *between* two options, footer ``Enter to select · ↑/↓ to
  navigate · Esc to cancel``;
- the family of confirm dialogs (screens/19 /add-dir, blockers/trust, blockers/mcp-json):
  options without numbers, the cursor ``❯`` on the selected one, ``Enter to confirm · Esc
  to cancel``; the question is the sentence that asks, not the ``Security guide`` link;
- plan approval (blockers/plan-approval): taller than the screen, so its footer is below
  the last row; the frame's top edge and an option under the cursor still make it a dialog
  (``cut``: options further down may be out of view).

When the top of a tall dialog is out of view instead, the options and footer are read and
the question is whatever part of it is left (possibly none).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from cbos.errors import UsageError

DialogKind = Literal["permission", "question", "dialog"]

CURSOR = "\u276f"  # the selection cursor in front of an option
_ANSI = re.compile(r"\x1b\[[0-9;?:]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|"
                   r"\x1b[()][0-9A-Za-z]|\x1b[=>78]")
# A numbered option: optional cursor, "N.", optional checkbox, the label.
_OPTION = re.compile(r"^(\s*(?:\u276f\s*)?)(\d{1,2})\.\s+(\S.*)$")
_CHECKBOX = re.compile(r"^(\[[ xX✔✓]\]|[☐☒✔✓])\s+")
# One part of the footer: "Esc to cancel", "Tab to amend", "↑/↓ to navigate", "ctrl+e to …".
_HINT = re.compile(r"^[\w+/↑↓←→⇧⏎-]+(?: [\w+/↑↓←→-]+)? to \w.*$")
_RULE_CHARS = frozenset("─━▔▁╌┄-═")  # ╌ also fences the diff inside a permission prompt
_BORDER_CHARS = frozenset("─━▔═")  # the top edge of the dialog frame
_HEADER_BOXES = "☐☒✔✓■□"  # AskUserQuestion tab headers ("☐ Choice")
_TAB_ARROWS = "←→"
_MAX_SCAN = 80  # lines above the footer that can still belong to the dialog
_SENTENCE_END = re.compile(r"(?<=[.?!])\s+(?=[\"'(\[A-Z])")


@dataclass(frozen=True)
class Option:
    number: int  # 1-based position; the key to press when the dialog is numbered
    label: str
    description: str = ""  # AskUserQuestion's line under the label
    checked: bool | None = None  # multi-select: ticked or not; None for single choice


@dataclass(frozen=True)
class Dialog:
    kind: DialogKind
    question: str  # the sentence that asks ("" when it is above the top of the screen)
    options: tuple[Option, ...]
    selected: int | None  # number of the option under the cursor
    title: str = ""  # first line of the frame: "Create file", "Choice", "Accessing …: DIR"
    numbered: bool = True  # False: options are picked with ↑/↓ and Enter (screens/19)
    cut: bool = False  # the footer is below the screen: more options may be out of view
    tabs: tuple[str, ...] = ()  # AskUserQuestion with several questions: their headers
    multi: bool = False  # several options can be ticked (checkboxes)

    def option(self, number: int) -> Option | None:
        for option in self.options:
            if option.number == number:
                return option
        return None


def _is_rule(line: str, chars: frozenset[str] = _RULE_CHARS) -> bool:
    text = line.strip()
    return len(text) >= 10 and set(text) <= chars


def _is_footer(line: str) -> bool:
    parts = [part.strip() for part in line.strip().split("·")]
    if not any(re.fullmatch(r"esc to \w+(?: \w+)?", part.lower()) for part in parts):
        return False
    return all(_HINT.match(part) for part in parts)


def clean_lines(screen_text: str) -> list[str]:
    """Screen text as plain lines: escapes dropped, no-break spaces made spaces."""
    text = _ANSI.sub("", screen_text).replace("\u00a0", " ").replace("\r", "")
    return [line.rstrip() for line in text.split("\n")]


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def parse_dialog(screen_text: str) -> Dialog | None:
    """The dialog at the bottom of ``screen_text``, or ``None`` if the screen shows none."""
    lines = clean_lines(screen_text)
    if lines and not lines[-1]:
        lines.pop()  # the newline that ends the last row
    # A dialog cut by the screen's last row shows an option there, or the blank row
    # between its options and the footer.
    at_bottom = any(line.strip() for line in lines[-2:])
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        return None
    if _is_footer(lines[-1]):
        footer, cut = len(lines) - 1, False
    elif at_bottom:
        # The footer may be below the last row (a dialog taller than the screen). Then
        # the last row is an option, and one option is under the cursor, in a frame.
        footer, cut = len(lines), True
    else:
        return None
    found = _numbered(lines, footer, cut)
    if found is None:
        found = _unnumbered(lines, footer, cut)
    return found


def _frame_top(lines: list[str], index: int) -> int | None:
    """The row of the frame's top edge above ``index`` (None if not within reach)."""
    for i in range(index - 1, max(-1, index - 1 - _MAX_SCAN), -1):
        if _is_rule(lines[i], _BORDER_CHARS):
            return i
    return None


def _numbered(lines: list[str], footer: int, cut: bool) -> Dialog | None:
    # Walk up from the footer to the nearest "1." option: that is where the list starts.
    first = None
    for i in range(footer - 1, max(-1, footer - 1 - _MAX_SCAN), -1):
        match = _OPTION.match(lines[i])
        if match and match.group(2) == "1":
            first = i
            break
    if first is None:
        return None
    options: list[list[str]] = []  # [number, label, description...] as text
    checks: list[bool | None] = []
    selected = None
    text_col = 0
    for line in lines[first:footer]:
        if not line.strip() or _is_rule(line):
            continue
        match = _OPTION.match(line)
        if match and int(match.group(2)) == len(options) + 1:
            if CURSOR in match.group(1):
                selected = len(options) + 1
            text_col = match.start(3)
            label = match.group(3).strip()
            box = _CHECKBOX.match(label)
            checks.append(None if box is None else box.group(1) not in ("[ ]", "☐"))
            if box is not None:
                label = label[box.end():]
            options.append([match.group(2), label, ""])
        elif options and _indent(line) >= text_col:
            options[-1].append(line.strip())  # wrapped label or description line
        else:
            return None  # not an option list after all
    top = _frame_top(lines, first)
    if cut and (selected is None or top is None):
        return None  # no footer: only a framed list with a cursor is a dialog
    title, tabs = _title(lines, first, top)
    question = _question(lines, first, top, fallback=True)
    if not question and not (title or not cut):
        return None
    footer_text = "" if cut else lines[footer]
    kind: DialogKind
    if ("to navigate" in footer_text or tabs
            or (title[:1] != "" and title[0] in _HEADER_BOXES)):
        kind = "question"
    else:
        kind = "permission"
    built = []
    for (number, label, *more), checked in zip(options, checks, strict=True):
        extra = [part for part in more if part]
        if kind == "question":
            built.append(Option(int(number), label, " ".join(extra), checked))
        else:
            built.append(Option(int(number), " ".join([label, *extra]), checked=checked))
    multi = any(check is not None for check in checks)
    return Dialog(kind, question, tuple(built), selected, title.lstrip(_HEADER_BOXES + " "),
                  cut=cut, tabs=tabs, multi=multi)


def _unnumbered(lines: list[str], footer: int, cut: bool) -> Dialog | None:
    # A block of option lines right above the footer, one under the cursor.
    end = footer - 1
    while end >= 0 and not lines[end].strip():
        end -= 1
    start = end
    while start - 1 >= 0 and lines[start - 1].strip() and not _is_rule(lines[start - 1]):
        start -= 1
    block = lines[start:end + 1]
    cursor_rows = [i for i, line in enumerate(block) if line.lstrip().startswith(CURSOR)]
    if len(block) < 2 or len(cursor_rows) != 1:
        return None
    labels = [line.strip().removeprefix(CURSOR).strip() for line in block]
    columns = {len(line) - len(label) for line, label in zip(block, labels, strict=True)}
    if len(columns) != 1:
        return None  # labels of one list start in one column; this is not a list
    top = _frame_top(lines, start)
    if cut and top is None:
        return None
    title, _ = _title(lines, start, top)
    question = _question(lines, start, top, fallback=False) or title
    if not question and cut:
        return None  # neither footer nor question: too little to call it a dialog
    options = tuple(Option(n, label) for n, label in enumerate(labels, 1))
    return Dialog("dialog", question, options, cursor_rows[0] + 1, title, numbered=False,
                  cut=cut)


def _paragraphs(lines: list[str], index: int, top: int | None) -> list[str]:
    """The paragraphs between the frame's top edge and ``index``, nearest first, each
    joined into one line. Without the top edge in view, the topmost one may be cut by
    the screen's first row, so it is left out."""
    low = top + 1 if top is not None else max(0, index - _MAX_SCAN)
    found: list[str] = []
    current: list[str] = []
    for i in range(index - 1, low - 1, -1):
        line = lines[i]
        if not line.strip() or _is_rule(line):
            if current:
                found.append(" ".join(current[::-1]))
                current = []
            continue
        current.append(line.strip())
    if current and top is not None:
        found.append(" ".join(current[::-1]))
    return found


def _question(lines: list[str], index: int, top: int | None, fallback: bool) -> str:
    """The sentence that asks: the nearest paragraph with a question mark, cut after its
    last asking sentence (the trust dialog goes on with "(Like your own code…). If not,
    …"). With no question mark and ``fallback``, the paragraph right above the options
    (an AskUserQuestion question need not end in "?")."""
    paragraphs = [p for p in _paragraphs(lines, index, top)
                  if p[0] not in _HEADER_BOXES + _TAB_ARROWS]
    for text in paragraphs:
        if "?" not in text:
            continue
        sentences = _SENTENCE_END.split(text)
        last = max(i for i, s in enumerate(sentences) if "?" in s)
        return " ".join(sentences[:last + 1])
    if fallback and len(paragraphs) > 1:  # the last one is the title
        return paragraphs[0]
    return ""


def _title(lines: list[str], index: int, top: int | None) -> tuple[str, tuple[str, ...]]:
    """First line inside the frame, and the question tabs when it is a tab row."""
    if top is None:
        return "", ()
    body = [line.strip() for line in lines[top + 1:index] if line.strip()]
    body = [line for line in body if not _is_rule(line)]
    if not body:
        return "", ()
    first = body[0]
    tabs = _tabs(first)
    if tabs:
        return "", tabs
    if first.endswith(":") and len(body) > 1:
        return f"{first} {body[1]}", ()  # "Accessing workspace:" / "/home/dev/proj"
    return first, ()


def _tabs(line: str) -> tuple[str, ...]:
    """``← ☐ Color  ☐ Size  ✔ Submit →``: the headers of a several-question dialog."""
    text = line.strip().strip(_TAB_ARROWS).strip()
    parts = [p.strip() for p in re.split(r"\s{2,}", text) if p.strip()]
    if len(parts) < 2 or not all(p[0] in _HEADER_BOXES for p in parts):
        return ()
    return tuple(p.lstrip(_HEADER_BOXES + " ") for p in parts)


# ------------------------------------------------------------------ blocking notices

_NOTICES = (
    (re.compile(r"\bnot logged in\b.*?(run /login)?", re.IGNORECASE), "not logged in"),
    (re.compile(r"\b(?:invalid api key|oauth token (?:has )?expired|credentials? "
                r"(?:have |has )?expired)\b.*?(run /login)?", re.IGNORECASE),
     "credentials expired"),
)


# The spinner row while claude retries the API (seen live: 2.1.197 "✻ Unable to connect to
# API (ConnectionRefused) · Retrying in 35s · attempt 8/10", 2.1.332 "✻ Can't reach the
# API server — check your internet or DNS (ENOTFOUND) · retrying in 2s · attempt 3/10").
_RETRY = re.compile(r"^[\s✻✽✶✳✢·*⏺]*(?P<what>\S.*?)\s+·\s+retrying in \d+\s*s\s+·\s+"
                    r"attempt\s+(?P<n>\d+)/(?P<of>\d+)", re.IGNORECASE)


def retry_notice(screen_text: str) -> str:
    """``retrying: Can't reach the API server … (attempt 3/10)`` while the spinner row
    above the prompt box says claude retries the API; "" otherwise. No hook tells it: the
    turn looks like thinking until the retries run out (then StopFailure)."""
    lines = clean_lines(screen_text)
    rules = [i for i, line in enumerate(lines) if _is_rule(line, frozenset("─"))]
    if len(rules) < 2:
        return ""
    upper = rules[-2]
    for line in reversed(lines[max(0, upper - 4):upper]):
        match = _RETRY.match(line)
        if match:
            return f"retrying: {match['what']} (attempt {match['n']}/{match['of']})"
    return ""


def composer_shown(screen_text: str) -> bool:
    """Whether Claude's prompt box is on screen: a ``❯`` line between the last two rules.
    Until it is, Claude has no input handler and drops what is typed (2.1.332 spends
    seconds after its startup dialogs like that)."""
    lines = clean_lines(screen_text)
    rules = [i for i, line in enumerate(lines) if _is_rule(line, frozenset("─"))]
    if len(rules) < 2:
        return False
    return any(line.lstrip().startswith("❯") and not _OPTION.match(line)
               for line in lines[rules[-2] + 1:rules[-1]])  # (an option's cursor is not it)


def blocking_notice(screen_text: str) -> str:
    """What the status rows around the composer say stops every prompt, in words:
    ``not logged in: run /login`` (blockers/no-credentials); "" when nothing does.

    Only the two rows just above the composer's top rule (2.1.328 puts the notice there)
    and the footer rows under its bottom rule (2.1.332 puts it at the footer's right end)
    are read: the transcript may quote such words without them being true now.
    """
    lines = clean_lines(screen_text)
    rules = [i for i, line in enumerate(lines) if _is_rule(line, frozenset("─"))]
    if len(rules) < 2:
        return ""
    upper, lower = rules[-2], rules[-1]
    for line in [*lines[max(0, upper - 2):upper], *lines[lower + 1:lower + 3]]:
        for pattern, cause in _NOTICES:
            match = pattern.search(line)
            if match:
                action = "run /login" if "/login" in line else ""
                return f"{cause}: {action}" if action else cause
    return ""


# ------------------------------------------------------------------------- answering


def answer_keys(dialog: Dialog, choice: str) -> list[str]:
    """tmux key names that pick ``choice`` in ``dialog``.

    ``choice`` is an option number, ``yes``/``y`` (the first option labelled "Yes…", else
    the first option), ``no``/``n`` (the option labelled "No…", else the last; refused for a
    question, which has no "no"), or ``esc``/``cancel``. Numbered dialogs take the digit
    (pressing it picks the option at once, as recorded in write_allow); unnumbered ones
    (screens/19, blockers/trust) are walked with Up/Down from the cursor, then Enter, as
    the recording answered the trust dialog.
    """
    numbers = [option.number for option in dialog.options]
    valid = ", ".join(map(str, numbers))
    word = choice.strip().lower()
    if word in ("esc", "escape", "cancel"):
        return ["Escape"]
    if not numbers:
        raise UsageError("this dialog shows no options; answer it with esc, or look at it "
                         "with `cbos buffer`")
    if word.isdigit():
        number = int(word)
        if number not in numbers:
            more = " (more may be below the screen)" if dialog.cut else ""
            raise UsageError(f"no option {number} in this dialog{more}; choose one of "
                             f"{valid}, or yes, no, esc")
    elif word in ("yes", "y"):
        number = _starting_with(dialog, "yes") or numbers[0]
    elif word in ("no", "n"):
        if dialog.kind == "question":
            raise UsageError(f"{dialog.question or dialog.title!r} is a question, not a "
                             f"yes/no prompt; answer with an option number ({valid}) or esc")
        number = _starting_with(dialog, "no") or numbers[-1]
    else:
        raise UsageError(f"cannot answer {choice!r}: use an option number ({valid}), "
                         "yes, no or esc")
    if dialog.numbered and number <= 9 and not dialog.multi:
        return [str(number)]
    current = dialog.selected or numbers[0]
    step = "Down" if number > current else "Up"
    return [step] * abs(number - current) + ["Enter"]


def _starting_with(dialog: Dialog, word: str) -> int | None:
    for option in dialog.options:
        if re.match(rf"{word}\b", option.label, re.IGNORECASE):
            return option.number
    return None
