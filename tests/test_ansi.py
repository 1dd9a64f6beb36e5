"""capture-pane -e text to urwid markup: SGR codes to styles, other escapes dropped."""

from __future__ import annotations

from typing import NamedTuple

import pytest
import urwid

from cbos.ansi import PLAIN, Style, apply_sgr, strip, to_markup


class Sgr(NamedTuple):
    params: str
    expect: Style


SGR = [
    Sgr("1", Style(bold=True)),
    Sgr("1;3;4;7;9", Style(bold=True, italics=True, underline=True, reverse=True,
                           strike=True)),
    Sgr("31", Style(fg="dark red")),
    Sgr("91;44", Style(fg="light red", bg="dark blue")),
    Sgr("38;5;174", Style(fg="h174")),
    Sgr("48;5;16", Style(bg="h16")),
    Sgr("38;2;255;0;0", Style(fg="h196")),
    Sgr("38:2:128:128:128", Style(fg="h244")),
    Sgr("1;31;0", PLAIN),
    Sgr("", PLAIN),
]


@pytest.mark.parametrize("case", SGR, ids=[c.params or "empty" for c in SGR])
def test_sgr_parameters(case: Sgr) -> None:
    assert apply_sgr(PLAIN, case.params) == case.expect


def test_switching_off_and_defaults() -> None:
    style = apply_sgr(PLAIN, "1;4;7;31;42")
    assert apply_sgr(style, "22;24;27;39;49") == PLAIN


def test_markup_keeps_text_and_styles_and_drops_other_escapes() -> None:
    text = "a\x1b[1;38;5;174mbold\x1b[0m \x1b[?25lplain\x1b(B \x1b[7mrev"
    markup = to_markup(text)
    assert "".join(part for _, part in markup) == "abold plain rev"
    styles = {part: spec for spec, part in markup}
    assert styles["a"] is None
    bold = styles["bold"]
    assert isinstance(bold, urwid.AttrSpec) and bold.bold
    rev = styles["rev"]
    assert isinstance(rev, urwid.AttrSpec) and rev.background != "default"
    assert strip(text) == "abold plain rev"
    canvas = urwid.Text(markup).render((20,))
    assert canvas.text[0].decode().rstrip() == "abold plain rev"


def test_empty_text_is_valid_markup() -> None:
    assert to_markup("") == [(None, "")]
