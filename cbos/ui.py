"""The control room's widgets: they render snapshots and turn keys into typed actions.

Nothing here knows of tmux, threads or the engine. :class:`ControlRoom` is the top widget;
its owner (``app.py``) feeds it snapshots (:meth:`ControlRoom.update`), screens of the
selected session (:meth:`ControlRoom.set_screen`) and messages, and listens to its
``action`` signal, whose payload is one of the frozen :data:`Action` dataclasses.

Decisions are pure functions beside the widgets that use them: :func:`settle` (the list
order with its one-second hysteresis), :func:`list_command` and :func:`input_command`
(what a key means where), :func:`row_markup` (one row of the list).
"""

from __future__ import annotations

import enum
import os
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final

import urwid

from cbos.model import HostStatus, SessionView, Snapshot, age, attention_key
from cbos.state import State

if TYPE_CHECKING:  # ansi is imported when the first screen comes: the first paint has none
    from cbos import ansi
    from cbos.dialog import Dialog

REORDER_DELAY: Final = 1.0  # a sort key must hold this long before the list reorders
WIDE: Final = 100  # from this many columns, the list and the preview sit side by side
SortKey = tuple[bool, int, float, str]
Markup = list[tuple[Hashable, str] | str]
Size = tuple[()] | tuple[int] | tuple[int, int]

STATE_ATTR: Final[Mapping[State, str]] = {
    State.PERMISSION: "st.permission", State.WAITING: "st.waiting",
    State.WORKING: "st.working", State.THINKING: "st.thinking", State.IDLE: "st.idle",
    State.EXITED: "st.exited",
}

PALETTE: Final[list[tuple[str, str, str]]] = [
    ("bar", "light gray", "dark gray"),
    ("bar.title", "white,bold", "dark gray"),
    ("bar.warn", "yellow,bold", "dark gray"),
    ("bar.ws", "light cyan", "dark gray"),
    ("bar.off", "light gray", "dark gray"),
    ("st.permission", "yellow,bold", "default"),
    ("st.waiting", "light green,bold", "default"),
    ("st.working", "light cyan", "default"),
    ("st.thinking", "light blue", "default"),
    ("st.idle", "light gray", "default"),
    ("st.exited", "dark gray", "default"),
    ("slug", "white,bold", "default"),
    ("age", "light gray", "default"),
    ("reason", "default", "default"),
    ("path", "dark gray", "default"),
    ("focus", "black", "light gray"),
    ("focus.slug", "black,bold", "light gray"),
    ("focus.path", "dark gray", "light gray"),
    ("focus.icon", "black,bold", "light gray"),
    ("title", "white,bold", "dark blue"),
    ("title.dim", "light gray", "dark blue"),
    ("dialog", "white", "dark red"),
    ("dialog.question", "yellow,bold", "dark red"),
    ("dialog.selected", "black,bold", "yellow"),
    ("dialog.hint", "light gray", "dark red"),
    ("notice", "light green", "default"),
    ("error", "light red,bold", "default"),
    ("hint", "dark gray", "default"),
    ("caption", "light cyan,bold", "default"),
    ("dim", "dark gray", "default"),
    ("field", "light cyan", "default"),
    ("divider", "dark gray", "default"),
]
FOCUS_MAP: Final[dict[Hashable, str]] = {
    None: "focus", "slug": "focus.slug", "age": "focus", "reason": "focus",
    "path": "focus.path", **{attr: "focus.icon" for attr in STATE_ATTR.values()},
}

KEYS: Final[tuple[tuple[str, str], ...]] = (
    ("j k ↑ ↓", "move; a mouse click selects"),
    ("Enter", "type to the selected session (in a popup: open it)"),
    ("i", "type to the selected session"),
    ("Esc", "back to the list"),
    ("1-9 y n Esc", "answer the dialog the session shows"),
    ("Ctrl+C", "interrupt the session (never quits cbos)"),
    ("a", "attach (switch to) the session"),
    ("c", "new session from a project (a dir with CLAUDE.md)"),
    ("n", "new session at a path you type"),
    ("x", "kill the session (asks y/n; its log stays)"),
    ("d  l", "detail view / list view"),
    ("s", "attention order / name order"),
    ("r", "re-read tmux, logs and events"),
    ("?", "these keys"),
    ("q", "quit"),
)


def box(size: Size) -> tuple[int, int]:
    """The (cols, rows) of a box widget's size."""
    if len(size) != 2:
        raise ValueError(f"a box widget needs (cols, rows), got {size!r}")
    return size[0], size[1]


# ----------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class Selected:
    slug: str | None


@dataclass(frozen=True)
class Send:
    slug: str
    text: str


@dataclass(frozen=True)
class Interrupt:
    slug: str


@dataclass(frozen=True)
class Answer:
    slug: str
    choice: str  # as `cbos answer` takes it: a number, yes, no, esc


@dataclass(frozen=True)
class Open:
    slug: str


@dataclass(frozen=True)
class Kill:
    slug: str


@dataclass(frozen=True)
class Create:
    path: str


@dataclass(frozen=True)
class FindProjects:
    pass


@dataclass(frozen=True)
class Refresh:
    pass


@dataclass(frozen=True)
class Quit:
    pass


Action = (Selected | Send | Interrupt | Answer | Open | Kill | Create | FindProjects | Refresh
          | Quit)


# ----------------------------------------------------------------------- pure decisions


def short_path(path: str, home: str | None = None) -> str:
    home = os.path.expanduser("~") if home is None else home
    if home and home != "/" and (path == home or path.startswith(home.rstrip("/") + "/")):
        return "~" + path[len(home.rstrip("/")):]
    return path


def clip(text: str, width: int) -> str:
    """``text`` on one line, at most ``width`` characters, "…" where it was cut."""
    text = " ".join(text.split())
    if width <= 0:
        return ""
    return text if len(text) <= width else text[:width - 1] + "…"


def clip_left(text: str, width: int) -> str:
    if width <= 0:
        return ""
    return text if len(text) <= width else "…" + text[len(text) - width + 1:]


def sort_key(view: SessionView, attention: bool) -> SortKey:
    return attention_key(view) if attention else (view.read_only, 0, 0.0, view.slug)


@dataclass(frozen=True)
class Placement:
    """Where a session sorts: by ``key``; ``pending`` is a newer key not yet in force."""

    key: SortKey
    pending: SortKey | None = None
    pending_since: float = 0.0


def settle(placements: Mapping[str, Placement], keys: Mapping[str, SortKey], now: float,
           delay: float = REORDER_DELAY) -> tuple[dict[str, Placement], list[str], float | None]:
    """The list order, moving a session only once its new sort key has held ``delay`` s.

    New sessions take their place at once and ended ones leave at once; a changed state
    shows in its row at once (that is the row's business), only the reordering waits.
    Returns the new placements, the order, and when the next pending key falls due.
    """
    out: dict[str, Placement] = {}
    due: float | None = None
    for slug, key in keys.items():
        old = placements.get(slug)
        if old is None or old.key == key:
            new = Placement(key)
        elif old.pending == key:
            new = Placement(key) if now - old.pending_since >= delay else old
        else:
            new = Placement(old.key, key, now)
        if new.pending is not None:
            at = new.pending_since + delay
            due = at if due is None else min(due, at)
        out[slug] = new
    order = sorted(out, key=lambda slug: out[slug].key)
    return out, order, due


class Command(enum.Enum):
    UP = "up"
    DOWN = "down"
    PAGE_UP = "page up"
    PAGE_DOWN = "page down"
    TOP = "home"
    BOTTOM = "end"
    INPUT = "input"
    OPEN = "open"
    BACK = "back"
    SUBMIT = "submit"
    INTERRUPT = "interrupt"
    REFRESH = "refresh"
    PICK = "pick"
    NEW = "new"
    KILL = "kill"
    DETAIL = "detail"
    LIST = "list"
    SORT = "sort"
    QUIT = "quit"
    HELP = "help"


@dataclass(frozen=True)
class Choice:
    """A key that answers the dialog on screen."""

    choice: str


LIST_KEYS: Final[Mapping[str, Command]] = {
    "j": Command.DOWN, "down": Command.DOWN, "k": Command.UP, "up": Command.UP,
    "page down": Command.PAGE_DOWN, "page up": Command.PAGE_UP, "home": Command.TOP,
    "end": Command.BOTTOM, "g": Command.TOP, "G": Command.BOTTOM,
    "enter": Command.INPUT, "i": Command.INPUT, "esc": Command.BACK,
    "ctrl c": Command.INTERRUPT, "r": Command.REFRESH, "a": Command.OPEN, "c": Command.PICK,
    "n": Command.NEW, "x": Command.KILL, "d": Command.DETAIL, "l": Command.LIST,
    "s": Command.SORT, "q": Command.QUIT, "?": Command.HELP,
}


def dialog_choice(key: str, dialog: Dialog | None) -> Choice | None:
    """The answer a key gives to ``dialog``: its number, y, n, or Esc."""
    if dialog is None:
        return None
    if len(key) == 1 and key.isdigit() and key != "0":
        return Choice(key)
    return {"y": Choice("yes"), "n": Choice("no"), "esc": Choice("esc")}.get(key)


def list_command(key: str, *, dialog: Dialog | None, popup: bool) -> Command | Choice | None:
    """What a key means while the list has the focus (the dialog's keys come first)."""
    choice = dialog_choice(key, dialog)
    if choice is not None:
        return choice
    if popup and key == "enter":
        return Command.OPEN
    return LIST_KEYS.get(key)


def input_command(key: str, *, dialog: Dialog | None, empty: bool) -> Command | Choice | None:
    """What a key means in the input line; ``None``: the line edits it.

    With an empty line and a dialog open, the dialog's keys answer it (text would be
    refused anyway: typing into a dialog answers it).
    """
    if key == "enter":
        return Command.SUBMIT
    if key == "esc":
        return Command.BACK
    if key == "ctrl c":
        return Command.INTERRUPT
    if empty and key != "esc":
        return dialog_choice(key, dialog)
    return None


def row_markup(view: SessionView, now: float, slug_width: int, width: int,
               home: str | None = None) -> Markup:
    """One row of the list: icon, slug, age, reason, and the path when there is room."""
    slug = view.slug[:slug_width].ljust(slug_width)
    fixed = 2 + slug_width + 1 + 4 + 2
    rest = max(0, width - fixed)
    path = short_path(view.path, home)
    path_width = min(len(path), rest // 3) if rest >= 48 and path else 0
    reason_width = rest - path_width - 2 if path_width else rest
    reason = clip(view.reason, reason_width)
    # A claude outside tmux is listed after the others, its name dimmed: watch only.
    markup: Markup = [(STATE_ATTR[view.state], view.icon), " ",
                      ("dim" if view.read_only else "slug", slug), " ",
                      ("age", age(now - view.since).rjust(4)), "  "]
    if path_width:
        markup += [("reason", reason.ljust(reason_width)), "  ",
                   ("path", clip_left(path, path_width))]
    else:
        markup.append(("reason", reason))
    return markup


def counts_markup(snapshot: Snapshot | None, attention: bool) -> Markup:
    if snapshot is None:
        return [("bar.title", " cbos"), " · reading…"]
    if not snapshot.tmux_up:
        return [("bar.title", " cbos"), " · ",
                ("bar.warn", "tmux server not running: waiting for it")]
    n = len(snapshot.sessions)
    markup: Markup = [("bar.title", " cbos"), f" · {n} session{'s' if n != 1 else ''} "]
    counts = snapshot.counts()
    for state in (State.PERMISSION, State.WAITING, State.WORKING, State.THINKING, State.IDLE,
                  State.EXITED):
        if counts[state]:
            markup += ["  ", (STATE_ATTR[state] + ".bar", f"{state.icon} {counts[state]}")]
    if not attention:
        markup.append("   by name")
    return markup


# ------------------------------------------------------------------------------ widgets


class SessionRow(urwid.Text):
    """One session in the list; selectable so that keys and clicks can focus it.

    A Text that applies the focus colours itself, not a Text in an AttrMap in a
    WidgetWrap: a hundred rows are built before the first paint, and each wrapper costs
    urwid a protocol check (~0.1 ms a row). A row never drawn makes its text when it
    first is: the first frame shows 40 rows of 100.
    """

    _selectable = True

    def __init__(self, view: SessionView) -> None:
        self.view = view
        self._markup: Markup | None = None
        self._pending: tuple[float, int, int] | None = None  # show()'s, until drawn
        super().__init__("", wrap=urwid.WrapMode.CLIP)

    def keypress(self, size: Size, key: str) -> str | None:
        return key

    def mouse_event(self, size: Size, event: str, button: int, col: int, row: int,
                    focus: bool) -> bool:
        return event == "mouse press"  # the list has focused the row: that is the click

    def render(self, size: Size, focus: bool = False,  # type: ignore[override]
               ) -> urwid.Canvas:  # a CompositeCanvas when focused, as AttrMap draws it
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._make(*pending)
        canvas = super().render(size, focus)  # type: ignore[arg-type]
        if not focus:
            return canvas
        focused = urwid.CompositeCanvas(canvas)
        focused.fill_attr_apply(FOCUS_MAP)
        return focused

    def show(self, view: SessionView, now: float, slug_width: int, width: int) -> None:
        self.view = view
        if self._markup is None:
            self._pending = (now, slug_width, width)
        else:
            self._make(now, slug_width, width)

    def _make(self, now: float, slug_width: int, width: int) -> None:
        markup = row_markup(self.view, now, slug_width, width)
        if markup != self._markup:
            self._markup = markup
            self.set_text(markup)


class SessionList(urwid.ListBox[int]):
    """The sessions, ordered with :func:`settle`; the focus stays on the same session."""

    def __init__(self) -> None:
        self._walker: urwid.SimpleFocusListWalker[SessionRow] = urwid.SimpleFocusListWalker([])
        super().__init__(self._walker)
        self.by_slug: dict[str, SessionRow] = {}
        self.attention = True
        self._placements: dict[str, Placement] = {}
        self._views: tuple[SessionView, ...] = ()
        self._now = 0.0
        self._width = 0  # the rows' texts are made for this width; 0: not rendered yet
        self.last_size: tuple[int, int] | None = None
        self._empty_text = ""

    @property
    def selected(self) -> SessionView | None:
        if not self._walker:
            return None
        _, position = self._walker.get_focus()
        return None if position is None else self._walker[position].view

    @property
    def empty_text(self) -> str:
        """What the list says when it is empty."""
        return self._empty_text

    @empty_text.setter
    def empty_text(self, text: str) -> None:
        if text != self._empty_text:
            self._empty_text = text
            self._invalidate()

    @property
    def order(self) -> list[str]:
        return [row.view.slug for row in self._walker]

    def _slug_width(self) -> int:
        return min(16, max((len(v.slug) for v in self._views), default=4))

    def update(self, views: Sequence[SessionView], now: float) -> float | None:
        """Show ``views``; returns when a pending reorder falls due (time.time() based)."""
        self._views = tuple(views)
        self._now = now
        keys = {v.slug: sort_key(v, self.attention) for v in views}
        self._placements, order, due = settle(self._placements, keys, now)
        by_slug = {v.slug: v for v in views}
        for slug in [s for s in self.by_slug if s not in by_slug]:
            del self.by_slug[slug]
        slug_width = self._slug_width()
        for view in views:
            row = self.by_slug.get(view.slug)
            if row is None:
                row = self.by_slug[view.slug] = SessionRow(view)
            if self._width:
                row.show(view, now, slug_width, self._width)
            else:
                row.view = view  # its text is made when the list learns its width
        if order != self.order:
            self._reorder(order)
        return due

    def _reorder(self, order: list[str]) -> None:
        current = self.selected
        old_position = self._walker.focus or 0
        self._walker[:] = [self.by_slug[slug] for slug in order]
        if not order:
            return
        if current is not None and current.slug in self.by_slug:
            self._walker.set_focus(order.index(current.slug))
        else:
            self._walker.set_focus(min(old_position, len(order) - 1))

    def clock(self, now: float) -> None:
        """Ages move with time even when nothing else happens."""
        self.update(self._views, now)

    def toggle_order(self) -> None:
        self.attention = not self.attention
        self._placements = {}
        self.update(self._views, self._now)

    def focus_slug(self, slug: str) -> bool:
        for position, row in enumerate(self._walker):
            if row.view.slug == slug:
                self._walker.set_focus(position)
                return True
        return False

    def render(self, size: Size, focus: bool = False) -> urwid.CompositeCanvas | urwid.SolidCanvas:
        cols, rows = box(size)
        self.last_size = (cols, rows)
        if cols != self._width:
            self._width = cols
            slug_width = self._slug_width()
            for row in self.by_slug.values():
                row.show(row.view, self._now, slug_width, cols)
        if not self._walker:
            text = urwid.Text(("dim", self.empty_text), align=urwid.Align.CENTER)
            filler = urwid.Filler(text, valign=urwid.VAlign.MIDDLE)
            return urwid.CompositeCanvas(filler.render((cols, rows), focus))
        # The selection stays highlighted while the input line has the focus.
        return super().render((cols, rows), True)


def fit_lines(blank: Sequence[bool], rows: int) -> list[int]:
    """Which of a screen's lines to show in ``rows`` rows: all when they fit; else runs of
    blank lines shrink first (longest first, down to one), then the top goes. Claude's
    fullscreen screen pins its composer to the bottom, far below the transcript."""
    count = len(blank)
    if rows <= 0:
        return []
    if count <= rows:
        return list(range(count))
    runs: list[tuple[int, int]] = []  # (start, length) of each run of blank lines
    i = 0
    while i < count:
        if blank[i]:
            j = i
            while j < count and blank[j]:
                j += 1
            runs.append((i, j - i))
            i = j
        else:
            i += 1
    excess = count - rows
    dropped: set[int] = set()
    for start, length in sorted(runs, key=lambda run: -run[1]):
        if excess <= 0:
            break
        cut = min(excess, length - 1)
        dropped.update(range(start + 1, start + 1 + cut))
        excess -= cut
    kept = [i for i in range(count) if i not in dropped]
    return kept[-rows:]


class Preview(urwid.Widget):
    """The selected session's screen as ``tmux attach`` shows it, under a title line; an
    open dialog is drawn below it with its numbered options and the keys that answer."""

    _sizing = frozenset([urwid.Sizing.BOX])
    _selectable = False

    def __init__(self) -> None:
        super().__init__()
        self.view: SessionView | None = None
        self.now = time.time()
        self._lines: list[ansi.StyledRun] = []
        self._blank: list[bool] = []
        self.note = "no session selected"

    def show(self, view: SessionView | None, now: float) -> None:
        if view is None or self.view is None or view.slug != self.view.slug:
            self._lines, self._blank = [], []
            self.note = "reading the screen…" if view is not None else "no session selected"
        elif view == self.view and age(now - view.since) == age(self.now - view.since):
            self.now = now
            return  # nothing shown has changed: keep the canvas
        self.view = view
        self.now = now
        self._invalidate()

    def set_screen(self, text: str) -> None:
        from cbos import ansi

        lines = text.split("\n")
        while lines and not ansi.strip(lines[-1]).strip():
            lines.pop()
        self._lines = [ansi.to_markup(line.rstrip("\r")) for line in lines]
        self._blank = [not ansi.strip(line).strip() for line in lines]
        self.note = "" if self._lines else "(the screen is blank)"
        self._invalidate()

    def set_note(self, text: str) -> None:
        self._lines, self._blank = [], []
        self.note = text
        self._invalidate()

    def title_markup(self) -> Markup:
        view = self.view
        if view is None:
            return [("title.dim", " preview")]
        return [("title", f" {view.icon} {view.slug}"), ("title.dim", " · "),
                ("title.dim", short_path(view.path)), ("title.dim", " · "),
                ("title", f"{view.state.value} {age(self.now - view.since)}")]

    def dialog_widget(self) -> urwid.Widget | None:
        view = self.view
        if view is None or view.dialog is None:
            return None
        dialog = view.dialog
        rows: list[urwid.Widget] = [urwid.Text(
            [("dialog.question", f" {State.PERMISSION.icon} {dialog.question or dialog.title}")])]
        for option in dialog.options:
            chosen = option.number == dialog.selected
            label = f" {'❯' if chosen else ' '} {option.number}. {option.label}"
            rows.append(urwid.Text(("dialog.selected" if chosen else "dialog", label),
                                   wrap=urwid.WrapMode.ELLIPSIS))
            if option.description:
                rows.append(urwid.Text(("dialog.hint", f"      {option.description}"),
                                       wrap=urwid.WrapMode.ELLIPSIS))
        rows.append(urwid.Text(("dialog.hint", " " + dialog_hint(dialog))))
        return urwid.AttrMap(urwid.Pile(rows), "dialog")

    def render(self, size: Size, focus: bool = False) -> urwid.Canvas:
        cols, rows = box(size)
        title = urwid.Text(self.title_markup(), wrap=urwid.WrapMode.ELLIPSIS)
        parts: list[urwid.Canvas] = []
        used = 0
        if rows > 0:
            parts.append(urwid.AttrMap(title, "title.dim").render((cols,)))
            used = 1
        panel = self.dialog_widget()
        panel_canvas = None
        if panel is not None and rows - used > 0:
            panel_canvas = panel.render((cols,))
            if panel_canvas.rows() > rows - used:
                panel_canvas = urwid.CompositeCanvas(panel_canvas)
                panel_canvas.trim(0, rows - used)
        left = rows - used - (panel_canvas.rows() if panel_canvas is not None else 0)
        if left > 0:
            if self._lines:
                from cbos import ansi  # (set_screen imported it)

                # Wider lines wrap (colours kept): the question must not lose its end.
                rows_of = [ansi.wrap_markup(line, cols) for line in self._lines]
                wrapped = [row for rows in rows_of for row in rows]
                blank = [b for rows, b in zip(rows_of, self._blank, strict=True)
                         for _ in rows]
                shown = [wrapped[i] for i in fit_lines(blank, left)]
                markup: list[Any] = []
                for i, line in enumerate(shown):
                    if i:
                        markup.append("\n")
                    markup.extend(line)
                body = urwid.Text(markup, wrap=urwid.WrapMode.CLIP)
            else:
                body = urwid.Text(("dim", f" {self.note}"))
            parts.append(urwid.Filler(body, valign=urwid.VAlign.TOP).render((cols, left)))
        if panel_canvas is not None:
            parts.append(panel_canvas)
        if not parts:
            return urwid.SolidCanvas(" ", cols, rows)
        canvas = urwid.CanvasCombine([(c, None, False) for c in parts])
        return canvas


def dialog_hint(dialog: Dialog) -> str:
    numbers = [o.number for o in dialog.options]
    keys = f"{numbers[0]}-{numbers[-1]} answer" if numbers else "Enter answer"
    no = " · n no" if dialog.kind != "question" else ""
    return f"{keys} · y yes{no} · Esc cancel · a attach"


class Detail(urwid.WidgetWrap[urwid.Pile]):
    """The detail view: every field of the session above a large preview."""

    def __init__(self, preview: Preview) -> None:
        self._fields = urwid.Text("")
        super().__init__(urwid.Pile([("pack", self._fields),
                                     ("pack", urwid.Divider("─")), preview]))

    def show(self, view: SessionView | None, now: float) -> None:
        self._fields.set_text(detail_markup(view, now))


def detail_markup(view: SessionView | None, now: float) -> Markup:
    if view is None:
        return [("dim", " no session selected")]
    since = time.strftime("%H:%M:%S", time.localtime(view.since))
    fields: list[tuple[str, str]] = [
        ("slug", view.slug + ("  (adopted)" if view.adopted else "")),
        ("path", short_path(view.path)),
        ("state", f"{view.icon} {view.state.value}"),
        ("reason", view.reason),
        ("since", f"{since} ({age(now - view.since)} ago)"),
        ("pid", str(view.pid) if view.pid is not None else "-"),
        ("claude session", view.claude_session_id or "-"),
        ("tmux", f"{view.tmux} ({view.pane_id})"),
    ]
    markup: Markup = []
    for i, (name, value) in enumerate(fields):
        markup += ["\n" if i else "", ("field", f" {name:<15}"), value]
    return markup


class Body(urwid.WidgetWrap[urwid.Widget]):
    """List and preview side by side when wide, stacked when narrow; or the detail view."""

    def __init__(self, sessions: SessionList, preview: Preview, detail: Detail) -> None:
        self.sessions = sessions
        self.preview = preview
        self.detail_view = detail
        self.detail = False
        self._layout: tuple[Any, ...] = ()
        super().__init__(urwid.SolidFill(" "))

    def _lay_out(self, cols: int, rows: int) -> None:
        if self.detail:
            layout: tuple[Any, ...] = ("detail",)
        elif cols >= WIDE:
            layout = ("wide",)
        else:
            count = len(self.sessions.by_slug)
            list_rows = max(3, min(count or 3, (rows - 1) * 2 // 5))
            layout = ("stacked", list_rows)
        if layout == self._layout:
            return
        self._layout = layout
        if layout[0] == "detail":
            self._w = self.detail_view
        elif layout[0] == "wide":
            line = urwid.AttrMap(urwid.SolidFill("│"), "divider")
            self._w = urwid.Columns([("weight", 11, self.sessions), (1, line),
                                     ("weight", 9, self.preview)], focus_column=0)
        else:
            self._w = urwid.Pile([(layout[1], self.sessions),
                                  ("pack", urwid.AttrMap(urwid.Divider("─"), "divider")),
                                  self.preview], focus_item=0)

    def render(self, size: Size, focus: bool = False) -> urwid.Canvas:
        cols, rows = box(size)
        self._lay_out(cols, rows)
        return super().render(size, focus)

    def keypress(self, size: Size, key: str) -> str | None:
        target = self.sessions.last_size or box(size)
        result: str | None = self.sessions.keypress(target, key)
        return result

    def mouse_event(self, size: Size, event: str, button: int, col: int, row: int,
                    focus: bool) -> bool | None:
        cols, rows = box(size)
        self._lay_out(cols, rows)
        return bool(self._w.mouse_event(size, event, button, col, row, focus))


class StatusBar(urwid.WidgetWrap["urwid.AttrMap[urwid.Columns]"]):
    """Counts per state, the WebSocket's address (or off)."""

    def __init__(self) -> None:
        self._left = urwid.Text("", wrap=urwid.WrapMode.CLIP)
        self._right = urwid.Text("", align=urwid.Align.RIGHT, wrap=urwid.WrapMode.CLIP)
        columns = urwid.Columns([self._left, ("pack", self._right)], dividechars=2)
        super().__init__(urwid.AttrMap(columns, "bar"))
        self.show(None, True)
        self.set_ws(None)

    def show(self, snapshot: Snapshot | None, attention: bool) -> None:
        self._left.set_text(counts_markup(snapshot, attention))

    def set_ws(self, address: str | None) -> None:
        self._right.set_text([("bar.ws", f"ws {address} ")] if address
                             else [("bar.off", "ws off ")])

    @property
    def text(self) -> str:
        return f"{self._left.get_text()[0]!s}  {self._right.get_text()[0]!s}"


class HostLines(urwid.WidgetWrap[urwid.Pile]):
    """One line per other machine that cannot be reached ("box1: unreachable since 12:03 —
    why; retrying in 8s"); no line at all while every host answers."""

    def __init__(self) -> None:
        super().__init__(urwid.Pile([]))
        self.lines: list[str] = []

    def show(self, hosts: Sequence[HostStatus], now: float) -> None:
        lines = [h.line(now) for h in hosts if not h.up and h.error]
        if lines == self.lines:
            return
        self.lines = lines
        pile: urwid.Pile = self._w
        pile.contents[:] = [(urwid.Text(("bar.warn", f" {line}"), wrap=urwid.WrapMode.CLIP),
                             (urwid.WHSettings.PACK, None)) for line in lines]


class InputLine(urwid.WidgetWrap[urwid.Columns]):
    """The line that types into the selected session; hints on its right."""

    signals: ClassVar[list[str]] = ["submit"]

    def __init__(self) -> None:
        self.edit = urwid.Edit(("caption", "> "))
        self._hints = urwid.Text("", align=urwid.Align.RIGHT, wrap=urwid.WrapMode.CLIP)
        self.hints = ("", "")
        super().__init__(urwid.Columns([self.edit, ("pack", self._hints)], dividechars=1))

    @property
    def text(self) -> str:
        return str(self.edit.edit_text)

    def set_text(self, text: str) -> None:
        self.edit.set_edit_text(text)
        self.edit.set_edit_pos(len(text))

    def set_hints(self, wide: str, narrow: str) -> None:
        if (wide, narrow) != self.hints:
            self.hints = (wide, narrow)
            self._invalidate()

    def render(self, size: Size, focus: bool = False) -> urwid.Canvas:
        cols = size[0] if size else 80
        room = min(cols - 24, cols - len(self.text) - 6)  # the line keeps room to type
        hint = next((h for h in self.hints if len(h) <= room), "")
        if self._hints.text != hint:
            self._hints.set_text(("hint", hint))
        return super().render(size, focus)

    def keypress(self, size: Size, key: str) -> str | None:
        if key == "enter":
            text = self.text
            urwid.emit_signal(self, "submit", text)
            return None
        result: str | None = super().keypress(size, key)
        return result


class MessageLine(urwid.Text):
    """The last error or notice, one line."""

    def __init__(self) -> None:
        super().__init__("", wrap=urwid.WrapMode.ELLIPSIS)
        self.message = ""
        self.is_error = False

    def show(self, text: str, error: bool = False) -> None:
        self.message = " ".join(text.split())
        self.is_error = error
        self.set_text(("error" if error else "notice", f" {self.message}") if text else "")


# ---------------------------------------------------------------------------- overlays


class Help(urwid.WidgetWrap["urwid.LineBox[urwid.ListBox[int]]"]):
    """``?``: the keys. Any key closes it (j/k scroll when it does not fit)."""

    signals: ClassVar[list[str]] = ["close"]

    def __init__(self) -> None:
        width = max(len(k) for k, _ in KEYS) + 3
        lines: list[urwid.Columns] = [
            urwid.Columns([(width, urwid.Text(("field", f" {k}"))), urwid.Text(d)])
            for k, d in KEYS]
        self._box = urwid.ListBox(urwid.SimpleFocusListWalker(lines))
        super().__init__(urwid.LineBox(self._box, title="keys · any key closes"))

    def selectable(self) -> bool:
        return True

    def keypress(self, size: Size, key: str) -> str | None:
        if key in ("j", "k", "down", "up"):
            self._box.keypress(self._box_size(size), {"j": "down", "k": "up"}.get(key, key))
            return None
        urwid.emit_signal(self, "close")
        return None

    @staticmethod
    def _box_size(size: Size) -> tuple[int, int]:
        cols, rows = box(size)
        return max(0, cols - 2), max(0, rows - 2)


class Confirm(urwid.WidgetWrap["urwid.LineBox[urwid.Filler[Any]]"]):
    """A yes/no question: ``y`` answers True; ``n`` or Esc answers False."""

    signals: ClassVar[list[str]] = ["answer"]

    def __init__(self, question: str) -> None:
        self.question = question
        text = urwid.Text([question, "\n", ("hint", "y yes · n or Esc no")])
        super().__init__(urwid.LineBox(urwid.Filler(text), title="confirm"))

    def selectable(self) -> bool:
        return True

    def keypress(self, size: Size, key: str) -> str | None:
        if key in ("y", "Y"):
            urwid.emit_signal(self, "answer", True)
        elif key in ("n", "N", "esc", "q"):
            urwid.emit_signal(self, "answer", False)
        return None


class Prompt(urwid.WidgetWrap["urwid.LineBox[urwid.Filler[Any]]"]):
    """One line of text to type (a path): Enter submits, Esc cancels."""

    signals: ClassVar[list[str]] = ["submit", "cancel"]

    def __init__(self, title: str, caption: str, text: str = "") -> None:
        self.edit = urwid.Edit(("caption", caption), text)
        hint = urwid.Text(("hint", "Enter start · Esc cancel"))
        super().__init__(urwid.LineBox(urwid.Filler(urwid.Pile([self.edit, hint])),
                                       title=title))

    def keypress(self, size: Size, key: str) -> str | None:
        if key == "enter":
            urwid.emit_signal(self, "submit", str(self.edit.edit_text))
            return None
        if key == "esc":
            urwid.emit_signal(self, "cancel")
            return None
        self.edit.keypress((max(1, size[0] - 2),) if size else (40,), key)
        return None


@dataclass(frozen=True)
class PickerItem:
    """A project the picker offers: a slug and a directory (from cbos.projects)."""

    slug: str
    path: str


class Picker(urwid.Widget):
    """Projects to start a session in, a page at a time: j/k, n/p pages, Enter, Esc."""

    _sizing = frozenset([urwid.Sizing.BOX])
    _selectable = True
    signals: ClassVar[list[str]] = ["pick", "cancel"]

    def __init__(self) -> None:
        super().__init__()
        self.projects: list[PickerItem] | None = None  # None: still looking
        self.error = ""
        self.page = 0
        self.index = 0  # within the page
        self.page_size = 10

    def set_projects(self, projects: Sequence[PickerItem] | None, error: str = "") -> None:
        self.projects = None if projects is None else list(projects)
        self.error = error
        self.page = self.index = 0
        self._invalidate()

    @property
    def pages(self) -> int:
        count = len(self.projects or ())
        return max(1, -(-count // self.page_size))

    def _page_items(self) -> list[PickerItem]:
        items = self.projects or []
        return items[self.page * self.page_size:(self.page + 1) * self.page_size]

    @property
    def current(self) -> PickerItem | None:
        items = self._page_items()
        return items[self.index] if 0 <= self.index < len(items) else None

    def keypress(self, size: Size, key: str) -> str | None:
        if size and len(size) == 2:
            self._fit(size[1])
        items = self._page_items()
        if key in ("j", "down"):
            if self.index + 1 < len(items):
                self.index += 1
            elif self.page + 1 < self.pages:
                self.page, self.index = self.page + 1, 0
        elif key in ("k", "up"):
            if self.index > 0:
                self.index -= 1
            elif self.page > 0:
                self.page, self.index = self.page - 1, self.page_size - 1
        elif key in ("n", "page down", "right"):
            if self.page + 1 < self.pages:
                self.page, self.index = self.page + 1, 0
        elif key in ("p", "page up", "left"):
            if self.page > 0:
                self.page, self.index = self.page - 1, 0
        elif key == "enter":
            if self.current is not None:
                urwid.emit_signal(self, "pick", self.current.path)
        elif key in ("esc", "q"):
            urwid.emit_signal(self, "cancel")
        self._invalidate()
        return None

    def _fit(self, rows: int) -> None:
        size = max(1, rows - 4)  # the box, a title line, a hint line
        if size != self.page_size:
            first = self.page * self.page_size + self.index
            self.page_size = size
            self.page, self.index = divmod(first, size)

    def render(self, size: Size, focus: bool = False) -> urwid.Canvas:
        cols, rows = box(size)
        self._fit(rows)
        inner = max(0, cols - 2)
        lines: list[Any] = []
        if self.error:
            lines.append(("error", self.error))
        elif self.projects is None:
            lines.append(("dim", "looking for directories with a CLAUDE.md…"))
        elif not self.projects:
            lines.append(("dim", "no directory with a CLAUDE.md found; Esc, then n, types a path"))
        else:
            width = min(16, max(len(p.slug) for p in self.projects))
            for i, project in enumerate(self._page_items()):
                text = f"{project.slug[:width]:<{width}}  {short_path(project.path)}"
                text = clip(text, inner - 1)
                lines.append(("focus", text.ljust(inner)) if i == self.index else text)
        hint = f"page {self.page + 1}/{self.pages} · j/k move · n/p page · Enter start · Esc"
        pile = urwid.Pile([urwid.Text(line, wrap=urwid.WrapMode.CLIP) for line in lines]
                          + [urwid.Text(("hint", clip(hint, inner)))])
        frame = urwid.LineBox(urwid.Filler(pile, valign=urwid.VAlign.TOP),
                              title="new session from a project")
        return frame.render((cols, rows), focus)


# ------------------------------------------------------------------------ the top widget


class Mode(enum.Enum):
    LIST = "list"
    INPUT = "input"


class ControlRoom(urwid.WidgetWrap[urwid.Widget]):
    """The whole screen. Emits ``action`` with one :data:`Action` per thing to do."""

    signals: ClassVar[list[str]] = ["action"]

    def __init__(self, *, popup: bool = False) -> None:
        self.popup = popup
        self.sessions = SessionList()
        self.preview = Preview()
        self.detail = Detail(self.preview)
        self.body = Body(self.sessions, self.preview, self.detail)
        self.status = StatusBar()
        self.hosts = HostLines()
        self.message = MessageLine()
        self.input = InputLine()
        urwid.connect_signal(self.input, "submit", self._submit)
        self.frame = urwid.Frame(self.body, header=urwid.Pile([self.status, self.hosts]),
                                 footer=urwid.Pile([self.message, self.input], focus_item=1))
        self.mode = Mode.LIST
        self.modal: urwid.Widget | None = None
        self.picker: Picker | None = None
        self.snapshot: Snapshot | None = None
        self.now = time.time()
        self._selected: str | None = None
        self._want: str | None = None  # select this session when it appears
        super().__init__(self.frame)
        self.sessions.empty_text = "reading sessions…"
        self._hints()

    # -- typed wiring ---------------------------------------------------------------------

    def on_action(self, callback: Callable[[Action], Any]) -> None:
        urwid.connect_signal(self, "action", callback)

    def _act(self, action: Action) -> None:
        urwid.emit_signal(self, "action", action)

    # -- what the owner feeds -------------------------------------------------------------

    @property
    def selected(self) -> SessionView | None:
        return self.sessions.selected

    def update(self, snapshot: Snapshot, now: float) -> float | None:
        """Show a snapshot; returns when a delayed reorder falls due (or None)."""
        self.snapshot = snapshot
        self.now = now
        due = self.sessions.update(snapshot.sessions, now)
        if self._want is not None and self.sessions.focus_slug(self._want):
            self._want = None
        if not snapshot.tmux_up:
            self.sessions.empty_text = ("The tmux server is not running; sessions show here "
                                        "when it is back.")
        else:
            self.sessions.empty_text = ("No claude sessions. c: start one in a project · "
                                        "n: at a path · ? keys")
        self.status.show(snapshot, self.sessions.attention)
        self.hosts.show(snapshot.hosts, now)
        self._sync()
        return due

    def settle(self, now: float) -> float | None:
        """Apply reorders that have fallen due."""
        if self.snapshot is None:
            return None
        return self.update(self.snapshot, now)

    def clock(self, now: float) -> None:
        self.now = now
        self.sessions.clock(now)
        if self.snapshot is not None:
            self.hosts.show(self.snapshot.hosts, now)
        self._sync()

    def set_screen(self, slug: str, text: str) -> None:
        if slug == self._selected:
            self.preview.set_screen(text)

    def set_screen_note(self, slug: str, text: str) -> None:
        if slug == self._selected:
            self.preview.set_note(text)

    def notice(self, text: str) -> None:
        self.message.show(text)

    def error(self, text: str) -> None:
        self.message.show(text, error=True)

    def set_ws(self, address: str | None) -> None:
        self.status.set_ws(address)

    def set_projects(self, projects: Sequence[PickerItem] | None, error: str = "") -> None:
        if self.picker is not None:
            self.picker.set_projects(projects, error)

    def select_when_seen(self, slug: str) -> None:
        if self.sessions.focus_slug(slug):
            self._sync()
        else:
            self._want = slug

    def restore_input(self, text: str) -> None:
        if not self.input.text:
            self.input.set_text(text)

    # -- keys and mouse -------------------------------------------------------------------

    def keypress(self, size: Size, key: str) -> str | None:
        if self.modal is not None:
            self._w.keypress(size, key)
            return None
        view = self.selected
        dialog = view.dialog if view is not None else None
        if self.mode is Mode.INPUT:
            command = input_command(key, dialog=dialog, empty=not self.input.text)
            if command is None:
                self.frame.keypress(box(size), key)
                self._hints()
                return None
        else:
            command = list_command(key, dialog=dialog, popup=self.popup)
        if command is not None:
            self._do(command, size)
        self._sync()
        return None

    def mouse_event(self, size: Size, event: str, button: int, col: int, row: int,
                    focus: bool) -> bool | None:
        handled = bool(self._w.mouse_event(size, event, button, col, row, focus))
        if self.modal is None and event == "mouse press":
            footer = self.frame.focus_position == "footer"
            self._set_mode(Mode.INPUT if footer else Mode.LIST)
        self._sync()
        return handled

    def _do(self, command: Command | Choice, size: Size) -> None:
        view = self.selected
        slug = view.slug if view is not None else None
        if isinstance(command, Choice):
            if slug is not None:
                self._act(Answer(slug, command.choice))
            return
        if command in (Command.UP, Command.DOWN, Command.PAGE_UP, Command.PAGE_DOWN,
                       Command.TOP, Command.BOTTOM):
            self._move(command, size)
        elif command is Command.INPUT:
            if slug is None:
                self.error("no session to type to; c or n starts one")
            else:
                self._set_mode(Mode.INPUT)
        elif command is Command.BACK:
            if self.mode is Mode.INPUT:
                self._set_mode(Mode.LIST)
            elif self.body.detail:
                self._set_detail(False)
        elif command is Command.SUBMIT:
            self.input.keypress((box(size)[0],), "enter")  # the line says "submit"
        elif command is Command.HELP:
            help_view = Help()
            urwid.connect_signal(help_view, "close", self._close_modal)
            self._open_modal(help_view)
        elif command is Command.SORT:
            self.sessions.toggle_order()
            self.status.show(self.snapshot, self.sessions.attention)
            self.notice("attention order" if self.sessions.attention else "name order")
        elif command is Command.DETAIL:
            self._set_detail(True)
        elif command is Command.LIST:
            self._set_detail(False)
        elif command is Command.REFRESH:
            self._act(Refresh())
        elif command is Command.QUIT:
            self._act(Quit())
        elif command is Command.PICK:
            self._open_picker()
        elif command is Command.NEW:
            self._open_prompt()
        elif slug is None:
            self.error("no session selected")
        elif command is Command.INTERRUPT:
            self._act(Interrupt(slug))
        elif command is Command.OPEN:
            self._act(Open(slug))
        elif command is Command.KILL:
            self._open_confirm(slug)

    def _move(self, command: Command, size: Size) -> None:
        key = {Command.UP: "up", Command.DOWN: "down", Command.PAGE_UP: "page up",
               Command.PAGE_DOWN: "page down"}.get(command)
        if key is not None:
            self.body.keypress(size, key)
        elif self.sessions.by_slug:
            order = self.sessions.order
            self.sessions.focus_slug(order[0] if command is Command.TOP else order[-1])

    def _submit(self, text: str) -> None:
        view = self.selected
        if view is None:
            self.error("no session to send to")
            return
        if not text.strip():
            return
        self.input.set_text("")
        self._act(Send(view.slug, text))

    def _set_mode(self, mode: Mode) -> None:
        self.mode = mode
        self.frame.focus_position = "footer" if mode is Mode.INPUT else "body"
        self._hints()

    def _set_detail(self, on: bool) -> None:
        self.body.detail = on
        self.body._invalidate()

    # -- overlays -------------------------------------------------------------------------

    def _open_modal(self, widget: urwid.Widget) -> None:
        self.modal = widget
        width, height = self._modal_size
        self._w = urwid.Overlay(widget, self.frame, align=urwid.Align.CENTER, width=width,
                                valign=urwid.VAlign.MIDDLE, height=height)

    def render(self, size: Size, focus: bool = False) -> urwid.Canvas:
        if isinstance(self._w, urwid.Overlay) and len(size) == 2:
            cols, rows = box(size)
            overlay = self._w
            wanted_w, wanted_h = self._modal_size
            fit = (max(10, min(wanted_w, cols - 2)), max(3, min(wanted_h, rows - 2)))
            if (overlay.width_amount, overlay.height_amount) != fit:
                overlay.set_overlay_parameters(
                    align=urwid.Align.CENTER, width=fit[0], valign=urwid.VAlign.MIDDLE,
                    height=fit[1])
        return super().render(size, focus)

    @property
    def _modal_size(self) -> tuple[int, int]:
        modal = self.modal
        if isinstance(modal, Help):
            return 64, len(KEYS) + 2
        if isinstance(modal, Picker):
            return 90, 24
        if isinstance(modal, Prompt):
            return 70, 4
        return 56, 4

    def _close_modal(self, *_args: Any) -> None:
        self.modal = None
        self.picker = None
        self._w = self.frame

    def _open_confirm(self, slug: str) -> None:
        confirm = Confirm(f"Kill {slug}? Its log stays.")

        def answered(yes: bool) -> None:
            self._close_modal()
            if yes:
                self._act(Kill(slug))
            else:
                self.notice(f"{slug} left running")

        urwid.connect_signal(confirm, "answer", answered)
        self._open_modal(confirm)

    def _open_prompt(self) -> None:
        prompt = Prompt("new session at a path", "path: ", "~/")

        def submitted(text: str) -> None:
            if not text.strip():
                self.error("type a directory to start claude in")
                return
            self._close_modal()
            self._act(Create(text.strip()))

        urwid.connect_signal(prompt, "submit", submitted)
        urwid.connect_signal(prompt, "cancel", self._close_modal)
        self._open_modal(prompt)

    def _open_picker(self) -> None:
        picker = Picker()

        def picked(path: str) -> None:
            self._close_modal()
            self._act(Create(path))

        urwid.connect_signal(picker, "pick", picked)
        urwid.connect_signal(picker, "cancel", self._close_modal)
        self._open_modal(picker)
        self.picker = picker
        self._act(FindProjects())

    # -- keeping things consistent --------------------------------------------------------

    def _sync(self) -> None:
        """Follow the selection: preview, detail, hints; say when it changed."""
        view = self.selected
        slug = view.slug if view is not None else None
        self.preview.show(view, self.now)
        self.detail.show(view, self.now)
        if self.mode is Mode.INPUT and view is None:
            self._set_mode(Mode.LIST)
        self._hints()
        if slug != self._selected:
            self._selected = slug
            self._act(Selected(slug))

    def _hints(self) -> None:
        view = self.selected
        if self.mode is Mode.INPUT:
            if view is not None and view.dialog is not None and not self.input.text:
                self.input.set_hints("1-9 answer · Enter send · Esc list",
                                     "1-9 answer · Esc list")
            else:
                self.input.set_hints("Enter send · Esc list · ^C interrupt", "Enter · Esc")
        elif view is None:
            self.input.set_hints("c project · n path · ? keys · q quit", "c · n · ? · q")
        elif view.dialog is not None:
            self.input.set_hints(dialog_hint(view.dialog) + " · ?", "digits answer · ?")
        elif self.popup:
            self.input.set_hints("Enter open · i type · ^C interrupt · ? keys", "Enter · ?")
        else:
            self.input.set_hints("Enter type · a attach · ^C interrupt · x kill · ? keys",
                                 "Enter type · ? keys")


def status_palette() -> list[tuple[str, str, str]]:
    """The state colours again on the status bar's background."""
    bar_bg = "dark gray"
    colours = {"st.permission": "yellow,bold", "st.waiting": "light green,bold",
               "st.working": "light cyan", "st.thinking": "light blue",
               "st.idle": "white", "st.exited": "black"}
    return [(f"{name}.bar", fg, bar_bg) for name, fg in colours.items()]


def palette() -> list[tuple[str, str, str]]:
    return [*PALETTE, *status_palette()]
