"""How should the preview render a pane: tmux's own rendering, or pyte fed from the log?

A real pane (private server, ``tmux -L cbos-render-<pid> -f /dev/null``, 120x40) runs a
claude-like workload: an Ink-style block (spinner, status with truecolour and 256-colour
SGR, a box-drawn prompt, a wide-character line) erased and redrawn 20 times a second, with
transcript lines scrolling above it, and a pause every few seconds. The pane is piped into a
log with ``Tmux.pipe`` from its first byte. Measured:

- ``capture-pane -e -p`` as a subprocess per frame, and over one control-mode client
  (``tmux -C attach -f no-output``: no fork per frame): wall time and CPU per frame,
  tmux server CPU included;
- pyte (``ByteStream`` into a ``Screen``) fed the log: CPU per frame and throughput, plus
  the cost of turning its buffer into styled lines;
- fidelity at each pause: pyte's screen against capture-pane's (text per line, and per
  cell glyph + colours + bold, capture-pane's SGR parsed by pyte too), for pyte fed from
  the first byte and for pyte started mid-stream (where a tail that starts at the end of
  a log would start).

Run as ``python -m bench.render`` (about 30 seconds) or ``--quick``.
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyte

WIDTH, HEIGHT = 120, 40

WORKLOAD = r"""
import sys, time
W, frames, holds = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
O, G, B, R = "\x1b[38;2;215;119;87m", "\x1b[38;5;246m", "\x1b[1m", "\x1b[0m"
spin = "·✢✳✶✻✽"
def block(i):
    typed = "fix the flaky test in auth"[: i % 27]
    return [
        f"{O}{spin[i % 6]}{R} {B}Updating auth.ts to use JWT…{R} "
        f"{G}({i // 20}s · ↑ {i * 37} tokens · esc to interrupt){R}",
        "",
        f"{G}╭{'─' * (W - 2)}╮{R}",
        f"{G}│{R} > {typed}{' ' * (W - 5 - len(typed))}{G}│{R}",
        f"{G}╰{'─' * (W - 2)}╯{R}",
        f"  {G}⏵⏵ accept edits on{R} (shift+tab to cycle)   "
        "日本語のテスト 🙂 \x1b[7m inverse \x1b[0m",
    ]
prev = 0
n = 0
for hold in range(holds):
    for i in range(frames):
        out = ["\x1b[2K\x1b[1A" * prev + "\x1b[2K\x1b[G"] if prev else []
        if n % 8 == 0:  # a transcript line above the block, scrolling the screen
            out.append(f"{O}⏺{R} Read {B}src/module_{n}.ts{R} {G}({n * 3} lines){R}\r\n")
            out.append(f"  {G}⎿  {R}found {n % 7} matches in \x1b[4mthe file\x1b[24m\r\n")
        lines = block(n)
        out.append("\r\n".join(lines))
        sys.stdout.write("".join(out))
        sys.stdout.flush()
        prev = len(lines) - 1
        n += 1
        time.sleep(0.05)
    time.sleep(1.0)  # a pause: the screen is still, the bench compares renderings
time.sleep(3600)
"""


def _cpu_children() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _cpu_self() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Control:
    """One control-mode client: tmux commands without a fork per call."""

    def __init__(self, socket: str, session: str) -> None:
        self.proc = subprocess.Popen(
            ["tmux", "-L", socket, "-C", "attach", "-t", session, "-f", "no-output"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        self.out = self.proc.stdout
        self._skip_to_end()  # the attach's own reply

    def _skip_to_end(self) -> list[bytes]:
        lines: list[bytes] = []
        while True:
            line = self.out.readline()
            if not line:
                raise RuntimeError("control client went away")
            if line.startswith((b"%end", b"%error")):
                return lines
            if line.startswith(b"%begin"):
                lines = []
                continue
            if not line.startswith(b"%"):
                lines.append(line)

    def run(self, command: str) -> bytes:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()
        return b"".join(self._skip_to_end())

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def screen_of(data: bytes) -> pyte.Screen:
    screen = pyte.Screen(WIDTH, HEIGHT)
    pyte.ByteStream(screen).feed(data)
    return screen


def captured_screen(capture: bytes) -> pyte.Screen:
    """capture-pane -e output, parsed by pyte so cells compare attribute by attribute.

    tmux writes only attribute changes, and they carry from one line to the next: replay
    the lines as one stream (a reset between lines would lose colours).
    """
    lines = capture.rstrip(b"\n").split(b"\n")
    return screen_of(b"\x1b[H" + b"\r\n".join(lines))


def compare(a: pyte.Screen, b: pyte.Screen) -> tuple[int, int, int, int]:
    """(lines equal as text, lines, cells equal in glyph+fg+bg+bold+reverse, cells).

    A blank cell's foreground cannot be seen (pyte gives erased cells the current one,
    tmux does not), so fg counts only where there is a glyph.
    """
    same_lines = sum(x.rstrip() == y.rstrip() for x, y in zip(a.display, b.display,
                                                               strict=True))
    same_cells = 0
    for y in range(HEIGHT):
        ra, rb = a.buffer[y], b.buffer[y]
        for x in range(WIDTH):
            ca, cb = ra[x], rb[x]
            if (ca.data, ca.bg, ca.bold, ca.reverse) == (cb.data, cb.bg, cb.bold, cb.reverse) \
                    and (ca.fg == cb.fg or not ca.data.strip()):
                same_cells += 1
    return same_lines, HEIGHT, same_cells, HEIGHT * WIDTH


def styled_lines(screen: pyte.Screen) -> list[list[tuple[tuple[str, str, bool], str]]]:
    """What a preview widget would need from pyte: runs of (fg, bg, bold) and text."""
    rows = []
    for y in range(screen.lines):
        row = screen.buffer[y]
        runs: list[tuple[tuple[str, str, bool], str]] = []
        for x in range(screen.columns):
            c = row[x]
            key = (c.fg, c.bg, c.bold)
            if runs and runs[-1][0] == key:
                runs[-1] = (key, runs[-1][1] + c.data)
            else:
                runs.append((key, c.data))
        rows.append(runs)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer frames (about 12 s)")
    args = p.parse_args(argv)
    frames, holds = (60, 3) if args.quick else (100, 6)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from cbos.tmux import Tmux

    socket = f"cbos-render-{os.getpid()}"
    work = Path(tempfile.mkdtemp(prefix="cbos-render-"))
    log = work / "R.log"
    log.touch()
    subprocess.run(["tmux", "-L", socket, "-f", "/dev/null", "new-session", "-d", "-s",
                    "keepalive", "sleep 86400"], check=True)
    control: Control | None = None
    try:
        tmux = Tmux(socket)
        command = "exec " + shlex.join([sys.executable, "-c", WORKLOAD, str(WIDTH),
                                        str(frames), str(holds)])
        pane = tmux.new_session("R", work, command, {"LANG": "C.UTF-8"}, log, 2000,
                                (WIDTH, HEIGHT))
        server = int(tmux.cmd("display-message", "-p", "#{pid}")[0])
        control = Control(socket, "R")
        tmux_bin = shutil.which("tmux") or "tmux"
        argv_capture = [tmux_bin, "-L", socket, "capture-pane", "-e", "-p", "-t", pane.pane_id]
        # -N keeps trailing spaces: without it a reverse-video space ending a line is lost.
        argv_exact = [*argv_capture[:-2], "-N", *argv_capture[-2:]]

        # Drive both capture paths at up to 30/s, only when the log moved, like a preview.
        sub_wall: list[float] = []
        ctl_wall: list[float] = []
        checkpoints: list[tuple[int, bytes]] = []  # (log size, capture -e) at each pause
        last_size = -1
        still_since = time.monotonic()
        checked_at = -1
        sub_cpu = ctl_cpu = srv_sub = srv_ctl = 0.0
        deadline = time.monotonic() + frames * holds * 0.06 + holds * 1.0 + 5
        while time.monotonic() < deadline and len(checkpoints) < holds:
            size = log.stat().st_size
            now = time.monotonic()
            if size != last_size:
                last_size, still_since = size, now
                # subprocess capture
                c0, s0, t0 = _cpu_children(), _proc_cpu(server), time.perf_counter()
                subprocess.run(argv_capture, capture_output=True, check=True)
                sub_wall.append(time.perf_counter() - t0)
                sub_cpu += _cpu_children() - c0
                srv_sub += _proc_cpu(server) - s0
                # control-mode capture
                c0, s0, t0 = _cpu_self(), _proc_cpu(server), time.perf_counter()
                control.run(f"capture-pane -e -p -t {pane.pane_id}")
                ctl_wall.append(time.perf_counter() - t0)
                ctl_cpu += _cpu_self() - c0
                srv_ctl += _proc_cpu(server) - s0
            elif now - still_since > 0.3 and checked_at != size and size > 0:
                cap = subprocess.run(argv_exact, capture_output=True, check=True).stdout
                if log.stat().st_size == size:
                    checkpoints.append((size, cap))
                    checked_at = size
            time.sleep(1 / 30)

        stream = log.read_bytes()
        frames_written = frames * holds

        # pyte fed the whole stream, in the pieces a tail would hand it (about a frame each).
        screen = pyte.Screen(WIDTH, HEIGHT)
        bs = pyte.ByteStream(screen)
        piece = max(1, len(stream) // frames_written)
        t0 = time.process_time()
        for i in range(0, len(stream), piece):
            bs.feed(stream[i:i + piece])
        feed_cpu = time.process_time() - t0
        t0 = time.process_time()
        for _ in range(50):
            styled_lines(screen)
        style_cpu = (time.process_time() - t0) / 50

        # Fidelity at each pause: from the first byte, and from mid-stream.
        rows = []
        mid = checkpoints[0][0] + 37 if checkpoints else 0  # inside a frame
        for size, cap in checkpoints:
            want = captured_screen(cap)
            full = compare(screen_of(stream[:size]), want)
            late = compare(screen_of(stream[mid:size]), want) if size > mid else None
            rows.append((size, full, late))

        print(f"cbos render bench: pane {WIDTH}x{HEIGHT}, {frames_written} frames at 20/s, "
              f"{len(stream)} bytes ({len(stream) / frames_written:.0f} B/frame), "
              f"{os.cpu_count()} CPUs, pyte {getattr(pyte, '__version__', '0.8.x')}")
        print(f"  {'renderer':<40}{'frames':>7}{'wall ms':>9}{'p99 ms':>8}"
              f"{'CPU ms/frame':>14}{'at 30/s %core':>15}")

        def row(name: str, walls: list[float], cpu: float) -> None:
            n = len(walls) or 1
            per = cpu / n * 1000
            p99 = sorted(walls)[min(len(walls) - 1, int(0.99 * len(walls)))] if walls else 0
            print(f"  {name:<40}{len(walls):>7}{sum(walls) / n * 1000:>9.2f}"
                  f"{p99 * 1000:>8.2f}{per:>14.2f}{per * 30 / 10:>15.1f}")

        row("capture-pane -e -p, subprocess", sub_wall, sub_cpu + srv_sub)
        row("capture-pane -e -p, control client", ctl_wall, ctl_cpu + srv_ctl)
        feed_per = feed_cpu / frames_written * 1000
        print(f"  {'pyte feed (every frame must be fed)':<40}{frames_written:>7}{'':>9}{'':>8}"
              f"{feed_per:>14.2f}{feed_per * 20 / 10:>15.1f}  (at 20 frames/s)")
        print(f"  {'pyte buffer -> styled lines':<40}{50:>7}{'':>9}{'':>8}"
              f"{style_cpu * 1000:>14.2f}{style_cpu * 1000 * 30 / 10:>15.1f}")
        print(f"  pyte throughput on this stream: {len(stream) / feed_cpu / 1e6:.2f} MB/s of "
              f"one core (the 100 x 100 KB/s load is 10 MB/s)")
        per_sub = srv_sub / max(1, len(sub_wall)) * 1000
        per_ctl = srv_ctl / max(1, len(ctl_wall)) * 1000
        print(f"  of which tmux server CPU per capture: subprocess {per_sub:.2f} ms, "
              f"control {per_ctl:.2f} ms")
        print("  fidelity vs capture-pane at each pause (lines equal / cells equal incl. colours):")
        for size, full, late in rows:
            text = f"    at byte {size:>7}: pyte from byte 0: {full[0]}/{full[1]} lines, " \
                   f"{full[2] / full[3]:.1%} cells"
            if late:
                text += f"; pyte from mid-stream: {late[0]}/{late[1]} lines, " \
                        f"{late[2] / late[3]:.1%} cells"
            print(text)
        if rows:
            size, cap = checkpoints[-1]
            a, b = screen_of(stream[:size]), captured_screen(cap)
            pairs = enumerate(zip(a.display, b.display, strict=True))
            diffs = [(y, x.rstrip(), z.rstrip()) for y, (x, z) in pairs
                     if x.rstrip() != z.rstrip()]
            for y, x, z in diffs[:3]:
                print(f"    line {y}: pyte    {x[:90]!r}")
                print(f"    line {y}: capture {z[:90]!r}")
    finally:
        if control is not None:
            control.close()
        subprocess.run(["tmux", "-L", socket, "kill-server"], check=False, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
