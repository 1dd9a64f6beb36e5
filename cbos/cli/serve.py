"""Long-running front ends: the control room (no command) and `cbos serve`."""

from __future__ import annotations

import argparse
import gc
import signal
import sys
from typing import TYPE_CHECKING

from cbos.cli.context import Context, server_options
from cbos.errors import UsageError

if TYPE_CHECKING:
    from cbos.cli.context import Subparsers
    from cbos.engine import Engine


def run_tui(args: argparse.Namespace, ctx: Context) -> int:
    """``cbos`` with no command: the control room, until ``q``."""
    if args.web and not args.ws:
        raise UsageError("--web serves the page on the WebSocket server's port: add --ws "
                         "(cbos --ws --web), or run `cbos serve --web`")
    # Start-up allocates much and frees little: the cyclic collector, run again and again
    # through urwid's import, cost ~10 ms of the first paint. App.start turns it back on
    # once the first frame is drawn (and freezes what start-up made); so does an error.
    gc.disable()
    try:
        from cbos.engine import Starting

        starting = Starting(ctx.config)  # tmux and /proc are read while urwid imports
        try:
            from cbos import app

            ws = None
            if args.ws:
                ws = app.WsOptions(ctx.config.api_host, ctx.config.api_port,
                                   args.allow_remote, tuple(args.allow_origin or ()),
                                   page=args.web)
        except BaseException:
            starting.close()
            raise
        return app.run(ctx.config, popup=args.popup, ws=ws, starting=starting)
    finally:
        gc.enable()


def cmd_serve(args: argparse.Namespace, ctx: Context) -> int:
    """`cbos serve`: the engine and the server, no TUI; Ctrl+C or SIGTERM end it (exit 0)."""
    if args.stdio:
        from cbos.stdio import serve_stdio

        return serve_stdio(ctx.config, ctx.tmux)
    from cbos.engine import Engine
    from cbos.hub import stop_pipe
    from cbos.web import REMOTE_WARNING, WebServer, serve_loop

    config = ctx.config
    server = WebServer(config, config.api_host, config.api_port,
                       allow_remote=bool(getattr(args, "allow_remote", False)),
                       allowed_origins=tuple(getattr(args, "allow_origin", None) or ()),
                       page=bool(getattr(args, "web", False)))
    server.start()
    engine: Engine | None = None
    last_error: list[str] = []

    def say(text: str) -> None:
        if last_error != [text]:
            last_error[:] = [text]
            print(f"cbos: {text}", file=sys.stderr, flush=True)

    with stop_pipe((signal.SIGINT, signal.SIGTERM)) as (stop_r, _):
        try:
            engine = Engine(config, ctx.tmux)
            engine.error_listeners.append(say)
            engine.start()
            who = ("every client needs the token" if server.allow_remote
                   else "other users need the token")
            print(f"cbos: serving ws://{server.address}/ws/stream ({who} in "
                  f"{config.token_file}); Ctrl+C stops", file=sys.stderr, flush=True)
            if server.page:
                print(f"cbos: the page: {server.page_url()} (the address holds the token: "
                      "keep it to yourself)", file=sys.stderr, flush=True)
            if server.allow_remote:
                print(f"cbos: warning: {REMOTE_WARNING}", file=sys.stderr, flush=True)
            serve_loop(engine, server, stop_r)
        finally:
            server.shutdown()
            if engine is not None:
                engine.close()
    return 0


# What register() adds: a command's words build only its own group's parser.
COMMANDS = ("serve",)


def register(sub: Subparsers) -> None:
    p = sub.add_parser("serve", help="run the WebSocket server without the TUI")
    server_options(p)
    p.add_argument("--stdio", action="store_true",
                   help="speak the protocol as JSON lines on stdin/stdout instead of "
                        "listening (what `ssh HOST cbos serve --stdio` runs); ends when "
                        "stdin closes")
    p.set_defaults(handler=cmd_serve)
