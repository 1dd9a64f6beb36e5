"""Screenshots of the browser page for the README: a phone (390x844) and a desktop.

A private tmux server and HOME hold a few fake claude sessions (tests/fakeclaude) in
different states: one asking to write a file, one waiting after a reply, one working,
one thinking, one idle. `python -m cbos serve --web` serves them and Debian's Chromium
(headless, playwright wheel) takes the pictures.

Run as ``python -m bench.screenshots [DIR]`` (default docs/screenshots/).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.page import free_port, start_server, wait_js

REPO = Path(__file__).resolve().parent.parent
# slug -> the prompt that puts the fake in the state to show (None: left idle).
SCENE = {
    "api-auth": "WRITE {project}/src/auth/tokens.py",
    "docs": "SAY Done: the README now explains the browser page, with screenshots for a "
            "phone and a desktop, and the man page lists --web.",
    "refactor": "SLOW 300",
    "tests": "THINK 300",
    "spike": None,
}


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "screenshots"
    chromium = shutil.which("chromium")
    if not chromium or not shutil.which("tmux"):
        print("bench.screenshots: needs tmux and Debian's chromium", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    from bench.tui import setup_environment, tmux

    root = Path(tempfile.mkdtemp(prefix="cbos-shots-"))
    sock_name = f"cbos-shots-{os.getpid()}"
    env_keep = dict(os.environ)
    setup_environment(root)
    os.environ["CBOS_CLAUDE_ENV_VARS"] = ("FAKE_CLAUDE_IDLE_NOTIFY_S=3600 "
                                          "FAKE_CLAUDE_DIALOG_GRACE_S=0.3")
    server = None
    try:
        from cbos import config as config_mod
        from cbos.core import Core
        from cbos.tmux import Tmux

        tmux(sock_name, "new-session", "-d", "-s", "keep", "sleep 1000000")
        config = config_mod.load(dict(os.environ, CBOS_TMUX_SOCKET=sock_name))
        config_mod.ensure_dirs(config)
        core = Core(config, Tmux(sock_name))
        projects = {}
        for slug in SCENE:
            project = root / "work" / slug
            (project / "src" / "auth").mkdir(parents=True)
            core.create(project, slug)
            projects[slug] = project
        core.load()
        deadline = time.monotonic() + 60
        for slug in SCENE:
            pane = core.session(slug).pane.pane_id
            while "❯\u00a0" not in core.tmux.capture(pane, colours=False):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{slug} never showed its composer")
                time.sleep(0.2)
        for slug, prompt in SCENE.items():
            if prompt:
                core.send(slug, prompt.format(project=projects[slug]))
        port = free_port()
        server, url = start_server(sock_name, port)

        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            phone = browser.new_context(viewport={"width": 390, "height": 844},
                                        device_scale_factor=2, is_mobile=True,
                                        has_touch=True)
            page = phone.new_page()
            page.goto(url)
            wait_js(page, "document.querySelectorAll('#sessions .row').length == 5"
                          " && document.querySelector('.st-permission')"
                          " && document.querySelector('.st-waiting')", timeout=60)
            page.wait_for_timeout(1500)
            page.screenshot(path=str(out / "phone-list.png"))
            page.locator("#sessions .row[data-slug='api-auth']").click()
            page.wait_for_selector("#dialog:not([hidden]) #options button")
            page.wait_for_selector("#screen .l:not(.note)")
            page.wait_for_timeout(800)
            page.screenshot(path=str(out / "phone-dialog.png"))
            phone.close()

            desktop = browser.new_context(viewport={"width": 1280, "height": 800})
            page = desktop.new_page()
            page.goto(url)
            page.locator("#sessions .row[data-slug='api-auth']").click()
            page.wait_for_selector("#dialog:not([hidden]) #options button")
            page.wait_for_selector("#screen .l:not(.note)")
            page.wait_for_timeout(800)
            page.screenshot(path=str(out / "desktop.png"))
            desktop.close()
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
    for name in ("phone-list.png", "phone-dialog.png", "desktop.png"):
        print(out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
