"""The browser page (`cbos serve --web`): latency to the eye, weight, and idle CPU.

Everything runs on a private tmux server (``tmux -L cbos-bench-page-<pid> -f /dev/null``)
and a private HOME; `python -m cbos serve --web` runs as its own process, as a user runs
it, and Debian's Chromium (headless, through the playwright wheel) opens the page.

- Pane write -> text visible in the page: a pane prints a line stamped with
  ``time.time()`` every 100 ms; the page has that session selected (so it follows the
  screen with ``get_screen`` after each ``stream`` message). Measured with that session
  alone, then again with N fake claude sessions idle beside it. An observer in the page
  notes, for each stamp, when it first appears in the screen's DOM and when the next
  frame is drawn after that (``requestAnimationFrame``: on screen). Same machine, same
  clock. Beside it, in the same run, the floor: the same stamps read by a bare WebSocket
  client subscribed to the session (``stream`` messages, no screen, no browser).
- Page weight: the bytes the browser received for the page and its files (gzip, as
  served), against the files as stored.
- Server CPU: the `cbos serve --web` process's CPU time over a window with N fake claude
  sessions idle (default 50), with no page open (the baseline: the engine's own refresh),
  then with 5 pages open, each following a different session's screen.

Run as ``python -m bench.page`` (a few minutes: 50 fake claudes start first) or
``--quick`` (10 sessions, shorter windows).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
STAMPER = r"""
import sys, time
n = 0
while True:
    sys.stdout.write(f"\x1b[32mline {n:05d}\x1b[0m @@T{time.time():.6f}@@\r\n")
    sys.stdout.flush()
    n += 1
    time.sleep(0.1)
"""
STAMP = re.compile(r"@@T(\d+\.\d+)@@")
# In the page: each stamp's first appearance in #screen (DOM) and the frame after it.
OBSERVER = r"""
(() => {
  window.__seen = new Map(); window.__lat = [];
  const scan = () => {
    const screen = document.getElementById("screen");
    if (!screen) return;
    const now = Date.now() / 1000;
    const fresh = [];
    for (const m of screen.textContent.matchAll(/@@T(\d+\.\d+)@@/g)) {
      if (!window.__seen.has(m[1])) { window.__seen.set(m[1], now); fresh.push(m[1]); }
    }
    if (fresh.length) requestAnimationFrame(() => {
      const drawn = Date.now() / 1000;
      for (const s of fresh) window.__lat.push([Number(s), window.__seen.get(s), drawn]);
    });
  };
  new MutationObserver(scan).observe(document, {subtree: true, childList: true,
                                                characterData: true});
})();
"""


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def wait_js(page: Any, expression: str, timeout: float = 30.0) -> None:
    """Poll ``expression`` in the page from here: playwright's own wait_for_function
    evaluates strings in the page, which the page's CSP (rightly) forbids."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {expression}")
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_server(sock_name: str, port: int) -> tuple[subprocess.Popen[str], str]:
    """`cbos serve --web` on ``port``; returns it and the page address it printed."""
    proc = subprocess.Popen([sys.executable, "-m", "cbos", "-L", sock_name, "serve", "--web",
                             "--port", str(port)], stderr=subprocess.PIPE, text=True,
                            cwd=REPO)
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            raise RuntimeError("cbos serve --web ended before printing the page's address")
        found = re.search(r"(http://\S+#token=\S+)", line)
        if found:
            threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep it drained
            return proc, found.group(1)
    raise RuntimeError("cbos serve --web printed no page address within 60 s")


def cpu_seconds(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def floor_latency(port: int, token: str, slug: str, seconds: float) -> list[float]:
    """The same stamps through a bare WebSocket client: the server's part of the trip."""
    from websockets.sync.client import connect

    lat: list[float] = []
    rest = ""
    with connect(f"ws://127.0.0.1:{port}/ws/stream", proxy=None,
                 additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        ws.send(json.dumps({"type": "subscribe", "sessions": [slug]}))
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                text = ws.recv(timeout=max(0.01, end - time.monotonic()))
            except TimeoutError:
                break
            now = time.time()
            message = json.loads(text)
            if message.get("type") == "stream":
                rest += message["data"]
                cut = rest.rfind("\n") + 1
                lat.extend(now - float(m.group(1)) for m in STAMP.finditer(rest, 0, cut))
                rest = rest[cut:]
    return lat


def start_sessions_quietly(sock_name: str, root: Path, count: int) -> None:
    """bench.tui's fake claude sessions (its "keep" session is new: STAMPS started the
    server)."""
    from bench.tui import start_sessions

    start_sessions(sock_name, root, count, 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 sessions, short windows")
    parser.add_argument("--sessions", type=int, help="idle fake claudes (default 50)")
    parser.add_argument("--seconds", type=float, help="length of each measured window")
    args = parser.parse_args()
    sessions = args.sessions or (10 if args.quick else 50)
    seconds = args.seconds or (8.0 if args.quick else 20.0)
    chromium = shutil.which("chromium")
    if not shutil.which("tmux") or not chromium:
        print("bench.page: needs tmux and Debian's chromium", file=sys.stderr)
        return 1

    from bench.tui import setup_environment, tmux

    root = Path(tempfile.mkdtemp(prefix="cbos-bench-page-"))
    sock_name = f"cbos-bench-page-{os.getpid()}"
    env_keep = dict(os.environ)
    setup_environment(root)
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                 "ALL_PROXY"):
        os.environ.pop(name, None)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    server: subprocess.Popen[str] | None = None
    results: dict[str, Any] = {}
    try:
        from cbos import config as config_mod
        from cbos import page as page_mod
        from cbos.tmux import SLUG_OPTION, Tmux

        config = config_mod.load(dict(os.environ, CBOS_TMUX_SOCKET=sock_name))
        config_mod.ensure_dirs(config)
        handle = Tmux(sock_name)
        pane = tmux(sock_name, "new-session", "-d", "-s", "STAMPS", "-x", "120", "-y", "40",
                    "-P", "-F", "#{pane_id}",
                    f"{shlex.quote(sys.executable)} -c {shlex.quote(STAMPER)}")[0]
        handle.set_pane_option(pane, SLUG_OPTION, "STAMPS")
        handle.pipe(pane, config.log_path("STAMPS"))
        port = free_port()
        server, url = start_server(sock_name, port)
        token = url.split("#token=", 1)[1]
        slugs = sorted(f"S{i + 1:03d}" for i in range(sessions))

        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            # -- weight
            context = browser.new_context()
            page = context.new_page()
            received: list[int] = []
            page.on("response", lambda r: received.append(
                int(r.headers.get("content-length", "0"))))
            page.goto(url)
            page.wait_for_selector("#sessions .row")
            page.wait_for_timeout(500)
            results["weight"] = {"wire": sum(received), "files": page_mod.weight()}
            # -- latency: the page follows STAMPS' screen; alone, then beside N idle fakes
            page.add_init_script(OBSERVER)
            page.reload()  # the token is in this tab's sessionStorage
            page.locator("#sessions .row[data-slug='STAMPS']").click()
            wait_js(page, "window.__lat && window.__lat.length > 5")
            for label in ("alone", "crowd"):
                if label == "crowd":
                    print(f"starting {sessions} fake claude sessions…", file=sys.stderr,
                          flush=True)
                    start_sessions_quietly(sock_name, root, sessions)
                    wait_js(page, f"document.querySelectorAll('#sessions .row').length "
                                  f">= {sessions + 1}", timeout=120)
                    time.sleep(2.0)
                page.evaluate("window.__lat = []")
                floor: list[float] = []
                floor_thread = threading.Thread(target=lambda into=floor: into.extend(
                    floor_latency(port, token, "STAMPS", seconds)))
                floor_thread.start()
                page.wait_for_timeout(seconds * 1000)
                floor_thread.join()
                triples = page.evaluate("window.__lat")
                results[label] = {"dom": [seen - stamp for stamp, seen, _ in triples],
                                  "drawn": [drawn - stamp for stamp, _, drawn in triples],
                                  "floor": floor}
            context.close()
            tmux(sock_name, "kill-session", "-t", "=STAMPS")

            # -- idle CPU: no page, then 5 pages each following an idle session
            time.sleep(3.0)  # STAMPS' end settles
            cpu0 = cpu_seconds(server.pid)
            time.sleep(seconds)
            results["cpu_none"] = (cpu_seconds(server.pid) - cpu0) / seconds
            contexts = []
            for i in range(5):
                ctx = browser.new_context()
                tab = ctx.new_page()
                tab.goto(url)
                tab.locator(f"#sessions .row[data-slug='{slugs[i % len(slugs)]}']").click()
                tab.wait_for_selector("#screen .l:not(.note)")
                contexts.append(ctx)
            time.sleep(2.0)
            cpu0 = cpu_seconds(server.pid)
            time.sleep(seconds)
            results["cpu_five"] = (cpu_seconds(server.pid) - cpu0) / seconds
            for ctx in contexts:
                ctx.close()
            browser.close()
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=15)
        subprocess.run(["tmux", "-L", sock_name, "kill-server"], check=False,
                       capture_output=True)
        os.environ.clear()
        os.environ.update(env_keep)
        shutil.rmtree(root, ignore_errors=True)

    ms = 1000.0
    print(f"== the page: pane write -> text in the page, one stamped line every 100 ms, "
          f"{seconds:.0f} s ==")
    print(f"{'sessions':<9} {'path':<44} {'p50':>8} {'p99':>8} {'max':>8} {'samples':>8}")
    for label, count in (("alone", 1), ("crowd", sessions + 1)):
        for name, key in (("bare WebSocket client (stream, the floor)", "floor"),
                          ("page: in the screen's DOM", "dom"),
                          ("page: next frame drawn (target p99 50 ms)", "drawn")):
            values = results[label][key]
            print(f"{count:<9} {name:<44} {pct(values, .5) * ms:>6.1f}ms "
                  f"{pct(values, .99) * ms:>6.1f}ms "
                  f"{max(values, default=float('nan')) * ms:>6.1f}ms {len(values):>8}")
        drawn, floor = results[label]["drawn"], results[label]["floor"]
        if drawn and floor:
            print(f"{'':<9} page over the floor: p50 +"
                  f"{(pct(drawn, .5) - pct(floor, .5)) * ms:.1f} ms, p99 +"
                  f"{(pct(drawn, .99) - pct(floor, .99)) * ms:.1f} ms, mean "
                  f"{statistics.fmean(drawn) / statistics.fmean(floor):.1f}x")
    files = results["weight"]["files"]
    stored = sum(raw for raw, _ in files.values())
    zipped = sum(z for _, z in files.values())
    print(f"page weight: {results['weight']['wire'] / 1024:.1f} KB received by the browser "
          f"(gzip; target 300 KB); files {stored / 1024:.1f} KB as stored, "
          f"{zipped / 1024:.1f} KB gzipped: " + ", ".join(
              f"{path} {z / 1024:.1f} KB" for path, (_, z) in files.items()))
    print(f"server CPU, {sessions} idle sessions: {results['cpu_none'] * 100:.1f}% with no "
          f"page, {results['cpu_five'] * 100:.1f}% with 5 pages open "
          f"({results['cpu_five'] / max(results['cpu_none'], 1e-9):.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
