"""Pane-to-reader latency of cbos's log tail, against the floor and the usual polling approach.

Starts N sessions on a private tmux server (``tmux -L cbos-bench-<pid> -f /dev/null``), each
pane running a writer that prints lines stamped with ``time.time()``, each pane piped with
``Tmux.pipe`` into a log directory. Three consumers run at once, each in its own process so
its CPU and memory are its own:

- cbos: ``logs.Tail`` in a poll loop on ``tail.fileno()`` (plus a 1 s ``rescan`` timer);
- floor: pipe-pane plus a bare inotify_simple reader with no bookkeeping;
- capture: ``tmux capture-pane -p`` of every pane every 500 ms (what peers usually do).

Latency is the time from the stamp to the moment the consumer has the line. Run as
``python -m bench.latency`` (full, under 3 minutes) or ``--quick`` (about 20 seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import select
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARK = re.compile(rb"@@T(\d+\.\d+)@@")
RATES = {"idle": 0.0, "line": -1.0, "100k": 100_000.0}  # -1: one line per second
WARMUP = 2.0  # 100 writers starting at once, and tmux catching up, are not steady state

WRITER = r"""
import os, random, sys, time
rate, go = float(sys.argv[1]), sys.argv[2]
while not os.path.exists(go):
    time.sleep(0.02)
if rate == 0:
    while True:
        time.sleep(3600)
tick = 1.0 if rate < 0 else 0.05  # 20 writes a second: the writers must not eat the machine
size = 0 if rate < 0 else int(rate * tick)
filler = b"".join(b"%03d " % i + b"x" * 75 + b"\n" for i in range(max(0, size - 40) // 80))
time.sleep(random.random() * tick)  # sessions do not all write in the same instant
nxt = time.time()
seq = 0
while True:
    # The stamp goes last, so it is on screen for capture-pane too.
    os.write(1, filler + b"@@T%.6f@@ %d\n" % (time.time(), seq))
    seq += 1
    nxt += tick
    delay = nxt - time.time()
    if delay > 0:
        time.sleep(delay)
    else:
        nxt = time.time()
"""


# -- consumers (each run in its own process: --role) -----------------------------------------


class Meter:
    """Finds stamped lines in a session's stream and records their latency."""

    def __init__(self) -> None:
        self.rest: dict[str, bytes] = {}
        self.lat: list[float] = []
        self.start = float("inf")
        self.stop = float("inf")

    def feed(self, slug: str, data: bytes, now: float) -> None:
        buf = self.rest.get(slug, b"") + data
        cut = buf.rfind(b"\n") + 1
        self.rest[slug] = buf[cut:]
        if not self.start <= now < self.stop:
            return
        for m in MARK.finditer(buf, 0, cut):
            self.lat.append(now - float(m.group(1)))


def _usage() -> tuple[float, int]:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    with open("/proc/self/statm") as f:
        rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return ru.ru_utime + ru.ru_stime, rss


def _handshake(meter: Meter, duration: float) -> None:
    print("ready", flush=True)
    go = float(sys.stdin.readline())
    meter.start, meter.stop = go + WARMUP, go + WARMUP + duration


def run_cbos(args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import subprocess as sp

    from cbos.logs import Tail
    from cbos.tmux import Tmux

    spawned = [0]
    original = sp.Popen.__init__

    def counting(self: Any, *a: Any, **k: Any) -> None:
        spawned[0] += 1
        original(self, *a, **k)

    sp.Popen.__init__ = counting  # type: ignore[method-assign]
    panes = json.loads(args.panes)
    tmux = Tmux(args.socket)
    log_dir = Path(args.dir)

    def rearm(slug: str) -> None:  # what cbos does; counted, and expected never to run
        tmux.pipe(panes[slug], log_dir / f"{slug}.log")

    meter = Meter()
    tail = Tail(log_dir, prefill=False, rearm=rearm)
    _handshake(meter, args.duration)
    spawned[0] = 0
    poller = select.poll()
    poller.register(tail.fileno(), select.POLLIN)
    backlog: list[int] = []
    next_tick = meter.start
    cpu0 = 0.0
    begun = False
    while True:
        now = time.time()
        if now >= meter.stop:
            break
        if not begun and now >= meter.start:
            cpu0, _ = _usage()
            begun = True
        timeout = 0 if tail.pending else max(0.0, min(next_tick, meter.stop) - now) * 1000
        chunks = tail.read() if poller.poll(timeout) or tail.pending else []
        for chunk in chunks:
            meter.feed(chunk.slug, chunk.raw, chunk.ts)
        if time.time() >= next_tick:
            for chunk in tail.rescan():  # the slow timer cbos runs anyway
                meter.feed(chunk.slug, chunk.raw, chunk.ts)
            if begun:  # bytes on disk not yet consumed: must not grow
                backlog.append(sum(max(0, (log_dir / f"{s}.log").stat().st_size
                                       - tail.offset(s)) for s in panes))
            next_tick += 1.0
    cpu1, rss = _usage()
    return {"lat": meter.lat, "cpu": (cpu1 - cpu0) / args.duration, "rss": rss,
            "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "spawned": spawned[0] / args.duration, "backlog": backlog}


def run_floor(args: argparse.Namespace) -> dict[str, Any]:
    from inotify_simple import INotify
    from inotify_simple import flags as f

    log_dir = Path(args.dir)
    ino = INotify(nonblocking=True)
    ino.add_watch(log_dir, f.MODIFY)
    fds = {}
    for name in os.listdir(log_dir):
        if name.endswith(".log"):
            fd = os.open(log_dir / name, os.O_RDONLY)
            os.lseek(fd, 0, os.SEEK_END)
            fds[name] = fd
    meter = Meter()
    _handshake(meter, args.duration)
    poller = select.poll()
    poller.register(ino.fileno(), select.POLLIN)
    cpu0 = 0.0
    begun = False
    while True:
        now = time.time()
        if now >= meter.stop:
            break
        if not begun and now >= meter.start:
            cpu0, _ = _usage()
            begun = True
        if not poller.poll(min(1.0, max(0.0, meter.stop - now)) * 1000):
            continue
        names = {e.name for e in ino.read(timeout=0)}
        for name in names:
            fd = fds.get(name)
            while fd is not None:
                data = os.read(fd, 1 << 20)
                if not data:
                    break
                meter.feed(name, data, time.time())
    cpu1, rss = _usage()
    return {"lat": meter.lat, "cpu": (cpu1 - cpu0) / args.duration, "rss": rss,
            "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "spawned": 0.0, "backlog": []}


def run_capture(args: argparse.Namespace) -> dict[str, Any]:
    panes = json.loads(args.panes)
    tmux = shutil.which("tmux") or "tmux"
    meter = Meter()
    seen: set[bytes] = set()
    _handshake(meter, args.duration)
    spawned = 0
    cpu0 = 0.0
    begun = False
    nxt = time.time()
    while True:
        now = time.time()
        if now >= meter.stop:
            break
        if not begun and now >= meter.start:
            cpu0, _ = _usage()
            spawned = 0
            begun = True
        time.sleep(max(0.0, nxt - now))
        nxt += 0.5
        for pane in panes.values():
            out = subprocess.run([tmux, "-L", args.socket, "capture-pane", "-p", "-t", pane],
                                 capture_output=True, check=False).stdout
            spawned += 1
            now = time.time()
            for m in MARK.finditer(out):
                if m.group(1) not in seen:
                    seen.add(m.group(1))
                    if meter.start <= now < meter.stop:
                        meter.lat.append(now - float(m.group(1)))
    cpu1, rss = _usage()
    # Its tmux calls are separate processes: count their CPU too.
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"lat": meter.lat, "cpu": (cpu1 - cpu0) / args.duration, "rss": rss,
            "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "spawned": spawned / args.duration, "backlog": [],
            "child_cpu": (ru.ru_utime + ru.ru_stime) / args.duration}


# -- the driver --------------------------------------------------------------------------------


@dataclass
class Scenario:
    sessions: int
    rate: str
    duration: float

    @property
    def label(self) -> str:
        what = {"idle": "idle", "line": "1 line/s", "100k": "100 KB/s"}.get(
            self.rate, f"{self.rate} B/s")
        return f"{self.sessions} session{'s' if self.sessions > 1 else ''} x {what}"


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_scenario(sc: Scenario, root: Path, n: int) -> dict[str, dict[str, Any]]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from cbos.tmux import Tmux

    socket = f"cbos-bench-{os.getpid()}-{n}"  # a fresh server: the last may still be exiting
    work = Path(tempfile.mkdtemp(prefix="run-", dir=root))
    log_dir, go = work / "logs", work / "go"
    log_dir.mkdir()
    subprocess.run(["tmux", "-L", socket, "-f", "/dev/null", "new-session", "-d", "-s",
                    "keepalive", "sleep 86400"], check=True)
    procs: dict[str, subprocess.Popen[str]] = {}
    try:
        tmux = Tmux(socket)
        rate = RATES.get(sc.rate)
        rate = float(sc.rate) if rate is None else rate
        command = shlex.join([sys.executable, "-c", WRITER, str(rate), str(go)])
        panes = {}
        for i in range(sc.sessions):
            slug = f"S{i:03d}"
            log = log_dir / f"{slug}.log"
            log.touch()
            pane = tmux.new_session(slug, work, "exec " + command, {}, log, 500, (80, 24))
            panes[slug] = pane.pane_id
        common = ["--dir", str(log_dir), "--socket", socket, "--duration", str(sc.duration),
                  "--panes", json.dumps(panes)]
        for role in ("cbos", "floor", "capture"):
            procs[role] = subprocess.Popen(
                [sys.executable, "-m", "bench.latency", "--role", role, *common],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                cwd=Path(__file__).resolve().parent.parent)
        for proc in procs.values():
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        server = int(tmux.cmd("display-message", "-p", "#{pid}")[0])
        go.touch()
        start = time.time()
        for proc in procs.values():
            assert proc.stdin is not None
            proc.stdin.write(f"{start}\n")
            proc.stdin.flush()
        time.sleep(WARMUP)
        cpu0 = _proc_cpu(server)
        time.sleep(sc.duration)
        server_cpu = (_proc_cpu(server) - cpu0) / sc.duration
        results = {}
        for role, proc in procs.items():
            out, _ = proc.communicate(timeout=sc.duration + 60)
            results[role] = json.loads(out)
        results["tmux"] = {"cpu": server_cpu}
        return results
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
        subprocess.run(["tmux", "-L", socket, "kill-server"], check=False,
                       capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


def _proc_cpu(pid: int) -> float:
    """CPU seconds of a process so far, from /proc (utime + stime)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def report(sc: Scenario, res: dict[str, dict[str, Any]]) -> list[str]:
    lines = [f"== {sc.label}, {sc.duration:.0f} s measured; tmux server CPU "
             f"{res['tmux']['cpu'] * 100:.1f}% of a core (all consumers together) =="]
    lines.append(f"  {'consumer':<24}{'lines':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
                 f"{'CPU %core':>11}{'RSS MB':>8}{'procs/s':>9}")
    names = {"cbos": "cbos Tail", "floor": "floor (bare inotify)",
             "capture": "capture-pane / 500 ms"}
    for role in ("cbos", "floor", "capture"):
        r = res[role]
        lat = [x * 1000 for x in r["lat"]]
        cpu = r["cpu"] * 100
        extra = f"  (+{r['child_cpu'] * 100:.1f}% in its tmux calls)" if "child_cpu" in r else ""
        lines.append(f"  {names[role]:<24}{len(lat):>8}{_pct(lat, .5):>9.2f}{_pct(lat, .99):>9.2f}"
                     f"{max(lat, default=float('nan')):>9.2f}{cpu:>11.2f}"
                     f"{r['rss'] / 2**20:>8.1f}{r['spawned']:>9.1f}{extra}")
    c, f = res["cbos"], res["floor"]
    cl, fl = [x * 1000 for x in c["lat"]], [x * 1000 for x in f["lat"]]
    if cl and fl:
        lines.append(f"  ratio cbos/floor: p50 {_pct(cl, .5) / _pct(fl, .5):.2f}x, "
                     f"p99 {_pct(cl, .99) / _pct(fl, .99):.2f}x, CPU "
                     + (f"{c['cpu'] / f['cpu']:.2f}x" if f["cpu"] > 0 else "n/a"))
    if c["backlog"]:
        b = c["backlog"]
        half = len(b) // 2 or 1
        lines.append(f"  cbos backlog (unread bytes on disk, 1/s): first half mean "
                     f"{statistics.mean(b[:half]):.0f}, second half mean "
                     f"{statistics.mean(b[half:] or b):.0f}, max {max(b)}")
    if cl:
        half = len(cl) // 2
        lines.append(f"  cbos p99 first half {_pct(cl[:half], .99):.2f} ms, "
                     f"second half {_pct(cl[half:], .99):.2f} ms; peak RSS "
                     f"{c['maxrss'] / 2**20:.1f} MB; tmux subprocesses started by the tail "
                     f"{c['spawned']:.2f}/s")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sessions", help="comma-separated session counts (default 1,10,100)")
    p.add_argument("--rate", help="idle, line (1 line/s), 100k, or bytes/s; comma-separated")
    p.add_argument("--duration", type=float, help="seconds measured per scenario")
    p.add_argument("--quick", action="store_true", help="a 20-second version")
    p.add_argument("--role", choices=["cbos", "floor", "capture"], help=argparse.SUPPRESS)
    p.add_argument("--dir", help=argparse.SUPPRESS)
    p.add_argument("--socket", help=argparse.SUPPRESS)
    p.add_argument("--panes", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.role:
        run = {"cbos": run_cbos, "floor": run_floor, "capture": run_capture}[args.role]
        print(json.dumps(run(args)), flush=True)
        return 0
    if shutil.which("tmux") is None:
        print("tmux is not installed", file=sys.stderr)
        return 1
    if args.sessions or args.rate:
        counts = [int(x) for x in (args.sessions or "1,10,100").split(",")]
        rates = (args.rate or "line,100k").split(",")
        plan = [Scenario(n, r, args.duration or 10.0) for n in counts for r in rates]
    elif args.quick:
        plan = [Scenario(1, "100k", 3), Scenario(100, "idle", 2), Scenario(100, "100k", 3)]
    else:
        d = args.duration or 12.0
        plan = [Scenario(1, "line", d), Scenario(1, "100k", d), Scenario(10, "100k", d),
                Scenario(100, "idle", d), Scenario(100, "line", d), Scenario(100, "100k", d)]
    print(f"cbos latency bench: {os.cpu_count()} CPUs, tmux "
          f"{subprocess.run(['tmux', '-V'], capture_output=True, text=True).stdout.strip()}, "
          f"python {sys.version.split()[0]}; warm-up {WARMUP:.0f} s per scenario", flush=True)
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="cbos-bench-") as root:
        for n, sc in enumerate(plan):
            for line in report(sc, run_scenario(sc, Path(root), n)):
                print(line, flush=True)
    print(f"total {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
