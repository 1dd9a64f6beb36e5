"""The browser page (cbos/page/, `cbos serve --web`), in a real headless Chromium.

Debian's ``chromium`` driven by the ``playwright`` wheel (never ``playwright install``):
the page is loaded from a real WebServer (page=True) over a real Engine and private tmux
server with fake claude sessions, as `cbos serve --web` runs them. Every request the page
makes is recorded: none may go anywhere but the cbos server.
"""

from __future__ import annotations

import gzip
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, sync_playwright
from websockets.exceptions import InvalidStatus

from cbos import config as config_mod
from cbos import page as page_mod
from cbos import state as st
from cbos import web
from cbos.engine import Engine
from cbos.tmux import Tmux
from cbos.web import WebServer
from tests.support import Cli, new_session, prompts, wait_until
from tests.test_web import Harness, client, expect, greeted, raw_status

PAGE_DIR = Path(page_mod.__file__).parent


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = shutil.which("chromium")
    assert chromium, "these tests need Debian's chromium (apt-get install chromium)"
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def start_page_server(tmux: Tmux) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def start(**options: Any) -> Harness:
        options.setdefault("page", True)
        harness = Harness(tmux, **options)
        made.append(harness)
        return harness

    yield start
    for harness in made:
        harness.close()
        assert harness.server.stopped_cleanly


class Visit:
    """A browser context on the page, recording every request it makes."""

    def __init__(self, browser: Browser, harness: Harness, **options: Any) -> None:
        self.harness = harness
        self.origin = f"http://127.0.0.1:{harness.port}"
        self.context: BrowserContext = browser.new_context(**options)
        self.requests: list[str] = []
        self.outside: list[str] = []
        self.context.route("**/*", self._route)
        self.page: Page = self.context.new_page()
        self.page.on("websocket", lambda ws: self.requests.append(ws.url))
        self.console: list[str] = []
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))

    def _route(self, route: Route) -> None:
        url = route.request.url
        self.requests.append(url)
        if url.startswith(self.origin + "/"):
            route.continue_()
        else:
            self.outside.append(url)
            route.abort()

    def open(self, fragment: str | None = "token") -> Page:
        if fragment == "token":
            fragment = f"#token={self.harness.token}"
        self.page.goto(f"{self.origin}/{fragment or ''}")
        return self.page

    def rows(self) -> list[str]:
        names: list[str] = self.page.eval_on_selector_all(
            "#sessions .row", "rows => rows.map(r => r.dataset.slug)")
        return names

    def screen_text(self) -> str:
        text: str = self.page.inner_text("#screen")
        return text

    def check_stayed_home(self) -> None:
        assert self.requests, "no request was recorded at all"
        ws = f"ws://127.0.0.1:{self.harness.port}/"
        strays = [u for u in self.requests if not (u.startswith(self.origin + "/")
                                                   or u.startswith(ws))]
        assert strays == [] and self.outside == []
        errors = [c for c in self.console if c.startswith(("error", "pageerror"))
                  and "WebSocket" not in c]
        assert errors == [], errors

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def visit(browser: Browser) -> Iterator[Callable[..., Visit]]:
    made: list[Visit] = []

    def make(harness: Harness, **options: Any) -> Visit:
        made.append(Visit(browser, harness, **options))
        return made[-1]

    yield make
    for one in made:
        one.close()


def wait_ready(harness: Harness, slug: str) -> None:
    """The session's composer is on screen (it takes typing)."""
    def ready() -> bool:
        out = harness.engine.core.tmux.capture(
            harness.engine.core.session(slug).pane.pane_id, colours=False)
        return "❯\u00a0" in out
    wait_until(ready, timeout=20, message=f"{slug} shows its composer")


def http_get(port: int, path: str, headers: dict[str, str] | None = None
             ) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, \
            response.read()
    finally:
        conn.close()


# -- the files and their headers ----------------------------------------------------------------


def test_page_files_are_served_with_strict_headers(
        tmux: Tmux, start_page_server: Callable[..., Harness]) -> None:
    harness = start_page_server()
    for path, (name, kind) in page_mod.FILES.items():
        status, headers, body = http_get(harness.port, path)
        assert status == 200, path
        assert body == (PAGE_DIR / name).read_bytes()
        assert headers["content-type"] == kind
        csp = headers["content-security-policy"]
        assert csp.startswith("default-src 'self';")
        assert f"connect-src 'self' ws://127.0.0.1:{harness.port};" in csp
        assert "frame-ancestors 'none'" in csp and "unsafe" not in csp
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "no-referrer"
        # Compressed for who asks, and a second load is a 304.
        status, zipped_headers, zipped = http_get(harness.port, path,
                                                  {"Accept-Encoding": "br, gzip"})
        assert zipped_headers["content-encoding"] == "gzip"
        assert gzip.decompress(zipped) == body
        status, _, empty = http_get(harness.port, path, {"If-None-Match": headers["etag"]})
        assert (status, empty) == (304, b"")
    status, headers, body = http_get(harness.port, "/etc/passwd")
    assert status == 404 and b"one page" in body
    assert headers["x-frame-options"] == "DENY"
    # The page's Host check is the socket's: no DNS rebinding onto the page either.
    status, _, _ = http_get(harness.port, "/", {"Host": "evil.example:80"})
    assert status == 403
    # Only GET (and HEAD) are answered: the page is read-only.
    conn = http.client.HTTPConnection("127.0.0.1", harness.port, timeout=10)
    try:
        conn.request("POST", "/", headers={"Content-Length": "0"})  # a body: dropped
        response = conn.getresponse()
        assert response.status == 405 and response.getheader("Allow") == "GET, HEAD"
    finally:
        conn.close()
    conn = http.client.HTTPConnection("127.0.0.1", harness.port, timeout=10)
    try:
        conn.request("HEAD", "/")
        response = conn.getresponse()
        assert response.status == 200 and response.read() == b""
    finally:
        conn.close()
    # A GET of the socket's own path without an upgrade is not the page.
    assert http_get(harness.port, "/ws/stream")[0] == 426


def test_without_web_there_is_no_page(tmux: Tmux,
                                      start_page_server: Callable[..., Harness]) -> None:
    harness = start_page_server(page=False)
    status, _, body = http_get(harness.port, "/")
    assert status != 200 and b"<html" not in body


def test_only_the_pages_own_origin_with_the_token_may_connect(
        tmux: Tmux, start_page_server: Callable[..., Harness]) -> None:
    harness = start_page_server()
    port, token = harness.port, harness.token
    own = f"http://127.0.0.1:{port}"
    # The page's origin without the token: refused, saying where the token is.
    status, body = raw_status(port, headers=(f"Origin: {own}",))
    assert status == 401 and "#token=" in body
    assert raw_status(port, path=f"/ws/stream?token={token}",
                      headers=(f"Origin: {own}",))[0] == 101
    # The same page loaded as localhost is its own origin too; others are not.
    assert raw_status(port, path=f"/ws/stream?token={token}", host=f"localhost:{port}",
                      headers=(f"Origin: http://localhost:{port}",))[0] == 101
    for origin in (f"http://localhost:{port}", f"http://127.0.0.1:{port + 1}",
                   "http://evil.example", "null", f"https://127.0.0.1:{port}"):
        assert raw_status(port, path=f"/ws/stream?token={token}",
                          headers=(f"Origin: {origin}",))[0] == 403, origin
    # Non-browser clients keep working as before.
    with client(harness) as ws:
        greeted(ws)
    with pytest.raises(InvalidStatus) as refused:
        client(harness, origin="http://evil.example")
    assert refused.value.response.status_code == 403


def test_page_tables_agree_with_cbos() -> None:
    """The page sorts and draws states as cbos does: its tables are cbos's."""
    script = (PAGE_DIR / "page.js").read_text()
    order = json.loads(re.search(r"const ORDER = (\[.*?\]);", script).group(1))  # type: ignore[union-attr]
    assert order == [s.value for s in st.ATTENTION_ORDER]
    icons = dict(re.findall(r"(\w+): \"(.)\"", re.search(r"const ICONS = \{(.*?)\};",
                                                          script).group(1)))  # type: ignore[union-attr]
    assert icons == {s.value: icon for s, icon in st.ICONS.items()}
    # No inline script or style, nothing from elsewhere, no HTML built from strings.
    html = (PAGE_DIR / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)", html) and " style=" not in html
    for name in ("index.html", "page.js", "page.css"):
        text = (PAGE_DIR / name).read_text()
        assert not re.search(r"https?://(?!www\.w3\.org)", text), name
        assert "@import" not in text and "@font-face" not in text
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script
    assert "eval(" not in script


# -- in the browser -------------------------------------------------------------------------------


def test_list_screen_typing_and_live_updates(
        cli: Cli, fake_claude: Path, quiet_fake: Path, tmux: Tmux, tmp_path: Path,
        start_page_server: Callable[..., Harness], visit: Callable[..., Visit]) -> None:
    new_session(cli, tmp_path, "ALPHA")
    harness = start_page_server()
    wait_ready(harness, "ALPHA")
    v = visit(harness, viewport={"width": 1280, "height": 800})
    page = v.open()
    wait_until(lambda: v.rows() == ["ALPHA"], timeout=15, message="the list shows ALPHA")
    # The token left the URL bar at once, and is kept for the tab.
    assert "token" not in page.url
    assert page.evaluate("sessionStorage.getItem('cbos-token')") == harness.token
    row = page.locator("#sessions .row").first
    assert row.locator(".state").inner_text() in {s.value for s in st.State}
    assert re.fullmatch(r"\d+[smhd]", row.locator(".age").inner_text())

    # Selecting shows the screen as tmux renders it, colours included.
    row.click()
    pane = harness.engine.core.session("ALPHA").pane.pane_id
    wanted = [line.strip() for line in
              harness.engine.core.tmux.capture(pane, colours=False).splitlines()
              if line.strip()]
    wait_until(lambda: all(w in v.screen_text().replace("\u00a0", " ")
                           for w in (x.replace("\u00a0", " ") for x in wanted)),
               timeout=15, message="the page shows the pane's lines")
    assert page.locator("#screen span").count() > 0  # SGR became styled spans
    coloured = page.eval_on_selector_all(
        "#screen span", "s => s.filter(x => x.style.color || x.style.backgroundColor).length")
    assert coloured > 0

    # Typed text reaches the session byte for byte, and the reply shows live.
    text = "SAY it's 100% «fine»; -n $HOME `x` \\ \"q\" é€😀"
    page.fill("#text", text)
    page.press("#text", "Enter")
    wait_until(lambda: prompts(quiet_fake) == [text], timeout=15, message="the prompt arrived")
    wait_until(lambda: page.input_value("#text") == "", message="the input is cleared")
    wait_until(lambda: "«fine»; -n $HOME" in v.screen_text(), timeout=15,
               message="the reply shows on the page's screen")

    # A session started elsewhere joins the list live; the list keeps attention order.
    new_session(cli, tmp_path, "BETA")
    wait_until(lambda: set(v.rows()) == {"ALPHA", "BETA"}, timeout=20,
               message="BETA appears without a reload")
    sessions = {s.slug: s for s in harness.engine.snapshot().sessions}
    order = [s.value for s in st.ATTENTION_ORDER]
    shown = v.rows()
    keys = [order.index(sessions[name].state.value) for name in shown if name in sessions]
    assert keys == sorted(keys)
    # A reload keeps the tab's token.
    page.reload()
    wait_until(lambda: set(v.rows()) == {"ALPHA", "BETA"}, timeout=15,
               message="the list after a reload")
    v.check_stayed_home()


def test_a_permission_dialog_is_answered_with_a_button(
        cli: Cli, fake_claude: Path, quiet_fake: Path, tmux: Tmux, tmp_path: Path,
        start_page_server: Callable[..., Harness], visit: Callable[..., Visit]) -> None:
    project = new_session(cli, tmp_path, "ASKS")
    harness = start_page_server()
    wait_ready(harness, "ASKS")
    v = visit(harness, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = v.open()
    page.locator("#sessions .row").first.click()
    target = project / "made.txt"
    page.fill("#text", f"WRITE {target}")
    page.press("#text", "Enter")
    dialog = page.locator("#dialog")
    dialog.wait_for(state="visible", timeout=20_000)

    def labels() -> list[str]:
        found: list[str] = page.eval_on_selector_all("#options button",
                                                     "b => b.map(x => x.textContent)")
        return found

    # The hook's PermissionRequest can show the dialog (its tool and file) a moment before
    # cbos has read the options off the screen: wait for both.
    wait_until(lambda: "made.txt" in page.inner_text("#question")
               and labels()[:1] != [] and labels()[0].startswith("1. Yes"), timeout=15,
               message="the question and its options, once cbos has read them off the screen")
    assert labels()[-1] == "Esc: cancel"
    assert not target.exists()
    # Typing while it asks is refused, not typed into the dialog.
    page.fill("#text", "hello")
    page.press("#text", "Enter")
    page.locator("#toast").wait_for(state="visible")
    assert "answer" in page.inner_text("#toast")
    # An answer for a question no longer on screen (a lagging page) is refused.
    with client(harness) as ws:
        greeted(ws)
        ws.send(json.dumps({"type": "answer", "session": "ASKS", "choice": "1", "id": "old",
                            "question": "Do you want to delete everything?"}))
        reply = expect(ws, lambda m: m.get("id") == "old")
        assert reply["success"] is False and "changed" in reply["error"]
    assert not target.exists()
    page.locator("#options button[data-choice='1']").click()
    wait_until(target.exists, timeout=20, message="the answer let Claude write the file")
    dialog.wait_for(state="hidden", timeout=20_000)
    v.check_stayed_home()


def test_without_the_token_nothing_is_shown(
        cli: Cli, fake_claude: Path, tmux: Tmux, tmp_path: Path,
        start_page_server: Callable[..., Harness], visit: Callable[..., Visit]) -> None:
    new_session(cli, tmp_path, "SECRET")
    harness = start_page_server()
    wait_until(lambda: harness.engine.snapshot().get("SECRET"), timeout=15)
    v = visit(harness)
    page = v.open(fragment=None)
    page.locator("#locked").wait_for(state="visible")
    assert page.locator("#room").is_hidden()
    assert v.rows() == [] and "SECRET" not in page.content()
    assert not any(u.startswith("ws:") for u in v.requests)  # it did not even try
    # A wrong token: the socket refuses, and still nothing shows.
    wrong = "x" * 43
    page.goto(f"{v.origin}/#token={wrong}")
    wait_until(lambda: "refused" in page.inner_text("#conn"), timeout=15,
               message="the page says it was refused")
    assert v.rows() == [] and "SECRET" not in page.content()
    assert any(u.startswith("ws:") for u in v.requests)
    # Pasting the right address unlocks it (the token, again, only in this tab).
    page.evaluate("sessionStorage.clear()")
    page.goto(f"{v.origin}/")
    page.fill("#token-input", f"{v.origin}/#token={harness.token}")
    page.click("#token-form button")
    wait_until(lambda: v.rows() == ["SECRET"], timeout=15, message="unlocked by pasting")
    v.check_stayed_home()


@pytest.mark.parametrize("size", [(390, 844), (1280, 800)], ids=["phone", "desktop"])
def test_fits_phone_and_desktop_without_sideways_scrolling(
        size: tuple[int, int], cli: Cli, fake_claude: Path, quiet_fake: Path, tmux: Tmux,
        tmp_path: Path, start_page_server: Callable[..., Harness],
        visit: Callable[..., Visit]) -> None:
    new_session(cli, tmp_path, "A-RATHER-LONG-SESSION-NAME-THAT-GOES-ON")
    harness = start_page_server()
    slug = "A-RATHER-LONG-SESSION-NAME-THAT-GOES-ON"
    wait_ready(harness, slug)
    width, height = size
    phone = width < 500
    v = visit(harness, viewport={"width": width, "height": height}, is_mobile=phone,
              has_touch=phone)
    page = v.open()
    wait_until(lambda: v.rows() == [slug], timeout=15)

    def check() -> None:
        sideways = page.evaluate("document.scrollingElement.scrollWidth - innerWidth")
        assert sideways <= 0
        boxes = page.eval_on_selector_all(
            "button:not([hidden])", "bs => bs.filter(b => b.offsetParent).map(b => "
            "{const r = b.getBoundingClientRect(); return [b.id || b.className, r.width, "
            "r.height, r.right]})")
        assert boxes  # (the input's buttons at least)
        for name, w, h, right in boxes:
            assert w >= 44 and h >= 44, (name, w, h)
            assert right <= width + 0.5, (name, right)

    check()
    page.locator("#sessions .row").first.click()
    wait_until(lambda: "❯" in v.screen_text(), timeout=15, message="the screen shows")
    check()
    # The screen's widest lines wrap (or, for rules, clip) inside the page.
    overflow = page.evaluate("(() => { const s = document.getElementById('screen'); "
                             "return s.scrollWidth - s.clientWidth })()")
    assert overflow <= 0
    if phone:  # one column: Back returns to the list
        assert page.locator("#list-pane").is_hidden()
        page.click("#back")
        page.locator("#list-pane").wait_for(state="visible")
    v.check_stayed_home()


def test_notifications_are_off_until_allowed_then_announce_waiting(
        cli: Cli, fake_claude: Path, quiet_fake: Path, tmux: Tmux, tmp_path: Path,
        start_page_server: Callable[..., Harness], visit: Callable[..., Visit]) -> None:
    new_session(cli, tmp_path, "LOOK")
    new_session(cli, tmp_path, "PING")
    harness = start_page_server()
    wait_ready(harness, "PING")
    v = visit(harness)
    # Spy on the real Notification API: what the page shows, and whether it asks.
    v.context.add_init_script("""(() => {
        const Real = window.Notification; window.__notes = []; window.__asked = 0;
        class Spy extends Real {
          constructor(title, options) { super(title, options);
                                        window.__notes.push([title, options.body]); }
          static requestPermission() { window.__asked += 1; return Real.requestPermission(); }
        }
        window.Notification = Spy;
    })();""")
    page = v.open()
    wait_until(lambda: set(v.rows()) == {"LOOK", "PING"}, timeout=15)
    assert page.evaluate("window.__asked") == 0  # not asked on load
    assert page.get_attribute("#notify", "aria-pressed") == "false"
    v.context.grant_permissions(["notifications"], origin=v.origin)
    page.click("#notify")
    wait_until(lambda: page.get_attribute("#notify", "aria-pressed") == "true")
    page.locator("#sessions .row[data-slug='LOOK']").click()
    assert cli("send", "PING", "SAY ping is done").code == 0
    wait_until(lambda: page.evaluate("window.__notes.length") > 0, timeout=20,
               message="a notification for PING")
    title, body = page.evaluate("window.__notes[0]")
    assert title == "PING is waiting" and body == "ping is done"
    # Turned off, it stays off: the next wait is drawn in the list, and not announced.
    page.click("#notify")
    assert page.get_attribute("#notify", "aria-pressed") == "false"
    notes = page.evaluate("window.__notes.length")
    assert cli("send", "PING", "SAY second one done").code == 0
    row = page.locator("#sessions .row[data-slug='PING']")
    wait_until(lambda: "second one done" in row.inner_text(), timeout=20,
               message="PING's second wait in the list")
    assert page.evaluate("window.__notes.length") == notes
    v.check_stayed_home()


def test_interrupt_needs_two_presses_at_rest(
        cli: Cli, fake_claude: Path, quiet_fake: Path, tmux: Tmux, tmp_path: Path,
        start_page_server: Callable[..., Harness], visit: Callable[..., Visit]) -> None:
    new_session(cli, tmp_path, "STOP")
    harness = start_page_server()
    wait_ready(harness, "STOP")
    v = visit(harness)
    page = v.open()
    page.locator("#sessions .row").first.click()
    wait_until(lambda: "❯" in v.screen_text(), timeout=15)
    page.click("#interrupt")  # at rest: armed, nothing pressed yet
    assert page.inner_text("#interrupt") == "Again?"
    before = v.screen_text()
    page.click("#interrupt")
    # The fake, like Claude at rest, answers Ctrl+C with "Press Ctrl-C again to exit".
    wait_until(lambda: "again" in v.screen_text().lower() and v.screen_text() != before,
               timeout=15, message="Ctrl+C reached the session")
    v.check_stayed_home()


def test_remote_sessions_show_their_host_and_screens_keep_their_colours(
        tmux: Tmux, start_page_server: Callable[..., Harness],
        visit: Callable[..., Visit]) -> None:
    """The page's own drawing, fed a scripted conversation: the real server serves the
    page, playwright stands in for its WebSocket (hosts need ssh; tests/test_hosts.py
    covers them end to end)."""
    from playwright.sync_api import WebSocketRoute

    harness = start_page_server()
    v = visit(harness, viewport={"width": 390, "height": 844})
    asked: list[dict[str, Any]] = []
    remote = {"slug": "box1:API", "host": "box1", "path": "/srv/api", "state": "waiting",
              "reason": "done: shipped", "since": 0, "pid": 7, "claude_session_id": None,
              "tmux": "API:0.0", "dialog": None}
    screen = ("\x1b[1mbold\x1b[0m \x1b[38;2;255;0;0mred\x1b[0m \x1b[7minverse\x1b[27m "
              "\x1b[38;5;46mgreen\x1b[39m <b>not html</b>\n" + "─" * 300)

    def talk(ws: WebSocketRoute) -> None:
        def heard(text: str | bytes) -> None:
            message = json.loads(text)
            asked.append(message)
            if message["type"] == "get_screen":
                ws.send(json.dumps({"type": "screen", "session": message["session"],
                                    "data": screen, "cols": 300, "rows": 2,
                                    "id": message["id"]}))
        ws.on_message(heard)
        ws.send(json.dumps({"type": "sessions", "sessions": [remote]}))

    v.page.route_web_socket(re.compile(r".*/ws/stream.*"), talk)
    page = v.open()
    row = page.locator("#sessions .row").first
    row.wait_for()
    assert row.locator(".name").inner_text() == "API"
    assert row.locator(".host").inner_text() == "box1"
    row.click()
    wait_until(lambda: "red" in v.screen_text(), timeout=10)
    assert {"type": "get_screen", "session": "box1:API"} in [
        {k: m[k] for k in ("type", "session")} for m in asked if "session" in m]
    spans = page.eval_on_selector_all("#screen span", "s => s.map(x => [x.textContent, "
                                      "x.className, x.style.color, x.style.backgroundColor])")
    assert ["bold", "b", "", ""] in spans
    assert ["red", "", "rgb(255, 0, 0)", ""] in spans
    assert ["green", "", "rgb(0, 255, 0)", ""] in spans
    inverse = next(x for x in spans if x[0] == "inverse")
    assert inverse[2] and inverse[3]  # fore- and background swapped from the defaults
    assert "<b>not html</b>" in v.screen_text() and page.locator("#screen b").count() == 0
    assert page.evaluate("document.querySelector('#screen .l.rule') !== null")
    assert page.evaluate("document.scrollingElement.scrollWidth - innerWidth") <= 0


class SamePort(Harness):
    """A Harness on a given port: cbos restarted where the page expects it."""

    def __init__(self, tmux: Tmux, port: int) -> None:
        self.config = config_mod.load()
        self.engine = Engine(self.config, tmux)
        self.server = WebServer(self.config, "127.0.0.1", port, page=True)
        self.server.start()
        self.engine.start()
        self._stop_r, self._stop_w = os.pipe()
        self.thread = threading.Thread(target=web.serve_loop,
                                       args=(self.engine, self.server, self._stop_r),
                                       name="test-loop", daemon=True)
        self.thread.start()
        self.shutdown_took = None


def test_the_page_comes_back_when_cbos_does(
        cli: Cli, fake_claude: Path, quiet_fake: Path, tmux: Tmux, tmp_path: Path,
        start_page_server: Callable[..., Harness], visit: Callable[..., Visit]) -> None:
    new_session(cli, tmp_path, "STAY")
    harness = start_page_server()
    wait_ready(harness, "STAY")
    v = visit(harness)
    page = v.open()
    page.locator("#sessions .row").first.click()
    wait_until(lambda: "❯" in v.screen_text(), timeout=15)
    port = harness.port
    harness.close()
    wait_until(lambda: "offline" in page.inner_text("#conn"), timeout=15,
               message="the page says it lost cbos")
    assert page.evaluate("document.body.classList.contains('stale')")
    again = SamePort(tmux, port)
    try:
        wait_until(lambda: page.inner_text("#conn") == "live" and not page.evaluate(
            "document.body.classList.contains('stale')"), timeout=30,
            message="the page reconnects by itself, and has the list again")
        # It follows the same session again: typing still works.
        page.fill("#text", "SAY back again")
        page.press("#text", "Enter")
        wait_until(lambda: prompts(quiet_fake)[-1:] == ["SAY back again"], timeout=15,
                   message="the prompt after the restart")
        wait_until(lambda: "back again" in v.screen_text(), timeout=15,
                   message="the screen follows again")
    finally:
        again.close()


# -- cbos serve --web ------------------------------------------------------------------------------


def test_cbos_serve_web_prints_the_page_address(tmux: Tmux, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "cbos", "serve", "--web", "--port",
                             str(port)], stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert proc.stderr is not None
        said = proc.stderr.readline() + proc.stderr.readline()
        token = config_mod.load().token_file.read_text().strip()
        assert f"http://127.0.0.1:{port}/#token={token}" in said
        assert http_get(port, "/")[0] == 200
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_web_without_a_server_is_a_usage_error(cli: Cli) -> None:
    result = cli("--web")
    assert result.code == 2 and "--ws" in result.err
