"""Cost of one hook call, spawned as Claude spawns it: cbos's hook against a bare baseline.

Each command runs as ``/bin/sh -c COMMAND`` with a JSON payload written to a Unix socket on
its stdin (Claude's hook stdin is a socket, not a pipe) and the hook environment
(``CBOS_SESSION``, ``TMUX_PANE``, ``CLAUDE_PID``). The time is from spawn to exit, as Claude
waits for it. The commands take turns, so load on the machine hits them alike:

- baseline: ``cat >/dev/null``, the least a hook that reads its input can do;
- cbos: :func:`cbos.hooks.hook_command`, appending to a scratch events file;
- python3: ``python3 -c 'import sys,json; json.load(sys.stdin)'``, the usual hook.

``--alternatives`` adds designs that were measured and not chosen: cbos's script with
``date`` on every call instead of the cached clock, the script executed by a second ``sh``
instead of sourced, and a single-process reader (the shell's ``read``, one read(2) per
byte) feeding ``dd`` from a here-document. Run ``python -m bench.hooks`` (200 runs of a
2 KB payload) or e.g. ``--sizes 2048,102400,1048576 --runs 50``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cbos import hooks
from cbos.config import Config
from cbos.events import read_recent

ENV = {"CBOS_SESSION": "bench", "TMUX_PANE": "%7", "CLAUDE_PID": "4242"}

SHELL_READ_HOOK = r"""
cbos_p=
while IFS= read -r cbos_l; do cbos_p=$cbos_p$cbos_l; done
cbos_p=$cbos_p$cbos_l
LC_ALL=C dd iflag=fullblock bs=64M oflag=append conv=notrunc status=none \
    of="$CBOS_EVENTS_FILE" <<CBOS_EOF
{"ts": 0, "cbos_session": "", "tmux_pane": "", "claude_pid": "", "payload": $cbos_p}
CBOS_EOF
"""


def payload_of(size: int) -> bytes:
    """A PreToolUse payload like Claude's (compact JSON, one line) of about ``size`` bytes."""
    base = {
        "session_id": "20a073c7-b159-43a6-b4f0-cb9fd0a3dcd7",
        "transcript_path": "/home/dev/.claude/projects/-home-dev-proj/"
                           "20a073c7-b159-43a6-b4f0-cb9fd0a3dcd7.jsonl",
        "cwd": "/home/dev/proj", "prompt_id": "28dc8bf0-5c16-4527-a990-cd5915ce3e48",
        "permission_mode": "default", "effort": {"level": "medium"},
        "hook_event_name": "PreToolUse", "tool_name": "Bash",
        "tool_input": {"command": "", "description": "Run the tests"},
        "tool_use_id": "toolu_mock7bde2a23dde14405a95102d2",
    }
    empty = len(json.dumps(base, separators=(",", ":")))
    base["tool_input"]["command"] = "x" * max(0, size - empty)  # type: ignore[index]
    return json.dumps(base, separators=(",", ":")).encode()


def spawn(command: str, payload: bytes, env: dict[str, str]) -> float:
    """Seconds from spawning ``/bin/sh -c command`` to its exit, payload on a socket."""
    ours, theirs = socket.socketpair()
    with ours:
        started = time.perf_counter()
        with theirs:
            proc = subprocess.Popen(["/bin/sh", "-c", command], stdin=theirs,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    env=env, close_fds=True)
        try:
            ours.sendall(payload)
            ours.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        proc.wait()
        return time.perf_counter() - started


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hooks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200, help="runs per command (200)")
    parser.add_argument("--sizes", default="2048",
                        help="payload sizes in bytes, comma-separated (2048)")
    parser.add_argument("--alternatives", action="store_true",
                        help="also measure the designs that were not chosen")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]

    with tempfile.TemporaryDirectory(prefix="cbos-bench-hooks-") as tmp:
        root = Path(tmp)
        config = Config(state_dir=root / "state", config_dir=root / "config",
                        stream_dir=root / "logs", events_dir=root / "events")
        script = hooks.ensure_script(config)
        events = config.events_file
        quoted_events, quoted_script = shlex.quote(str(events)), shlex.quote(str(script))
        commands = {
            "baseline  sh -c 'cat >/dev/null'": "cat >/dev/null",
            "cbos hook": hooks.hook_command(config),
            "python3 -c 'json.load(stdin)'":
                "python3 -c 'import sys,json; json.load(sys.stdin)'",
        }
        if args.alternatives:
            shell_read = root / "shell-read.sh"
            shell_read.write_text(SHELL_READ_HOOK)
            commands.update({
                "alt: cbos, date on every call": hooks.hook_command(config),
                "alt: cbos run by a second sh": f"CBOS_EVENTS_FILE={quoted_events} /bin/sh "
                                                f"{quoted_script} >/dev/null 2>&1; exit 0",
                "alt: shell read + dd (no tr)": f"CBOS_EVENTS_FILE={quoted_events} command . "
                                                f"{shlex.quote(str(shell_read))} "
                                                ">/dev/null 2>&1; exit 0",
            })
        clock = events.with_name(events.name + ".clock")
        env = {**os.environ, **ENV}
        print(f"/bin/sh -> {os.path.realpath('/bin/sh')}; python3 -> "
              f"{shutil.which('python3', path=env.get('PATH'))}; {os.cpu_count()} CPUs; "
              f"{args.runs} runs each, interleaved")
        for size in sizes:
            payload = payload_of(size)
            events.write_bytes(b"")
            spawn(hooks.hook_command(config), payload, env)
            recorded = read_recent(config, 2 * len(payload) + 4096)
            if [dict(e.payload) for e in recorded] != [json.loads(payload)]:
                print("cbos hook did not record the event", file=sys.stderr)
                return 1
            times: dict[str, list[float]] = {name: [] for name in commands}
            for _ in range(args.runs):
                for name, command in commands.items():
                    if "date on every call" in name:
                        clock.unlink(missing_ok=True)
                    times[name].append(spawn(command, payload, env))
                    if events.stat().st_size > 64 << 20:
                        events.write_bytes(b"")
            base = statistics.median(times[next(iter(commands))])
            print(f"\npayload {len(payload)} bytes")
            print(f"  {'command':36} {'median ms':>10} {'p99 ms':>9} {'x baseline':>11}")
            for name, values in times.items():
                median = statistics.median(values)
                print(f"  {name:36} {median * 1000:10.2f} {p99(values) * 1000:9.2f} "
                      f"{median / base:11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
