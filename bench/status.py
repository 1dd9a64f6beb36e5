"""Cost of `cbos status`, the command tmux runs for ``#{cbos_status}`` every status-interval
when no cbos engine publishes the line, and of `cbos ls --json`, what scripts call.

Budgets: `cbos status` at most max(60 ms, 4x the floor); `cbos ls --json` with 10 sessions
at most 100 ms. Bytecode caching is on (PYTHONDONTWRITEBYTECODE is removed from the
environment of every command: users have .pyc files). Each round runs, in turn (so load on
the machine hits them alike):

- ``python -c pass`` with the same interpreter: the floor, what any Python command costs;
- ``python -c 'import cbos'``: the floor plus cbos's package import;
- ``cbos status`` against private tmux servers (``tmux -L cbos-bench-<pid>-N -f /dev/null``)
  holding 0, 10 and 50 sessions the way cbos sees them: panes marked with ``@cbos_slug``,
  Claude's status file for each (``<config>/sessions/<pid>.json``), and an events file of
  the recorded Claude Code hook events (``tests/fixtures/claude-code-2.1.328``) replayed for
  every session, interleaved, cut at different points so the states differ;
- ``cbos ls --json`` against the server with 10 sessions.

``cbos status`` runs as tmux runs it: the installed ``cbos`` script next to this
interpreter (``python -m cbos`` when there is none), a fresh process each time. The figures
are the median and the 99th percentile (nearest rank) of the wall time from spawn to exit,
and their ratio to the floor. Then ``python -X importtime`` lists what ``cbos status``
imports; urwid, libtmux and psutil must not be among them (exit status 1 if they are).

Run ``python -m bench.status`` (100 rounds, about a minute) or ``--runs 30``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from bench import compile_cbos
from cbos.tmux import Tmux

ROOT = Path(__file__).resolve().parent.parent
RECORDING = ROOT / "tests" / "fixtures" / "claude-code-2.1.328" / "events_all.jsonl"
SIZES = (0, 10, 50)
BUDGET_MS = 60.0  # or 4x the floor, whichever is more
FLOOR_FACTOR = 4.0
LS_BUDGET_MS = 100.0
FORBIDDEN = ("urwid", "libtmux", "psutil")


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def proc_start(pid: int) -> str:
    with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
        return handle.read().rpartition(")")[2].split()[19]


class Board:
    """A private tmux server with ``count`` cbos sessions, their status files and events."""

    def __init__(self, count: int, home: Path) -> None:
        self.count = count
        self.socket = f"cbos-bench-{os.getpid()}-{count}"
        self.home = home
        self.state_dir = home / "state" / "cbos"
        self.claude_dir = home / "claude"
        for directory in (self.state_dir, self.claude_dir / "sessions", home / "config"):
            directory.mkdir(parents=True, exist_ok=True)
        self.env = {
            **{k: v for k, v in os.environ.items()
               if not k.startswith(("CBOS_", "TMUX", "XDG_", "CLAUDE_"))},
            "HOME": str(home), "XDG_STATE_HOME": str(home / "state"),
            "XDG_CONFIG_HOME": str(home / "config"), "CLAUDE_CONFIG_DIR": str(self.claude_dir),
            "CBOS_TMUX_SOCKET": self.socket,
        }
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        # A server with no session exits at once: keep one unmarked pane (not a cbos one).
        self.tmux("new-session", "-d", "-s", "bench-idle", "sleep 1000000")
        recording = [json.loads(line) for line in RECORDING.read_text().splitlines()]
        main = [e for e in recording if e["cbos_session"] == "cbos-fixtures-main"]
        lines: list[tuple[float, str]] = []
        now = time.time()
        for index in range(count):
            slug = f"BENCH{index:02d}"
            out = self.tmux("new-session", "-d", "-s", slug, "-P", "-F",
                            "#{pane_id} #{pane_pid} #{window_id}", "exec sleep 1000000")
            pane, pid_text, window = out.split()
            pid = int(pid_text)
            self.tmux("set-option", "-t", slug, "@cbos_owned", "1", ";",
                      "set-option", "-p", "-t", pane, "@cbos_slug", slug)
            # Piped into its log as cbos pipes it (else `cbos ls` would arm each pipe).
            log = self.state_dir / "logs" / f"{slug}.log"
            log.parent.mkdir(exist_ok=True)
            Tmux(self.socket).pipe(pane, log)
            session_id = f"00000000-0000-4000-8000-{index:012d}"
            # Sessions stop at different points of the recorded session: mixed states.
            cut = main[: max(3, len(main) * (index + 1) // max(count, 1))]
            shift = now - 5 - cut[-1]["ts"] + index * 0.01
            for event in cut:
                record = dict(event, tmux_pane=pane, cbos_session=slug, claude_pid=str(pid))
                record["payload"] = dict(event["payload"], session_id=session_id)
                record["ts"] = event["ts"] + shift
                lines.append((record["ts"], json.dumps(record)))
            status = {"pid": pid, "sessionId": session_id, "cwd": f"/bench/{slug}",
                      "startedAt": int((now - 600) * 1000), "procStart": proc_start(pid),
                      "tmux": f"{slug}:{window}.{pane}", "status": "busy",
                      "updatedAt": int((now - 600) * 1000),
                      "statusUpdatedAt": int((now - 600) * 1000)}
            path = self.claude_dir / "sessions" / f"{pid}.json"
            path.write_text(json.dumps(status), encoding="utf-8")
        lines.sort()
        events = self.state_dir / "events.jsonl"
        events.write_text("".join(line + "\n" for _, line in lines), encoding="utf-8")
        self.events_bytes = events.stat().st_size

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, "-f", "/dev/null", *args],
                              check=True, capture_output=True, text=True, env=self.env).stdout

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True,
                       check=False, env=self.env)


def cbos_command() -> list[str]:
    script = Path(sys.executable).parent / "cbos"
    return [str(script), "status"] if script.exists() else [sys.executable, "-m", "cbos",
                                                              "status"]


def timed(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, env=env, check=False)
    elapsed = (time.perf_counter() - started) * 1000
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}): "
                         f"{proc.stderr.decode(errors='replace').strip()}")
    return elapsed, proc.stdout.decode().strip()


LOADED = """
import atexit, sys
atexit.register(lambda: print("\\n".join(sorted(sys.modules)), file=sys.stderr))
sys.argv = ["cbos", "status"]
from cbos.entry import main
sys.exit(main())
"""


def loaded(env: dict[str, str]) -> list[str]:
    """The modules in ``sys.modules`` when ``cbos status`` exits (what the script runs)."""
    proc = subprocess.run([sys.executable, "-c", LOADED], capture_output=True, check=True,
                          env=env)
    return proc.stderr.decode().split()


def imports(command: list[str], env: dict[str, str]) -> list[tuple[str, int, int]]:
    """(module, self µs, cumulative µs) of every import ``command`` makes, in order."""
    proc = subprocess.run(command, capture_output=True, check=False,
                          env={**env, "PYTHONPROFILEIMPORTTIME": "1"})
    found = []
    for line in proc.stderr.decode(errors="replace").splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, total, name = line.removeprefix("import time:").split("|")
        found.append((name.strip(), int(own), int(total)))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100, help="rounds (default 100)")
    args = parser.parse_args()
    compile_cbos()  # as a wheel install does (see bench/__init__.py)
    if shutil.which("tmux") is None:
        raise SystemExit("tmux is not installed")

    cbos = cbos_command()
    with tempfile.TemporaryDirectory(prefix="cbos-bench-status-") as tmp:
        boards = {n: Board(n, Path(tmp) / f"home{n}") for n in SIZES}
        try:
            base_env = boards[0].env
            commands: dict[str, tuple[list[str], dict[str, str]]] = {
                "python -c pass": ([sys.executable, "-c", "pass"], base_env),
                "python -c 'import cbos'": ([sys.executable, "-c", "import cbos"], base_env),
                **{f"cbos status, {n} sessions": (cbos, boards[n].env) for n in SIZES},
                "cbos ls --json, 10 sessions": ([*cbos[:-1], "ls", "--json"], boards[10].env),
            }
            outputs = {n: timed(cbos, boards[n].env)[1] for n in SIZES}  # also a warm-up
            for command, env in commands.values():
                timed(command, env)
            times: dict[str, list[float]] = {name: [] for name in commands}
            for _ in range(args.runs):
                for name, (command, env) in commands.items():
                    times[name].append(timed(command, env)[0])
            modules = imports(cbos, boards[50].env)
            names = loaded(boards[50].env)
        finally:
            for board in boards.values():
                board.close()

    floor = statistics.median(times["python -c pass"])
    with_cbos = statistics.median(times["python -c 'import cbos'"])
    print(f"cbos status: {' '.join(cbos)}")
    print(f"python {sys.version.split()[0]} ({sys.executable}), {args.runs} rounds, "
          f"events file {boards[50].events_bytes // 1024} KB with 50 sessions")
    print()
    print(f"{'command':<28} {'median ms':>10} {'p99 ms':>8} {'x floor':>8} {'- floor ms':>11}"
          f" {'x import':>9}")
    for name, values in times.items():
        median, p99 = statistics.median(values), percentile(values, 99)
        print(f"{name:<28} {median:>10.1f} {p99:>8.1f} {median / floor:>8.2f} "
              f"{median - floor:>11.1f} {median / with_cbos:>9.2f}")
    print()
    budget = max(BUDGET_MS, FLOOR_FACTOR * floor)
    for n in SIZES:
        median = statistics.median(times[f"cbos status, {n} sessions"])
        verdict = "within" if median <= budget else "OVER"
        print(f"{n:>2} sessions: {outputs[n] or '(empty line)'!s:<28} median {median:.1f} ms: "
              f"{verdict} the {budget:.0f} ms budget (max of {BUDGET_MS:.0f} ms and "
              f"{FLOOR_FACTOR:.0f}x the floor)")
    median = statistics.median(times["cbos ls --json, 10 sessions"])
    print(f"cbos ls --json, 10 sessions: median {median:.1f} ms: "
          f"{'within' if median <= LS_BUDGET_MS else 'OVER'} the {LS_BUDGET_MS:.0f} ms budget")

    top = sorted({name.split(".")[0] for name in names})
    stdlib = [name for name in top if name in sys.stdlib_module_names]
    others = [name for name in top if name not in sys.stdlib_module_names]
    print()
    print(f"`cbos status` imports {len(names)} modules; top-level packages:")
    print(textwrap.fill(f"stdlib ({len(stdlib)}): {', '.join(stdlib)}", 100,
                        subsequent_indent="  "))
    print(textwrap.fill(f"other ({len(others)}): {', '.join(others)}", 100,
                        subsequent_indent="  "))
    print(textwrap.fill("cbos: " + ", ".join(n for n in names if n.startswith("cbos")), 100,
                        subsequent_indent="  "))
    print("heaviest imports (cumulative ms, as -X importtime counts it):")
    for name, _, total in sorted(modules, key=lambda m: -m[2])[:12]:
        print(f"  {total / 1000:7.1f}  {name}")
    present = [name for name in FORBIDDEN if name in top]
    for name in FORBIDDEN:
        print(f"{name}: {'IMPORTED' if name in present else 'absent'}")
    return 1 if present else 0


if __name__ == "__main__":
    sys.exit(main())
