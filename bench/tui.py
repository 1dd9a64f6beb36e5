"""The TUI's time to first paint and key-press latency, against the floor of the same run.

Two private tmux servers (``tmux -L cbos-bench-tui-<pid>-N -f /dev/null``) hold the
sessions: one with a single fake claude, one with 100 sessions, of which 94 run the fake
claude of cbos's tests (idle at their prompt, hooks and status files as the real one)
and 6 stream like claude at work: an Ink-style block redrawn 20 times a second with
transcript lines scrolling above it, piped into their logs.

- Time to first paint: ``python -m cbos -L SOCKET`` starts in a pseudo-terminal (120x40,
  ``xterm-256color``); the clock runs from the spawn to the moment the screen (a ``pyte``
  terminal fed the output) shows the status bar and the first row of the list. The floor
  is what no TUI can avoid: ``python -c 'import urwid'`` plus one ``tmux list-panes -a``
  on the same socket, from spawn to exit. Runs alternate, so load on the machine hits
  both alike; medians are printed.
- Key-press latency: with 100 sessions and 6 streaming, ``j``/``k`` walk the list (name
  order, so the selection crosses the streaming sessions, whose previews are captured at
  up to 30 frames a second); each key is timed from its write to the screen showing the
  newly selected session's title in the preview.
- The same with a pane that prints without pause (about 35 MB/s of numbered lines
  through tmux, here) among 10 idle fake claudes: its output is read in bounded rounds,
  and keys must still be answered within 50 ms (p99).

Run as ``python -m bench.tui`` (about a minute and a half) or ``--quick``.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import re
import select
import shlex
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyte

from bench import compile_cbos

REPO = Path(__file__).resolve().parent.parent
COLS, ROWS = 120, 40
STREAMING = 6
# The preview's title as drawn: " ○ SLUG" in one colour, " · " in the next.
RAW_TITLE = re.compile(rb" [^ \x1b]{1,4} ([A-Za-z0-9_-]+)(?:\x1b\[[0-9;?]*[A-Za-z])+ \xc2\xb7 ")

WRITER = r"""
import sys, time
O, G, B, R = "\x1b[38;2;215;119;87m", "\x1b[38;5;246m", "\x1b[1m", "\x1b[0m"
spin = "·✢✳✶✻✽"
W = 100
prev = n = 0
while True:
    out = ["\x1b[2K\x1b[1A" * prev + "\x1b[2K\x1b[G"] if prev else []
    if n % 8 == 0:
        out.append(f"{O}⏺{R} Read {B}src/module_{n}.ts{R} {G}({n * 3} lines){R}\r\n")
    lines = [f"{O}{spin[n % 6]}{R} {B}Working on it…{R} {G}({n // 20}s · esc to interrupt){R}",
             "", f"{G}╭{'─' * (W - 2)}╮{R}", f"{G}│{R} > {' ' * (W - 5)}{G}│{R}",
             f"{G}╰{'─' * (W - 2)}╯{R}"]
    out.append("\r\n".join(lines))
    sys.stdout.write("".join(out))
    sys.stdout.flush()
    prev = len(lines) - 1
    n += 1
    time.sleep(0.05)
"""


# A pane printing as fast as tmux takes it: numbered lines with colour, no pause at all.
FLOODER = r"""
import sys
n = 0
while True:
    sys.stdout.write("".join(f"\x1b[32m{n + i:>9}\x1b[0m flood line, as fast as it goes\r\n"
                             for i in range(200)))
    n += 200
"""


def tmux(socket: str, *args: str, check: bool = True) -> list[str]:
    result = subprocess.run(["tmux", "-L", socket, "-f", "/dev/null", *args],
                            capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"tmux {args[0]} failed: {result.stderr.strip()}")
    return result.stdout.splitlines()


def setup_environment(root: Path) -> dict[str, str]:
    """A private HOME, XDG dirs and the fake claude, for this process and its children."""
    home = root / "home"
    home.mkdir()
    bin_dir = root / "bin"
    bin_dir.mkdir()
    sys.path.insert(0, str(REPO))
    from tests.fakeclaude import install_fake_claude

    claude = install_fake_claude(bin_dir)
    env = {
        "HOME": str(home), "XDG_STATE_HOME": str(home / ".local" / "state"),
        "XDG_CONFIG_HOME": str(home / ".config"), "XDG_DATA_HOME": str(home / ".local/share"),
        "CBOS_CLAUDE_COMMAND": str(claude),
        "CBOS_CLAUDE_ENV_VARS": "FAKE_CLAUDE_IDLE_NOTIFY_S=3600",
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(REPO), "TERM": "xterm-256color", "LANG": "C.UTF-8",
    }
    for name in list(os.environ):
        if name.startswith("CBOS_") or name in ("TMUX", "TMUX_PANE", "CLAUDE_CONFIG_DIR"):
            del os.environ[name]
    os.environ.update(env)  # the tmux servers, and so every pane, start with these
    return env


def start_sessions(socket: str, root: Path, fakes: int, streaming: int,
                   flooding: int = 0) -> None:
    from cbos import config as config_mod
    from cbos.core import Core
    from cbos.tmux import SLUG_OPTION, Tmux

    tmux(socket, "new-session", "-d", "-s", "keep", "sleep 1000000")  # the server, -f /dev/null
    config = config_mod.load(dict(os.environ, CBOS_TMUX_SOCKET=socket))
    config_mod.ensure_dirs(config)
    handle = Tmux(socket)
    core = Core(config, handle)
    writers = [(f"A-STREAM-{i + 1}", WRITER) for i in range(streaming)]
    writers += [(f"A-FLOOD-{i + 1}", FLOODER) for i in range(flooding)]
    for slug, code in writers:  # adopted as cbos sessions: a slug, piped into a log
        pane = tmux(socket, "new-session", "-d", "-s", slug, "-x", "200", "-y", "50", "-P",
                    "-F", "#{pane_id}", f"{sys.executable} -c {shlex.quote(code)}")[0]
        handle.set_pane_option(pane, SLUG_OPTION, slug)
        handle.pipe(pane, config.log_path(slug))
    for i in range(fakes):
        slug = f"S{i + 1:03d}"
        project = root / "projects" / slug.lower()
        project.mkdir(parents=True)
        core.create(project, slug)
        if i % 10 == 9:
            time.sleep(0.5)  # let the fakes start in waves; 2 CPUs are easy to swamp
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        views = Core(config, handle).load().snapshot().sessions
        ready = sum(1 for v in views if v.pid is not None and v.claude_session_id)
        if ready >= fakes:
            break
        time.sleep(1.0)
    else:
        raise RuntimeError(f"only {ready} of {fakes} fake claudes came up")


class Terminal:
    """A pseudo-terminal running one command, its screen kept by pyte."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
        self.recent = b""  # the output since the last key, for raw matching
        self.output = b""  # all of it, for :meth:`dump`
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                                     cwd=REPO, start_new_session=True)
        os.close(slave)

    def pump(self, until: Callable[[], bool], timeout: float) -> float | None:
        """Read output until ``until()``; the perf_counter time it held. The bytes are
        matched raw (:attr:`recent`): a terminal emulator would add its own delay."""
        deadline = time.perf_counter() + timeout
        while True:
            if until():
                return time.perf_counter()
            left = deadline - time.perf_counter()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    data = os.read(self.master, 1 << 16)
                except OSError:
                    return None
                self.recent = self.recent[-4000:] + data
                self.output += data

    def drain(self, seconds: float) -> None:
        self.pump(lambda: False, seconds)

    def drawn_title(self) -> str | None:
        """The last preview title drawn since :attr:`recent` was cleared."""
        found = RAW_TITLE.findall(self.recent)
        return found[-1].decode() if found else None

    def dump(self) -> str:
        """The screen as a terminal shows it (for error messages)."""
        screen = pyte.Screen(COLS, ROWS)
        pyte.ByteStream(screen).feed(self.output)
        return "\n".join(screen.display)

    def close(self) -> None:
        try:
            os.write(self.master, b"q")
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)


def first_paint(socket: str, env: dict[str, str], sessions: int) -> float:
    term = Terminal([sys.executable, "-m", "cbos", "-L", socket], env)
    wanted = f" {sessions} session".encode()
    try:
        # One frame is one write: the count in the status bar and the preview's title
        # (drawn after the list's first row, on the same line) mean the list is there.
        at = term.pump(lambda: wanted in term.output and RAW_TITLE.search(term.output)
                       is not None, timeout=30)
        if at is None:
            raise RuntimeError(f"no first paint within 30 s; screen:\n{term.dump()}")
        return at - term.started
    finally:
        term.close()


def floor(socket: str, env: dict[str, str]) -> float:
    from cbos.tmux import PANE_FORMAT

    code = ("import subprocess, sys, urwid; "
            "subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True)")
    query = ["tmux", "-L", socket, "list-panes", "-a", "-F", PANE_FORMAT]  # as cbos asks
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, *query], env=env, check=True, cwd=REPO)
    return time.perf_counter() - start


@dataclass
class Latencies:
    values: list[float]
    missed: int


def key_latency(socket: str, env: dict[str, str], keys: int, walk: int) -> Latencies:
    term = Terminal([sys.executable, "-m", "cbos", "-L", socket], env)
    try:
        if term.pump(lambda: RAW_TITLE.search(term.output) is not None, timeout=30) is None:
            raise RuntimeError(f"the TUI did not come up; screen:\n{term.dump()}")
        os.write(term.master, b"s")  # name order: the streaming sessions come first
        term.pump(lambda: b"by name" in term.output, timeout=5)
        term.drain(3.0)  # steady state: refreshes, captures, the streams
        values: list[float] = []
        missed = 0
        term.recent = term.output[-4000:]
        before = term.drawn_title()
        for step in range(1, keys + 1):
            key = b"j" if ((step - 1) // walk) % 2 == 0 else b"k"
            term.recent = b""
            start = time.perf_counter()
            os.write(term.master, key)

            def moved(before: str | None = before) -> bool:
                return term.drawn_title() not in (before, None)

            at = term.pump(moved, 2.0)
            if at is None:
                missed += 1
            else:
                values.append(at - start)
                before = term.drawn_title()
            term.drain(0.05 + (step % 7) * 0.015)  # a person's pace, not in phase
        return Latencies(values, missed)
    finally:
        term.close()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer runs and keys")
    p.add_argument("--runs", type=int, help="first-paint runs per case (default 9)")
    p.add_argument("--keys", type=int, help="key presses timed (default 400)")
    args = p.parse_args(argv)
    compile_cbos()  # as a wheel install does (see bench/__init__.py)
    if shutil.which("tmux") is None:
        print("tmux is not installed", file=sys.stderr)
        return 1
    runs = args.runs or (3 if args.quick else 9)
    keys = args.keys or (100 if args.quick else 400)
    import urwid

    version = subprocess.run(["tmux", "-V"], capture_output=True, text=True).stdout.strip()
    print(f"cbos TUI bench: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, {version}, "
          f"urwid {urwid.__version__}, python {sys.version.split()[0]}", flush=True)
    t0 = time.time()
    sockets = {1: f"cbos-bench-tui-{os.getpid()}-1", 100: f"cbos-bench-tui-{os.getpid()}-100"}
    flood = f"cbos-bench-tui-{os.getpid()}-flood"
    # ignore_cleanup_errors: a flood's tee may still be writing as the servers go down.
    with tempfile.TemporaryDirectory(prefix="cbos-bench-tui-", ignore_cleanup_errors=True) as tmp:
        root = Path(tmp)
        env = setup_environment(root)
        try:
            start_sessions(sockets[1], root / "one", 1, 0)
            start_sessions(sockets[100], root / "many", 100 - STREAMING, STREAMING)
            print(f"sessions up in {time.time() - t0:.0f} s; load {os.getloadavg()[0]:.2f}",
                  flush=True)
            print(f"time to first paint, spawn to the session list on screen (median of "
                  f"{runs} runs, alternating with the floor):")
            print("  sessions    floor      cbos    ratio")
            for count, socket in sockets.items():
                floors: list[float] = []
                paints: list[float] = []
                first_paint(socket, env, count)  # warm the page cache, .pyc files
                for _ in range(runs):
                    floors.append(floor(socket, env))
                    paints.append(first_paint(socket, env, count))
                f, c = statistics.median(floors), statistics.median(paints)
                print(f"  {count:>8}  {f * 1000:5.0f} ms  {c * 1000:5.0f} ms  {c / f:5.2f}x"
                      f"   (cbos min {min(paints) * 1000:.0f} ms, max "
                      f"{max(paints) * 1000:.0f} ms)", flush=True)
            print("  floor: python start + import urwid + one `tmux list-panes -a`; "
                  "target: cbos at most 1.5x the floor")
            for socket, what in ((sockets[100], f"100 sessions, {STREAMING} streaming at "
                                                 "20 frames/s"),
                                 (flood, "11 sessions, 1 printing as fast as tmux allows")):
                if socket == flood:  # started now: its load must not weigh on the rest
                    tmux(sockets[100], "kill-server", check=False)
                    start_sessions(flood, root / "flood", 10, 0, flooding=1)
                result = key_latency(socket, env, keys, walk=9)
                values = [v * 1000 for v in result.values]
                print(f"key press to selection drawn, {what} ({len(values)} keys, "
                      f"{result.missed} not answered in 2 s):")
                if values:
                    print(f"  p50 {pct(values, .5):.1f} ms  p90 {pct(values, .9):.1f} ms  "
                          f"p99 {pct(values, .99):.1f} ms  max {max(values):.1f} ms   "
                          f"(target: p99 <= 50 ms: {pct(values, .99) / 50:.2f}x of it)",
                          flush=True)
        finally:
            for socket in [*sockets.values(), flood]:
                path = tmux(socket, "display-message", "-p", "#{socket_path}", check=False)
                tmux(socket, "kill-server", check=False)
                if path:
                    Path(path[0]).unlink(missing_ok=True)
    print(f"total {time.time() - t0:.0f} s; load {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
