"""Reading a permission or question dialog off a Claude Code screen, and answering it.

The input is ``tmux capture-pane -p`` text (no colour escapes) of Claude Code 2.1.328.
A dialog replaces the composer box at the bottom of the screen, so only the *last* lines
count: the screen must end with a key-hint footer (``Esc to cancel · Tab to amend``,
``Enter to select · ↑/↓ to navigate · Esc to cancel``, ``Enter to confirm · Esc to
cancel``). Everything above the option list is transcript, which may well contain
numbered lists; it is never read as options.

Shapes seen in ``tests/fixtures/claude-code-2.1.328/screens``:

- 09/10, a tool permission: a rule, ``Create file`` / path, a diff, the question
  ``Do you want to create x.txt?``, then ``1. Yes`` (under the cursor) / ``2. Yes, and …``
  (wrapped onto a second line) / ``3. No``.
- 13, AskUserQuestion: a rule, ``☐ Choice`` (the header), the question ``Pick one?``,
  options ``1. Alpha`` … each followed by an indented description line, a rule *between*
  options 3 and 4.
- 19, the /add-dir trust dialog: options without numbers (``No, leave it out`` /
  ``Yes, add it``), picked with the arrow keys and Enter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from cbos.errors import UsageError

DialogKind = Literal["permission", "question", "dialog"]

CURSOR = "\u276f"  # the selection cursor in front of an option
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-B]|\x1b[=>]")
# A numbered option: optional cursor, "N.", the label. Group 2 is where the label starts.
_OPTION = re.compile(r"^(\s*(?:\u276f\s*)?)(\d{1,2})\.\s+(\S.*)$")
# One part of the footer: "Esc to cancel", "Tab to amend", "↑/↓ to navigate", "ctrl+e to …".
_HINT = re.compile(r"^[\w+/↑↓←→⇧⏎-]+(?: [\w+/↑↓←→-]+)? to \w.*$")
_RULE_CHARS = frozenset("─━▔▁╌┄-═")  # ╌ also fences the diff inside a permission prompt
_BORDER_CHARS = frozenset("─━▔═")  # the top edge of the dialog box
_HEADER_BOXES = "☐☒✔✓■□"  # AskUserQuestion tab headers ("☐ Choice")
_MAX_SCAN = 80  # lines above the footer that can still belong to the dialog


@dataclass(frozen=True)
class Option:
    number: int  # 1-based position; the key to press when the dialog is numbered
    label: str
    description: str = ""  # AskUserQuestion's line under the label


@dataclass(frozen=True)
class Dialog:
    kind: DialogKind
    question: str
    options: tuple[Option, ...]
    selected: int | None  # number of the option under the cursor
    title: str = ""  # first line of the dialog box: "Create file", "Choice", "Adding a …: DIR"
    numbered: bool = True  # False: options are picked with ↑/↓ and Enter (screens/19)

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
    if not any(part.lower() == "esc to cancel" for part in parts):
        return False
    return all(_HINT.match(part) for part in parts)


def _clean(screen_text: str) -> list[str]:
    text = _ANSI.sub("", screen_text).replace("\u00a0", " ").replace("\r", "")
    return [line.rstrip() for line in text.split("\n")]


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def parse_dialog(screen_text: str) -> Dialog | None:
    """The dialog at the bottom of ``screen_text``, or ``None`` if the screen shows none."""
    lines = _clean(screen_text)
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines or not _is_footer(lines[-1]):
        return None
    footer = len(lines) - 1
    numbered = _numbered(lines, footer)
    if numbered is not None:
        return numbered
    return _unnumbered(lines, footer)


def _numbered(lines: list[str], footer: int) -> Dialog | None:
    # Walk up from the footer to the nearest "1." option: that is where the list starts.
    first = None
    for i in range(footer - 1, max(-1, footer - 1 - _MAX_SCAN), -1):
        match = _OPTION.match(lines[i])
        if match and match.group(2) == "1":
            first = i
            break
    if first is None:
        return None
    options: list[list[str]] = []  # [number, label, description] as text
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
            options.append([match.group(2), match.group(3).strip(), ""])
        elif options and _indent(line) >= text_col:
            options[-1].append(line.strip())  # wrapped label or description line
        else:
            return None  # not an option list after all
    question_lines = _paragraph_above(lines, first)
    if not question_lines:
        return None
    title = _title(lines, first)
    footer_text = lines[footer]
    kind: DialogKind
    if "to navigate" in footer_text or (title[:1] != "" and title[0] in _HEADER_BOXES):
        kind = "question"
    elif "Tab to amend" in footer_text or question_lines[0].startswith("Do you want to"):
        kind = "permission"
    else:
        kind = "dialog"
    built = []
    for number, label, *more in options:
        extra = [part for part in more if part]
        if kind == "question":
            built.append(Option(int(number), label, " ".join(extra)))
        else:
            built.append(Option(int(number), " ".join([label, *extra])))
    return Dialog(kind, " ".join(question_lines), tuple(built), selected,
                  title.lstrip(_HEADER_BOXES + " "))


def _unnumbered(lines: list[str], footer: int) -> Dialog | None:
    # screens/19: a block of option lines right above the footer, one with the cursor.
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
    question = ""
    for i in range(start - 1, max(-1, start - 1 - _MAX_SCAN), -1):
        if _is_rule(lines[i]):
            break
        if lines[i].strip().endswith("?"):
            question = " ".join(_paragraph_above(lines, i + 1))
            break
    if not question:
        question = " ".join(_paragraph_above(lines, start))
    if not question:
        return None
    options = tuple(Option(n, label) for n, label in enumerate(labels, 1))
    return Dialog("dialog", question, options, cursor_rows[0] + 1, _title(lines, start),
                  numbered=False)


def _paragraph_above(lines: list[str], index: int) -> list[str]:
    """The non-blank lines just above ``index`` (skipping blanks), up to a blank or a rule."""
    i = index - 1
    while i >= 0 and not lines[i].strip():
        i -= 1
    found: list[str] = []
    while i >= 0 and lines[i].strip() and not _is_rule(lines[i]):
        found.append(lines[i].strip())
        i -= 1
    return found[::-1]


def _title(lines: list[str], index: int) -> str:
    """First line inside the dialog box (below the nearest rule above ``index``)."""
    top = None
    for i in range(index - 1, max(-1, index - 1 - _MAX_SCAN), -1):
        if _is_rule(lines[i], _BORDER_CHARS):
            top = i
            break
    if top is None:
        return ""
    body = [line.strip() for line in lines[top + 1:index] if line.strip()]
    body = [line for line in body if not _is_rule(line)]
    if not body:
        return ""
    if body[0].endswith(":") and len(body) > 1:
        return f"{body[0]} {body[1]}"  # "Adding a new directory:" / "/home/dev/rec/extra"
    return body[0]


def answer_keys(dialog: Dialog, choice: str) -> list[str]:
    """tmux key names that pick ``choice`` in ``dialog``.

    ``choice`` is an option number, ``yes``/``y`` (the first option labelled "Yes…", else
    the first option), ``no``/``n`` (the option labelled "No…", else the last; refused for a
    question, which has no "no"), or ``esc``/``cancel``. Numbered dialogs take the digit
    (pressing it picks the option at once, as recorded in write_allow); unnumbered ones
    (screens/19) are walked with Up/Down from the cursor, then Enter.
    """
    numbers = [option.number for option in dialog.options]
    valid = ", ".join(map(str, numbers))
    word = choice.strip().lower()
    if word in ("esc", "escape", "cancel"):
        return ["Escape"]
    if word.isdigit():
        number = int(word)
        if number not in numbers:
            raise UsageError(f"no option {number} in this dialog; choose one of {valid}, "
                             "or yes, no, esc")
    elif word in ("yes", "y"):
        number = _starting_with(dialog, "yes") or numbers[0]
    elif word in ("no", "n"):
        if dialog.kind == "question":
            raise UsageError(f"{dialog.question!r} is a question, not a yes/no prompt; "
                             f"answer with an option number ({valid}) or esc")
        number = _starting_with(dialog, "no") or numbers[-1]
    else:
        raise UsageError(f"cannot answer {choice!r}: use an option number ({valid}), "
                         "yes, no or esc")
    if dialog.numbered and number <= 9:
        return [str(number)]
    current = dialog.selected or numbers[0]
    step = "Down" if number > current else "Up"
    return [step] * abs(number - current) + ["Enter"]


def _starting_with(dialog: Dialog, word: str) -> int | None:
    for option in dialog.options:
        if re.match(rf"{word}\b", option.label, re.IGNORECASE):
            return option.number
    return None
