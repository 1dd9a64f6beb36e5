"""Terminal text with SGR colour escapes (what ``capture-pane -e`` prints) as urwid markup.

tmux has already done the hard part (cursor movement, redraws, wrapping); what is left
is colour and emphasis, which map onto urwid ``AttrSpec`` objects. Specs are cached per
distinct style, since a screen repeats the same few styles thousands of times.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import urwid

# Any CSI sequence (private ones like ESC[?25l included), charset selections, and the
# one-byte escapes; only plain SGR (final byte "m", no private marker) changes the style.
_CSI = re.compile(r"\x1b\[([0-9;:<=>?]*)[ -/]*([@-~])|\x1b[()][0-9A-Za-z]|\x1b[=>78]")
_BASIC = ("black", "dark red", "dark green", "brown", "dark blue", "dark magenta",
          "dark cyan", "light gray", "dark gray", "light red", "light green", "yellow",
          "light blue", "light magenta", "light cyan", "white")
StyledRun = list[tuple[urwid.AttrSpec | None, str]]


@dataclass(frozen=True)
class Style:
    fg: str = "default"
    bg: str = "default"
    bold: bool = False
    italics: bool = False
    underline: bool = False
    reverse: bool = False
    strike: bool = False


PLAIN = Style()


def _cube(r: int, g: int, b: int) -> str:
    """24-bit colour to the nearest of xterm's 256 (urwid's 256-colour mode takes 'hN')."""
    if r == g == b:
        if r < 8:
            return "h16"
        if r > 238:
            return "h231"
        return f"h{232 + round((r - 8) / 247 * 24)}"

    def level(v: int) -> int:
        return 0 if v < 48 else 1 if v < 115 else (v - 35) // 40

    return f"h{16 + 36 * level(r) + 6 * level(g) + level(b)}"


def _extended(params: list[int], i: int) -> tuple[str | None, int]:
    """Parse ``5;N`` or ``2;R;G;B`` after a 38/48; return (colour, next index)."""
    if i < len(params) and params[i] == 5 and i + 1 < len(params):
        return f"h{params[i + 1] & 255}", i + 2
    if i < len(params) and params[i] == 2 and i + 3 < len(params):
        r, g, b = (min(max(v, 0), 255) for v in params[i + 1:i + 4])
        return _cube(r, g, b), i + 4
    return None, len(params)


# SGR codes that switch one emphasis on or off.
_FLAGS: dict[int, tuple[str, bool]] = {
    1: ("bold", True), 3: ("italics", True), 4: ("underline", True), 7: ("reverse", True),
    9: ("strike", True), 21: ("bold", False), 22: ("bold", False), 23: ("italics", False),
    24: ("underline", False), 27: ("reverse", False), 29: ("strike", False),
}


def _colour(code: int) -> tuple[str, str] | None:
    """("fg" or "bg", colour) for the 8/16-colour and default codes."""
    if 30 <= code <= 37:
        return "fg", _BASIC[code - 30]
    if 90 <= code <= 97:
        return "fg", _BASIC[code - 90 + 8]
    if 40 <= code <= 47:
        return "bg", _BASIC[code - 40]
    if 100 <= code <= 107:
        return "bg", _BASIC[code - 100 + 8]
    if code in (39, 49):
        return ("fg" if code == 39 else "bg"), "default"
    return None


def _with(style: Style, name: str, value: Any) -> Style:
    changes: dict[str, Any] = {name: value}
    return replace(style, **changes)


def apply_sgr(style: Style, text: str) -> Style:
    """The style after one SGR parameter string (``"1;38;5;174"``)."""
    params = [int(p) if p.isdigit() else 0 for p in re.split("[;:]", text)] if text else [0]
    i = 0
    while i < len(params):
        code = params[i]
        i += 1
        if code == 0:
            style = PLAIN
        elif code in _FLAGS:
            name, on = _FLAGS[code]
            style = _with(style, name, on)
        elif (basic := _colour(code)) is not None:
            style = _with(style, *basic)
        elif code in (38, 48):
            colour, i = _extended(params, i)
            if colour is not None:
                style = _with(style, "fg" if code == 38 else "bg", colour)
    return style


@lru_cache(maxsize=512)
def attr_spec(style: Style) -> urwid.AttrSpec | None:
    if style == PLAIN:
        return None
    fg, bg = style.fg, style.bg
    if style.reverse:
        fg, bg = (bg if bg != "default" else "black"), (fg if fg != "default" else "light gray")
    flags = [name for name, on in (("bold", style.bold), ("italics", style.italics),
                                   ("underline", style.underline),
                                   ("strikethrough", style.strike)) if on]
    return urwid.AttrSpec(",".join([fg, *flags]), bg, colors=256)


def to_markup(text: str) -> StyledRun:
    """urwid markup for terminal text; non-SGR escapes are dropped, style carries on."""
    markup: StyledRun = []
    style = PLAIN
    pos = 0
    for match in _CSI.finditer(text):
        if match.start() > pos:
            markup.append((attr_spec(style), text[pos:match.start()]))
        if match.group(2) == "m" and not any(c in match.group(1) for c in "<=>?"):
            style = apply_sgr(style, match.group(1))
        pos = match.end()
    if pos < len(text):
        markup.append((attr_spec(style), text[pos:]))
    return markup or [(None, "")]


def strip(text: str) -> str:
    """The text without any escape sequence."""
    return _CSI.sub("", text)


_RULE_ONLY = frozenset("─━▔▁╌┄═-")


def wrap_markup(markup: StyledRun, width: int) -> list[StyledRun]:
    """``markup`` (one screen line) as rows of at most ``width`` cells, colours kept.

    Cut at any character, as a terminal wraps; a line of rule characters is clipped, not
    wrapped (a 200-column rule folded into three rows says nothing).
    """
    if width <= 0:
        return [markup]
    total = sum(urwid.calc_width(text, 0, len(text)) for _, text in markup)
    if total <= width:
        return [markup]
    plain = "".join(text for _, text in markup).strip()
    if plain and set(plain) <= _RULE_ONLY:
        return [_take(markup, width)[0]]
    rows: list[StyledRun] = []
    rest = markup
    while rest:
        row, rest = _take(rest, width)
        rows.append(row)
    return rows


def _take(markup: StyledRun, width: int) -> tuple[StyledRun, StyledRun]:
    """The first ``width`` cells of ``markup``, and the rest."""
    row: StyledRun = []
    room = width
    for index, (attr, text) in enumerate(markup):
        cells = urwid.calc_width(text, 0, len(text))
        if cells <= room:
            row.append((attr, text))
            room -= cells
            continue
        end, _used = urwid.calc_text_pos(text, 0, len(text), room)
        if end == 0 and not row:
            end = 1  # a wide character in a one-cell preview: show it anyway
        if end:
            row.append((attr, text[:end]))
        rest: StyledRun = [(attr, text[end:])] if end < len(text) else []
        return row, rest + markup[index + 1:]
    return row, []
