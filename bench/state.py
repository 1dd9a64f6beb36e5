"""Time from a hook event written to the state changed on cbos's board.

The path measured is the real one: one line appended to the events file (as the hook's
single write does) -> inotify wake-up -> Events.read -> fold -> a new snapshot reaching a
listener of the Engine. Sessions are synthetic panes so that only this path is timed;
a floor (a bare inotify reader of the same file, no parsing) is measured in the same run.

    python -m bench.state [--events 400] [--sessions 1 50] [--screen-sessions 50]

Then the dialogs no hook announces (bench/screens.py): dialog drawn on a real tmux screen
-> ``permission`` on the board, and the cost of reading screens.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import statistics
import tempfile
import threading
import time
from pathlib import Path

from inotify_simple import INotify
from inotify_simple import flags as inflags

from cbos import config as config_mod
from cbos.core import Gathered
from cbos.engine import Engine
from cbos.model import Snapshot
from cbos.panes import Pane, PaneSession
from cbos.procs import Proc, ProcTable


def pane(n: int) -> Pane:
    return Pane(pane_id=f"%{n}", session_id=f"${n}", session_name=f"S{n}", window_id=f"@{n}",
                window_index="0", pane_index="0", pid=100_000 + n, dead=False,
                dead_status=None, dead_signal=None, current_command="claude",
                current_path="/tmp", in_mode=False, piped=True, width=200, height=50,
                attached=False, slug=f"S{n}", owned=True)


def line(n: int, name: str, ts: float) -> bytes:
    payload = {"session_id": f"sess-{n}", "transcript_path": "/tmp/t.jsonl", "cwd": "/tmp",
               "hook_event_name": name, "prompt_id": "p", "permission_mode": "default"}
    if name == "UserPromptSubmit":
        payload["prompt"] = "go"
    else:
        payload.update(stop_hook_active=False, last_assistant_message="ok",
                       background_tasks=[], session_crons=[])
    record = {"ts": ts, "cbos_session": f"S{n}", "tmux_pane": f"%{n}",
              "claude_pid": str(100_000 + n), "payload": payload}
    return (json.dumps(record) + "\n").encode()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_cbos(sessions: int, events: int) -> list[float]:
    home = Path(tempfile.mkdtemp(prefix="cbos-bench-state-"))
    env = {"HOME": str(home), "CBOS_TMUX_SOCKET": f"cbos-bench-none-{os.getpid()}"}
    config = config_mod.load(env)
    config_mod.ensure_dirs(config)
    config_mod.touch_private(config.events_file)
    engine = Engine(config)
    table = ProcTable()
    found = []
    for n in range(sessions):
        claude = Proc(100_000 + n, 1, "claude", ("claude",), time.time() - 60, "sleeping")
        table.procs[claude.pid] = claude
        found.append(PaneSession(f"S{n}", pane(n), claude, adopted=False))
    engine.core.apply(Gathered(found, table, {}, True))
    engine.publish()

    seen = threading.Event()
    expect: dict[str, str] = {}

    def listener(current: Snapshot, previous: Snapshot | None) -> None:
        for slug, state in expect.items():
            view = current.get(slug)
            if view is not None and view.state.value == state:
                seen.set()

    engine.snapshot_listeners.append(listener)
    fd = os.open(config.events_file, os.O_WRONLY | os.O_APPEND)
    latencies: list[float] = []
    fds = engine.fds()
    for i in range(events):
        n = i % sessions
        name, state = (("UserPromptSubmit", "thinking") if (i // sessions) % 2 == 0
                       else ("Stop", "waiting"))
        expect.clear()
        expect[f"S{n}"] = state
        seen.clear()
        start = time.perf_counter()
        os.write(fd, line(n, name, time.time()))
        while not seen.is_set():
            ready, _, _ = select.select(fds, [], [], 1.0)
            if not ready:
                raise SystemExit("no wake-up within 1 s: the events path is broken")
            for ready_fd in ready:
                engine.on_readable(ready_fd)
        latencies.append((time.perf_counter() - start) * 1000)
    os.close(fd)
    engine.close()
    return latencies


def run_floor(events: int) -> list[float]:
    """A bare inotify reader of one file: wake-up plus read, nothing else."""
    path = Path(tempfile.mkdtemp(prefix="cbos-bench-floor-")) / "events.jsonl"
    path.touch()
    notify = INotify(nonblocking=True)
    notify.add_watch(str(path), inflags.MODIFY)
    reader = path.open("rb")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    latencies = []
    for i in range(events):
        start = time.perf_counter()
        os.write(fd, line(i, "Stop", time.time()))
        select.select([notify.fileno()], [], [], 1.0)
        notify.read()
        reader.read()
        latencies.append((time.perf_counter() - start) * 1000)
    os.close(fd)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=400)
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 50])
    parser.add_argument("--screen-sessions", type=int, default=50,
                        help="sessions for the screen-reading part (bench/screens.py); 0: skip")
    args = parser.parse_args()
    floor = run_floor(args.events)
    print(f"hook event -> board state, {args.events} events per row, "
          f"{os.cpu_count()} CPUs")
    print(f"  {'path':30} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  x floor p50/p99")
    f50, f99 = statistics.median(floor), percentile(floor, 0.99)
    print(f"  {'floor: bare inotify read':30} {f50:8.3f} {f99:8.3f} {max(floor):8.3f}")
    for sessions in args.sessions:
        lat = run_cbos(sessions, args.events)
        p50, p99 = statistics.median(lat), percentile(lat, 0.99)
        print(f"  {f'cbos, {sessions} sessions':30} {p50:8.3f} {p99:8.3f} {max(lat):8.3f}"
              f"  {p50 / f50:.1f}x / {p99 / f99:.1f}x")
    print("target: cbos p99 <= 20 ms")
    if args.screen_sessions:
        from bench import screens

        screens.run(args.screen_sessions, dialogs=40, seconds=10.0)


if __name__ == "__main__":
    main()
