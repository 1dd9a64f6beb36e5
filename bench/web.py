"""Pane-to-client latency of the WebSocket stream, next to the bare tail's, in the same run.

A private tmux server (``tmux -L cbos-bench-web-<pid> -f /dev/null``, private HOME) runs one
session whose pane prints lines stamped with ``time.time()`` (20 a second), piped into the
stream directory by ``Tmux.new_session`` as cbos does. This process runs an Engine and the
WebServer on port 0 with ``serve_loop`` in a thread, as `cbos serve` does; one more output
listener on the loop thread notes when the tail delivered each stamp (the bare tail
latency). A separate client process (asyncio websockets, so 50 clients cost one thread)
subscribes N connections to ``*`` and notes when each stamp arrives in a ``stream`` message.

Also measured: the peer-uid lookup done for every connection without a token
(``web.peer_uid``, one scan of /proc/net/tcp) against ``psutil.net_connections``.

Run as ``python -m bench.web`` (about a minute) or ``--quick`` (about 20 seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
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

MARK = re.compile(rb"@@T(\d+\.\d+)@@")
RATE = 20.0  # stamped lines a second
WRITER = r"""
import os, sys, time
tick = 1.0 / float(sys.argv[1])
nxt = time.time()
seq = 0
while True:
    os.write(1, b"%s @@T%.6f@@ %d\n" % (b"x" * 60, time.time(), seq))
    seq += 1
    nxt += tick
    delay = nxt - time.time()
    if delay > 0:
        time.sleep(delay)
"""


class Meter:
    """Stamped lines in a stream (one per source), their latency while recording."""

    def __init__(self) -> None:
        self.rest: dict[Any, bytes] = {}
        self.lat: list[float] = []
        self.recording = False

    def feed(self, source: Any, data: bytes, now: float) -> None:
        buf = self.rest.get(source, b"") + data
        cut = buf.rfind(b"\n") + 1
        self.rest[source] = buf[cut:]
        if self.recording:
            self.lat.extend(now - float(m.group(1)) for m in MARK.finditer(buf, 0, cut))


# -- the client process ----------------------------------------------------------------------


async def _clients(url: str, count: int, duration: float) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    meter = Meter()
    conns = [await connect(url, proxy=None, max_size=None, compression=None)
             for _ in range(count)]
    for ws in conns:
        await ws.send(json.dumps({"type": "subscribe", "sessions": ["*"]}))

    async def read(index: int, ws: Any) -> None:
        async for text in ws:
            now = time.time()
            message = json.loads(text)
            if message["type"] == "stream":
                meter.feed(index, message["data"].encode(), now)

    readers = [asyncio.create_task(read(i, ws)) for i, ws in enumerate(conns)]
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    meter.recording = True
    cpu0 = _cpu()
    await asyncio.sleep(duration)
    meter.recording = False
    cpu = (_cpu() - cpu0) / duration
    for task in readers:
        task.cancel()
    for ws in conns:
        await ws.close()
    return {"lat": meter.lat, "cpu": cpu}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_clients(args: argparse.Namespace) -> None:
    result = asyncio.run(_clients(args.url, args.clients, args.duration))
    print(json.dumps(result), flush=True)


# -- the server side ---------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure_uid_lookup(port: int) -> dict[str, float]:
    import psutil

    from cbos import web

    with socket.create_server(("127.0.0.1", 0)) as listener, \
            socket.create_connection(listener.getsockname()):
        accepted, _ = listener.accept()
        with accepted:
            rounds = 200
            started = time.perf_counter()
            for _ in range(rounds):
                assert web.peer_uid(accepted) == os.getuid()
            proc = (time.perf_counter() - started) / rounds
            rounds_ps = 20
            started = time.perf_counter()
            for _ in range(rounds_ps):
                psutil.net_connections(kind="tcp")
            ps = (time.perf_counter() - started) / rounds_ps
    with open("/proc/net/tcp") as handle:
        rows = sum(1 for _ in handle) - 1
    return {"proc": proc, "psutil": ps, "rows": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs")
    parser.add_argument("--duration", type=float, help="seconds measured per run")
    parser.add_argument("--role", choices=("clients",), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--clients", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.duration is None:
        args.duration = 5.0 if args.quick else 20.0
    if args.role == "clients":
        run_clients(args)
        return 0
    if not shutil.which("tmux"):
        print("bench.web: tmux is not installed", file=sys.stderr)
        return 1

    root = Path(tempfile.mkdtemp(prefix="cbos-bench-web-"))
    sock_name = f"cbos-bench-web-{os.getpid()}"
    env_keep = dict(os.environ)
    os.environ.update({"HOME": str(root / "home"), "XDG_STATE_HOME": str(root / "state"),
                       "XDG_CONFIG_HOME": str(root / "config"), "CBOS_TMUX_SOCKET": sock_name})
    for name in ("TMUX", "TMUX_PANE", "http_proxy", "HTTP_PROXY", "https_proxy",
                 "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        os.environ.pop(name, None)
    (root / "home").mkdir()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from cbos import config as config_mod
    from cbos import web
    from cbos.engine import Engine
    from cbos.tmux import Tmux

    config = config_mod.load()
    config_mod.ensure_dirs(config)
    subprocess.run(["tmux", "-L", sock_name, "-f", "/dev/null", "new-session", "-d", "-s",
                    "keep", "sleep 100000"], check=True)
    stop_r, stop_w = os.pipe()
    loop_thread: threading.Thread | None = None
    server: web.WebServer | None = None
    engine: Engine | None = None
    try:
        tmux = Tmux(sock_name)
        writer = root / "writer.py"
        writer.write_text(WRITER)
        command = "exec " + shlex.join([sys.executable, str(writer), str(RATE)])
        tmux.new_session("BENCH", root, command, {}, config.log_path("BENCH"), 500, (120, 30))

        tail_meter = Meter()
        engine = Engine(config, tmux)
        engine.output_listeners.append(
            lambda chunks: [tail_meter.feed(c.slug, c.raw, time.time()) for c in chunks])
        server = web.WebServer(config, "127.0.0.1", 0)
        server.start()
        engine.start()
        loop_thread = threading.Thread(target=web.serve_loop, args=(engine, server, stop_r),
                                       daemon=True)
        loop_thread.start()
        url = f"ws://{server.address}/ws/stream"

        rows = []
        uid: dict[str, float] = {}
        for count in (1, 50):
            proc = subprocess.Popen(
                [sys.executable, "-m", "bench.web", "--role", "clients", "--url", url,
                 "--clients", str(count), "--duration", str(args.duration)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                cwd=Path(__file__).resolve().parent.parent)
            assert proc.stdin is not None and proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(1.0)  # let every subscription settle before measuring
            if count == 50:
                uid = measure_uid_lookup(int(server.address.rsplit(":", 1)[1]))
            tail_meter.lat.clear()
            tail_meter.recording = True
            cpu0 = _cpu()
            proc.stdin.write("go\n")
            proc.stdin.flush()
            result = json.loads(proc.stdout.readline())
            tail_meter.recording = False
            server_cpu = (_cpu() - cpu0) / args.duration
            proc.wait(timeout=30)
            rows.append((count, list(tail_meter.lat), result["lat"], server_cpu,
                         result["cpu"]))
    finally:
        if loop_thread is not None:
            os.write(stop_w, b"x")
            loop_thread.join(5)
        if server is not None:
            started = time.monotonic()
            server.shutdown()
            shutdown = time.monotonic() - started
        if engine is not None:
            engine.close()
        subprocess.run(["tmux", "-L", sock_name, "kill-server"], check=False,
                       capture_output=True)
        os.environ.clear()
        os.environ.update(env_keep)
        shutil.rmtree(root, ignore_errors=True)

    ms = 1000.0
    print(f"== WebSocket stream: pane write -> `stream` message, {RATE:.0f} stamped lines/s, "
          f"{args.duration:.0f} s per run ==")
    print(f"{'clients':>7}  {'tail p50':>9} {'tail p99':>9}  {'ws p50':>8} {'ws p99':>8}  "
          f"{'ws-tail p50':>11}  {'samples':>8}  {'server CPU':>10}  {'client CPU':>10}")
    for count, tail_lat, ws_lat, server_cpu, client_cpu in rows:
        print(f"{count:>7}  {pct(tail_lat, .5) * ms:>7.2f}ms {pct(tail_lat, .99) * ms:>7.2f}ms"
              f"  {pct(ws_lat, .5) * ms:>6.2f}ms {pct(ws_lat, .99) * ms:>6.2f}ms  "
              f"{(pct(ws_lat, .5) - pct(tail_lat, .5)) * ms:>9.2f}ms  {len(ws_lat):>8}  "
              f"{server_cpu * 100:>9.1f}%  {client_cpu * 100:>9.1f}%")
    expected = RATE * args.duration
    for count, tail_lat, ws_lat, _, _ in rows:
        print(f"  {count} client(s): tail saw {len(tail_lat)} stamps, the clients "
              f"{len(ws_lat)} (expected about {expected:.0f} x {count}); mean ws "
              f"{statistics.fmean(ws_lat) * ms if ws_lat else float('nan'):.2f} ms")
    if uid:
        print(f"peer-uid lookup ({uid['rows']:.0f} rows in /proc/net/tcp, 50 clients "
              f"connected): /proc/net/tcp scan {uid['proc'] * 1e6:.0f} us, "
              f"psutil.net_connections {uid['psutil'] * 1e3:.2f} ms "
              f"({uid['psutil'] / uid['proc']:.0f}x)")
    print(f"shutdown with 0 clients left: {shutdown * ms:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
