"""What an MCP `chat` costs over `cbos chat` for the same turn.

A private tmux server (``tmux -L cbos-bench-mcp-<pid> -f /dev/null``, private HOME) runs one
session of the fake claude (tests/fakeclaude) started by ``cbos new``. The same turn
(``SAY pong``, the fake's model time ~0.15 s) is then timed, alternating, as:

- ``cbos chat`` run as a process (what a script or a person pays, start-up included);
- the ``chat`` tool of one ``cbos mcp`` server kept open by the SDK's stdio client (what
  Claude pays once the server runs: Claude starts it once per session);
- ``api.chat`` in this process (the floor: the turn itself).

It also times a server's start and MCP handshake once. Bytecode caching is on
(PYTHONDONTWRITEBYTECODE is removed; cbos is compiled first). Run ``python -m bench.mcp``
(``--rounds N``, default 20).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from bench import compile_cbos

ROOT = Path(__file__).resolve().parents[1]
SLUG = "PING"
TEXT = "SAY pong"


def setup(root: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from tests.fakeclaude import install_fake_claude

    bin_dir = root / "bin"
    bin_dir.mkdir()
    claude = install_fake_claude(bin_dir)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    for name in list(os.environ):
        if name.startswith(("CBOS_", "TMUX", "CLAUDE_")):
            del os.environ[name]
    os.environ.update({
        "HOME": str(root / "home"), "XDG_STATE_HOME": str(root / "state"),
        "XDG_CONFIG_HOME": str(root / "config"),
        "CBOS_TMUX_SOCKET": f"cbos-bench-mcp-{os.getpid()}",
        "CBOS_CLAUDE_COMMAND": str(claude),
        "CBOS_CLAUDE_ENV_VARS": "FAKE_CLAUDE_IDLE_NOTIFY_S=600",
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    })
    (root / "home").mkdir()
    (root / "proj").mkdir()


def cli_chat() -> float:
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "cbos", "chat", SLUG, TEXT],
                          capture_output=True, text=True, timeout=120)
    took = time.perf_counter() - began
    assert done.returncode == 0 and done.stdout == "pong\n", done.stderr
    return took


def floor_chat() -> float:
    from cbos import api
    from cbos import config as config_mod
    from cbos.tmux import Tmux

    config = config_mod.load()
    began = time.perf_counter()
    result = api.chat(config, Tmux(config.tmux_socket), SLUG, TEXT, 120)
    took = time.perf_counter() - began
    assert result.reply == "pong"
    return took


def stats(name: str, values: list[float], base: float | None = None) -> str:
    p50 = statistics.median(values) * 1000
    p90 = sorted(values)[int(len(values) * 0.9) - 1] * 1000
    ratio = f"  {p50 / base:.2f}x the floor" if base else ""
    return f"{name:28} p50 {p50:7.1f} ms   p90 {p90:7.1f} ms{ratio}"


async def run(rounds: int) -> None:
    params = StdioServerParameters(command=sys.executable, args=["-m", "cbos", "mcp"],
                                   env=dict(os.environ))
    began = time.perf_counter()
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        handshake = time.perf_counter() - began
        cli, tool, floor = [], [], []
        for _ in range(rounds):
            start = time.perf_counter()
            result = await session.call_tool("chat", {"session": SLUG, "text": TEXT})
            tool.append(time.perf_counter() - start)
            assert not result.is_error, result.content
            cli.append(await anyio.to_thread.run_sync(cli_chat))
            floor.append(await anyio.to_thread.run_sync(floor_chat))
    base = statistics.median(floor) * 1000
    print(f"{rounds} rounds of one turn ({TEXT!r} to the fake claude), alternating:")
    print(stats("api.chat in-process (floor)", floor))
    print(stats("cbos mcp `chat` tool", tool, base))
    print(stats("cbos chat (a process)", cli, base))
    print(f"MCP chat over cbos chat: {statistics.median(tool) / statistics.median(cli):.2f}x;"
          f" the tool adds {(statistics.median(tool) - statistics.median(floor)) * 1000:.1f}"
          " ms over the floor")
    sdk = []
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import mcp.server.mcpserver"], check=True)
        sdk.append(time.perf_counter() - start)
    print(f"cbos mcp start + initialize (once per Claude session): {handshake * 1000:.0f} ms;"
          f" `python -c 'import mcp.server.mcpserver'` alone: "
          f"{statistics.median(sdk) * 1000:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    compile_cbos()
    root = Path(tempfile.mkdtemp(prefix="cbos-bench-mcp-"))
    try:
        setup(root)
        new = subprocess.run([sys.executable, "-m", "cbos", "new", str(root / "proj"),
                              "--slug", SLUG], capture_output=True, text=True, timeout=60)
        assert new.returncode == 0, new.stderr
        cli_chat()  # the first turn waits for claude's composer: not what is measured
        anyio.run(run, args.rounds)
    finally:
        subprocess.run(["tmux", "-L", os.environ.get("CBOS_TMUX_SOCKET", "x"),
                        "kill-server"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
