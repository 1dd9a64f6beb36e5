"""Many hosts: remote output to the local consumer, next to a local session's, in one run.

Setup: H sshd servers on loopback ports (tests/sshd.py: real OpenSSH, throwaway keys),
each the "other machine" of a [[hosts]] entry whose ``command`` runs this cbos with its
own tmux socket, HOME and state. Each host's tmux runs S panes whose process is named
``claude`` (a shell script that prints nothing and waits: an idle session costs nothing),
adopted by the remote cbos on sight. This process runs one Engine with every host (as
the control room does) on the headless loop in a thread, plus one local session.

Measured:
- latency: a writer appends stamped lines to session logs (remote sessions' logs on the
  "other machines", and the local one's) round-robin; an output listener on the loop
  thread notes when each stamp arrives. p50/p99 per kind. Beside it, the ssh floor: the
  round trip of a line through ``ssh HOST cat`` over the same ControlMaster, halved.
- keys: a ControlRoom (the TUI's widget tree) fed the engine's snapshot (all sessions of
  all hosts), timed per key press plus the render that follows it.
- idle CPU: this process plus its ssh processes (children and ControlMaster daemons), over
  a quiet window, as a share of one core.
- connections: "Accepted publickey" lines in each sshd log (one per host means every
  request and the stream share one ssh connection).

Run as ``python -m bench.hosts`` (10 hosts x 20 sessions; a few minutes) or ``--quick``
(3 x 5). Unsets PYTHONDONTWRITEBYTECODE for the remote cbos processes it starts.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MARK = re.compile(rb"@@(\d+)@@")
CLAUDE = "#!/bin/sh\n# an idle stand-in: named claude, prints nothing, waits\n" \
         "while read -r line; do :; done\n"


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def ms(value: float) -> str:
    return f"{value * 1000:.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--lines", type=int, default=400, help="stamped lines in all")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.hosts, args.sessions, args.lines = 3, 5, 150
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

    work = Path(tempfile.mkdtemp(prefix="cbos-bench-hosts-"))
    home = work / "home"
    home.mkdir()
    os.environ["HOME"] = str(home)
    for name in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "TMUX", "TMUX_PANE"):
        os.environ.pop(name, None)
    bin_dir = work / "bin"
    bin_dir.mkdir()
    claude = bin_dir / "claude"
    claude.write_text(CLAUDE)
    claude.chmod(0o755)
    os.environ["CBOS_CLAUDE_COMMAND"] = str(claude)
    local_socket = f"cbos-bench-hosts-{os.getpid()}"
    os.environ["CBOS_TMUX_SOCKET"] = local_socket

    from tests.sshd import SshWorld

    world = SshWorld(work / "ssh")
    os.environ["CBOS_SSH_COMMAND"] = world.ssh_command
    names = [f"box{n}" for n in range(1, args.hosts + 1)]
    started = time.monotonic()
    for name in names:
        world.add(name)
        socket_name = world.remote_env(name)["CBOS_TMUX_SOCKET"]
        project = world.remote_home(name) / "proj"
        project.mkdir(exist_ok=True)
        commands: list[str] = []
        for index in range(args.sessions):
            verb = ["new-session", "-d", "-s", f"S{index:02d}", "-x", "120", "-y", "40",
                    "-c", str(project), str(claude)]
            commands += [*verb, ";"]
        subprocess.run(["tmux", "-L", socket_name, "-f", "/dev/null", *commands[:-1]],
                       check=True, env={**os.environ, "HOME": str(world.remote_home(name))})
    config_dir = home / ".config" / "cbos"
    config_dir.mkdir(parents=True)
    (config_dir / "config.toml").write_text(world.toml(names))
    subprocess.run(["tmux", "-L", local_socket, "-f", "/dev/null", "new-session", "-d", "-s",
                    "LOCAL", "-x", "120", "-y", "40", str(claude)], check=True)
    print(f"setup: {args.hosts} sshd hosts x {args.sessions} sessions, one local session, "
          f"{time.monotonic() - started:.1f} s", flush=True)

    from cbos import config as config_mod
    from cbos import hosts as hosts_mod
    from cbos.engine import Engine
    from cbos.hub import serve_loop
    from cbos.logs import Chunk
    from cbos.tmux import Tmux

    config = config_mod.load()
    engine = Engine(config, Tmux(local_socket), notify=False, status_line=False)
    arrived: dict[int, float] = {}
    lock = threading.Lock()

    def listener(chunks: list[Chunk]) -> None:
        now = time.perf_counter()
        with lock:
            for chunk in chunks:
                for match in MARK.finditer(chunk.raw):
                    arrived.setdefault(int(match.group(1)), now)

    engine.output_listeners.append(listener)
    engine.start()
    stop_r, stop_w = os.pipe()
    loop = threading.Thread(target=serve_loop, args=(engine, [], lambda fd: None, stop_r),
                            daemon=True)
    loop.start()
    total = args.hosts * args.sessions + 1
    deadline = time.monotonic() + 300
    while True:
        snapshot = engine.snapshot()
        up = sum(1 for h in snapshot.hosts if h.up)
        # Subscribed: a link names a host's streams once its subscribe was answered.
        remote = {v.slug for v in snapshot.sessions if v.host}
        if len(snapshot.sessions) >= total and up == args.hosts \
                and remote <= set(engine.stream_names()):
            break
        if int(time.monotonic() * 5) % 50 == 0:  # every 10 s
            print(f"  waiting: {len(snapshot.sessions)}/{total} sessions; "
                  + "; ".join(h.line() for h in snapshot.hosts), flush=True)
        if time.monotonic() > deadline:
            print(f"only {len(snapshot.sessions)}/{total} sessions and {up}/{args.hosts} "
                  "hosts after 300 s", file=sys.stderr)
            return 1
        time.sleep(0.2)
    print(f"board: {len(engine.snapshot().sessions)} sessions from {args.hosts} hosts "
          f"after {time.monotonic() - started:.1f} s", flush=True)

    # -- latency ---------------------------------------------------------------------------
    views = [v for v in engine.snapshot().sessions]
    remote_logs = [world.remote_home(v.host) / "state" / "cbos" / "logs" / f"{v.bare}.log"
                   for v in views if v.host]
    local_view = next(v for v in views if not v.host)
    local_log = config.log_path(local_view.slug)
    sent: dict[int, tuple[str, float]] = {}
    for number in range(args.lines):
        remote = number % 2 == 0
        path = remote_logs[(number // 2) % len(remote_logs)] if remote else local_log
        stamp = time.perf_counter()
        with open(path, "ab") as handle:
            handle.write(f"line @@{number}@@ {'x' * 60}\n".encode())
        sent[number] = ("remote" if remote else "local", stamp)
        time.sleep(0.02)  # pacing: one line every 20 ms
    late = time.monotonic() + 10  # what has not arrived by then counts as lost

    def all_arrived() -> bool:
        with lock:
            return len(arrived) >= len(sent)

    while not all_arrived() and time.monotonic() < late:
        time.sleep(0.05)
    latency: dict[str, list[float]] = {"remote": [], "local": []}
    with lock:
        for number, (kind, stamp) in sent.items():
            if number in arrived:
                latency[kind].append(arrived[number] - stamp)
    lost = len(sent) - sum(len(v) for v in latency.values())

    # -- the ssh floor ---------------------------------------------------------------------
    floor: list[float] = []
    host = config.hosts[0]
    argv = hosts_mod.ssh_argv(config, host, [])
    cat = subprocess.Popen([*argv[:-1], "cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert cat.stdin is not None and cat.stdout is not None
    for _ in range(100):
        stamp = time.perf_counter()
        cat.stdin.write(b"ping\n")
        cat.stdin.flush()
        echoed = cat.stdout.readline()
        if echoed != b"ping\n":
            raise SystemExit(f"ssh cat did not echo the line: {echoed!r}")
        floor.append((time.perf_counter() - stamp) / 2)
    cat.stdin.close()
    cat.wait()

    # -- keys in the control room ------------------------------------------------------------
    from cbos import ui

    room = ui.ControlRoom()
    size = (200, 60)
    keys: list[float] = []
    for index in range(300):
        room.update(engine.snapshot(), time.time())
        stamp = time.perf_counter()
        room.keypress(size, "down" if (index // 50) % 2 == 0 else "up")
        room.render(size, focus=True)
        keys.append(time.perf_counter() - stamp)

    # -- idle CPU ----------------------------------------------------------------------------
    import psutil

    control = str(hosts_mod.control_dir(config))

    def ours() -> list[Any]:
        me = psutil.Process()
        found = [me, *(p for p in me.children(recursive=True) if p.name() == "ssh")]
        for proc in psutil.process_iter(["cmdline", "name"]):
            with contextlib.suppress(psutil.Error):
                if proc.info["name"] == "ssh" and control in " ".join(proc.info["cmdline"]
                                                                      or ()):
                    found.append(proc)
        return list({p.pid: p for p in found}.values())

    def cpu(procs: list[Any]) -> float:
        total_s = 0.0
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total_s += times.user + times.system
        return total_s

    time.sleep(2)
    procs = ours()
    before, wall = cpu(procs), time.perf_counter()
    time.sleep(20 if not args.quick else 8)
    idle_share = (cpu(procs) - before) / (time.perf_counter() - wall)

    # -- connections -------------------------------------------------------------------------
    connections = [world.servers[n].log.read_text().count("Accepted publickey")
                   for n in names]

    remote_p50, remote_p99 = pct(latency["remote"], 50), pct(latency["remote"], 99)
    local_p50, local_p99 = pct(latency["local"], 50), pct(latency["local"], 99)
    floor_p50 = pct(floor, 50)
    print(f"remote output -> local consumer: p50 {ms(remote_p50)}, p99 {ms(remote_p99)} "
          f"({len(latency['remote'])} lines)")
    print(f"local output  -> local consumer: p50 {ms(local_p50)}, p99 {ms(local_p99)} "
          f"({len(latency['local'])} lines)")
    print(f"ssh floor (one way, half a round trip through ssh cat): p50 "
          f"{floor_p50 * 1e6:.0f} µs, p99 {pct(floor, 99) * 1e6:.0f} µs")
    target = 2 * local_p99 + floor_p50
    print(f"target p99 <= 2 x local p99 + ssh floor = {ms(target)}: "
          f"{'met' if remote_p99 <= target else 'NOT met'} "
          f"(remote p99 / local p99 = {remote_p99 / local_p99:.2f})")
    print(f"lines lost: {lost}")
    print(f"TUI key press + render with {len(engine.snapshot().sessions)} sessions: "
          f"p50 {ms(pct(keys, 50))}, p99 {ms(pct(keys, 99))} (budget 50 ms)")
    print(f"idle CPU of this process and its ssh processes: {idle_share * 100:.2f}% of a "
          f"core (budget 1%), {len(procs)} processes")
    print(f"ssh connections per host (sshd 'Accepted publickey'): {connections}")

    os.write(stop_w, b"x")
    loop.join(10)
    engine.close()
    world.close()
    subprocess.run(["tmux", "-L", local_socket, "kill-server"], capture_output=True,
                   check=False)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
