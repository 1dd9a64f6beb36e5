"""The `cbos` command: argparse, one handler per subcommand, exit codes.

Exit status: 0 done, 1 could not do it (tmux down, refused, timed out), 2 bad input or
configuration, 130 interrupted. Paths that do not draw never import urwid.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cbos import __version__
from cbos import config as config_mod
from cbos.errors import CbosError, UsageError

log = logging.getLogger("cbos")
CONTROL_OK = {"\n", "\t"}


@dataclass
class Context:
    """What every handler gets: the resolved config and a lazily built tmux handle."""

    config: config_mod.Config
    _tmux: Any = field(default=None, repr=False)

    @property
    def tmux(self) -> Any:
        if self._tmux is None:
            from cbos.tmux import Tmux

            self._tmux = Tmux(self.config.tmux_socket)
        return self._tmux


Handler = Callable[[argparse.Namespace, Context], int]


def check_text(text: str) -> str:
    """Refuse NUL and control characters (bar newline and tab) before anything is typed."""
    for index, char in enumerate(text):
        if (ord(char) < 32 or ord(char) == 127) and char not in CONTROL_OK:
            raise UsageError(f"the text has control character {char!r} at position {index}; "
                             "only printable text, newlines and tabs can be sent")
    return text


def read_text_arg(words: Sequence[str]) -> str:
    """TEXT... joined by spaces, or standard input when the only word is ``-``."""
    if list(words) == ["-"]:
        data = sys.stdin.buffer.read()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError(f"standard input is not UTF-8 text ({exc.reason} at byte "
                             f"{exc.start}); convert it to UTF-8") from None
        # `echo hi | cbos send X -` means "hi", not "hi" plus an extra blank line.
        return check_text(text.removesuffix("\n"))
    return check_text(" ".join(words))


# -- handlers ----------------------------------------------------------------------------


def core(ctx: Context) -> Any:
    """A Core that has applied the event backlog and looked at tmux once."""
    from cbos.core import Core

    return Core(ctx.config, ctx.tmux).load()


def cmd_new(args: argparse.Namespace, ctx: Context) -> int:
    from cbos.core import Core

    path = Path(args.path) if args.path else Path.cwd()
    extra = list(args.claude_args or ())
    if args.resume:
        extra = ["--resume", args.resume, *extra]
    session = Core(ctx.config, ctx.tmux).create(path, slug=args.slug, extra_args=extra)
    print(session.slug)
    return 0


def cmd_ls(args: argparse.Namespace, ctx: Context) -> int:
    from cbos import model, scripting, transcript

    the_core = core(ctx)
    # Tokens and cost from each transcript, memory and CPU from the process table.
    procs = the_core.board.procs
    views = [model.with_usage(v, transcript.usage_for(v.claude_session_id, v.pid, procs))
             for v in the_core.snapshot().sessions]
    if args.json:
        print(json.dumps([v.to_json() for v in views], indent=2, ensure_ascii=False))
        return 0
    if not views:
        print("no claude sessions; start one with `cbos new PATH`", file=sys.stderr)
        return 0
    print(scripting.format_table(views))
    return 0


def targets(args: argparse.Namespace, words: list[str], the_core: Any) -> tuple[list[str],
                                                                                list[str]]:
    """(slugs, remaining words) for commands that take one slug, several (A,B) or a group
    (--all, --state S)."""
    views = the_core.snapshot().sessions
    if args.all or args.state:
        wanted = parse_states(args.state) if args.state else None
        slugs = [v.slug for v in views
                 if v.state.value != "exited" and (wanted is None or v.state.value in wanted)]
        return slugs, words
    if not words:
        raise UsageError("name a session (or several, comma-separated), or use --all or "
                         "--state")
    slugs = [part for part in words[0].split(",") if part]
    for slug in slugs:
        the_core.session(slug)  # unknown names fail before anything is typed anywhere
    return slugs, words[1:]


def for_each(slugs: list[str], action: Callable[[str], None], verb: str) -> int:
    """Run ``action`` per session; with several, report each and fail if any failed."""
    if len(slugs) == 1:
        action(slugs[0])
        return 0
    failed = 0
    for slug in slugs:
        try:
            action(slug)
            print(f"{slug}: {verb}")
        except CbosError as exc:
            failed += 1
            print(f"{slug}: failed: {exc}", file=sys.stderr)
    if not slugs:
        print("no session matched", file=sys.stderr)
        return 1
    return 1 if failed else 0


def cmd_send(args: argparse.Namespace, ctx: Context) -> int:
    the_core = core(ctx)
    slugs, words = targets(args, args.words, the_core)
    if not words:
        raise UsageError("give the text to send (or - to read it from stdin)")
    text = read_text_arg(words)
    return for_each(slugs, lambda slug: the_core.send(slug, text), "sent")


def cmd_interrupt(args: argparse.Namespace, ctx: Context) -> int:
    the_core = core(ctx)
    slugs, words = targets(args, args.words, the_core)
    if words:
        raise UsageError(f"unexpected words after the session: {' '.join(words)!r}")
    return for_each(slugs, the_core.interrupt, "interrupted")


def cmd_answer(args: argparse.Namespace, ctx: Context) -> int:
    dialog = core(ctx).answer(args.slug, args.choice)
    print(f"answered {args.slug}: {dialog.question}")
    return 0


def cmd_kill(args: argparse.Namespace, ctx: Context) -> int:
    session = core(ctx).kill(args.slug)
    print(f"killed {session.slug}; its log stays at {ctx.config.log_path(session.slug)}")
    return 0


def cmd_attach(args: argparse.Namespace, ctx: Context) -> int:
    session = core(ctx).session(args.slug)
    if ctx.tmux.inside():
        ctx.tmux.switch_client(session.pane)
        return 0
    if not sys.stdin.isatty():
        raise CbosError("attach needs a terminal; run it from an interactive shell")
    argv = ctx.tmux.attach_argv(session.pane)
    env = {k: v for k, v in os.environ.items() if k != "TMUX"}
    os.execvpe(argv[0], argv, env)


def cmd_wait(args: argparse.Namespace, ctx: Context) -> int:
    from cbos import waiting

    wanted = parse_states(args.state)
    reached = waiting.wait_for(core(ctx), args.slug, wanted, args.timeout)
    if reached is None:
        print(f"cbos: {args.slug} did not reach {','.join(sorted(wanted))} within "
              f"{args.timeout:g}s", file=sys.stderr)
        return 1
    print(f"{reached.slug} {reached.state.value}: {reached.reason}")
    return 0


def parse_states(text: str) -> set[str]:
    from cbos.state import State

    names = {part.strip().lower() for part in text.split(",") if part.strip()}
    valid = {s.value for s in State}
    unknown = names - valid
    if unknown or not names:
        raise UsageError(f"unknown state {', '.join(sorted(unknown)) or repr(text)}; "
                         f"use a comma-separated list of {', '.join(s.value for s in State)}")
    return names


def cmd_buffer(args: argparse.Namespace, ctx: Context) -> int:
    session = core(ctx).session(args.slug)
    if args.raw:
        sys.stdout.buffer.write(tail_bytes(ctx.config.log_path(session.slug), args.lines))
        sys.stdout.flush()
        return 0
    colours = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
    print(ctx.tmux.capture(session.pane.pane_id, colours=colours, lines=args.lines))
    return 0


def cmd_tail(args: argparse.Namespace, ctx: Context) -> int:
    from cbos import follow

    the_core = core(ctx)
    session = the_core.session(args.slug)
    colours = sys.stdout.isatty()
    try:
        if args.raw:
            sys.stdout.buffer.write(tail_bytes(ctx.config.log_path(session.slug), args.lines))
            sys.stdout.flush()
            if args.follow:
                follow.raw(ctx.config, session.slug, sys.stdout.buffer)
        else:
            screen = ctx.tmux.capture(session.pane.pane_id, colours=colours, lines=args.lines)
            print(screen, flush=True)
            if args.follow:
                follow.rendered(ctx.config, ctx.tmux, session.slug, session.pane.pane_id,
                                screen.splitlines(), colours)
    except KeyboardInterrupt:
        pass  # Ctrl+C is how `tail -f` ends: not an error
    return 0


def tail_bytes(path: Path, lines: int | None, max_bytes: int = 1 << 20) -> bytes:
    """The last ``lines`` lines (or last ``max_bytes``) of a log, read from its end."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except FileNotFoundError:
        raise CbosError(f"no log at {path}; the session has printed nothing yet") from None
    if lines is not None:
        data = b"".join(data.splitlines(keepends=True)[-lines:])
    return data


def cmd_hooks(args: argparse.Namespace, ctx: Context) -> int:
    from cbos import hooks

    if args.action == "install":
        print(hooks.install(ctx.config))
    elif args.action == "uninstall":
        print(hooks.uninstall(ctx.config))
    else:
        status = hooks.status(ctx.config)
        print(status.describe())
        return 0 if status.installed else 1
    return 0


def cmd_status(args: argparse.Namespace, ctx: Context) -> int:
    from cbos import statusline

    text = statusline.line(ctx.config)
    if text:
        print(text)
    return 0


def cmd_plugin_path(args: argparse.Namespace, ctx: Context) -> int:
    path = plugin_path()
    if path is None:
        raise CbosError("the tmux plugin file is not installed with this cbos; "
                        "reinstall cbos with pip")
    print(path)
    return 0


def plugin_path() -> Path | None:
    """Where `tmux/cbos.tmux` is: the installed copy, or the source tree's."""
    here = Path(__file__).resolve()
    # The source tree first: an editable install also copies a (soon stale) plugin into
    # sys.prefix. Then the prefix the package was installed into (pip --user/--prefix put
    # share/ four levels above site-packages/cbos/cli.py), then sys.prefix.
    prefix = here.parents[4] if len(here.parents) > 4 else Path(sys.prefix)
    candidates = [here.parents[1] / "tmux" / "cbos.tmux",
                  prefix / "share" / "cbos" / "tmux" / "cbos.tmux",
                  Path(sys.prefix) / "share" / "cbos" / "tmux" / "cbos.tmux"]
    return next((c for c in candidates if c.is_file()), None)


def cmd_projects(args: argparse.Namespace, ctx: Context) -> int:
    from cbos import projects

    roots = [Path(r) for r in args.roots] or [Path.home()]
    for root in roots:
        if not root.is_dir():
            raise UsageError(f"{str(root)!r} is not a directory; give directories to search")
    found = projects.find(roots, max_depth=args.depth)
    if args.json:
        print(json.dumps([{"slug": p.slug, "path": str(p.path)} for p in found], indent=2))
        return 0
    for project in found:
        print(f"{project.slug}\t{project.path}")
    return 0


# -- parser ------------------------------------------------------------------------------


def _depth(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 20:
        raise argparse.ArgumentTypeError("depth must be from 0 to 20")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError("seconds must be 0 or more")
    return value


def _lines(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("lines must be greater than 0")
    return value


def _group_options(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--all", action="store_true", help="every session that is not exited")
    group.add_argument("--state", metavar="S",
                       help="sessions in these states (comma-separated, e.g. waiting)")


def _server_options(p: argparse.ArgumentParser, ws_prefix: bool = False) -> None:
    """--host/--port/... on the top level (for --ws) and again on `serve`.

    On `serve` the defaults are SUPPRESS, so `cbos --host X serve` keeps the X given
    before the subcommand instead of a subparser default overwriting it.
    """
    what = " (with --ws)" if ws_prefix else ""
    kw: dict[str, Any] = {} if ws_prefix else {"default": argparse.SUPPRESS}
    p.add_argument("--host", help=f"bind address{what} (default CBOS_API_HOST, 127.0.0.1)",
                   **kw)
    p.add_argument("--port", type=_port, help=f"port{what} (default CBOS_API_PORT, 32205)",
                   **kw)
    p.add_argument("--allow-remote", action="store_true",
                   help=f"allow a non-loopback bind{what}; every client then needs the token",
                   **kw)
    p.add_argument("--allow-origin", action="append", metavar="ORIGIN",
                   help=f"a browser Origin allowed to connect{what} (repeatable)",
                   **(kw or {"default": []}))


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("a port is from 0 to 65535")
    return value


def _lazy(module: str, name: str) -> Handler:
    """A handler imported only when its command runs (keeps other commands' start-up light)."""
    def handler(args: argparse.Namespace, ctx: Context) -> int:
        import importlib

        function: Handler = getattr(importlib.import_module(module), name)
        return function(args, ctx)

    handler.__name__ = name
    return handler


class Parser(argparse.ArgumentParser):
    """argparse that reports errors as one `cbos: ...` line with exit status 2.

    No abbreviations: `--all` must never be read as a prefix of `--allow-remote`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> Any:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="cbos", description="A tmux-native control room for many "
                    "interactive Claude Code sessions. With no command, opens the TUI.")
    parser.add_argument("--version", action="version", version=f"cbos {__version__}")
    parser.add_argument("-L", "--socket-name", metavar="NAME",
                        help="tmux server socket name, as `tmux -L` (env CBOS_TMUX_SOCKET)")
    parser.add_argument("--popup", action="store_true",
                        help="TUI in a tmux popup: opening a session closes it")
    parser.add_argument("--ws", action="store_true",
                        help="also run the WebSocket server while the TUI runs")
    _server_options(parser, ws_prefix=True)
    parser.set_defaults(handler=None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    p = sub.add_parser("new", help="start claude in a new tmux session")
    p.add_argument("path", nargs="?", help="project directory (default: the current one)")
    p.add_argument("--slug", help="session name (default: git origin's repo name, upper-cased,"
                   " else the directory name)")
    p.add_argument("--resume", metavar="ID", help="continue Claude conversation ID")
    p.set_defaults(claude_args=[])
    p.set_defaults(handler=cmd_new)

    p = sub.add_parser("ls", help="list sessions with state, reason and age")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_ls)

    p = sub.add_parser("send", help="type text into a session (or a group), then Enter",
                       usage="cbos send [--all | --state S] [SLUG[,SLUG...]] TEXT... | -")
    _group_options(p)
    p.add_argument("words", nargs="*", metavar="SLUG TEXT",
                   help="session(s), then the text (or - to read it from stdin)")
    p.set_defaults(handler=cmd_send)

    p = sub.add_parser("interrupt", help="press Ctrl+C in a session (or a group)",
                       usage="cbos interrupt [--all | --state S] [SLUG[,SLUG...]]")
    _group_options(p)
    p.add_argument("words", nargs="*", metavar="SLUG", help="session(s)")
    p.set_defaults(handler=cmd_interrupt)

    p = sub.add_parser("tail", help="follow a session's output, like tail -f")
    p.add_argument("slug", help="session slug")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new output")
    p.add_argument("--raw", action="store_true", help="raw bytes instead of rendered text")
    p.add_argument("--lines", type=_lines, default=20, metavar="N",
                   help="lines of existing output to start with (default 20)")
    p.set_defaults(handler=cmd_tail)

    p = sub.add_parser("chat", help="send a prompt, wait for the turn to end, print the reply")
    p.add_argument("slug", help="session slug")
    p.add_argument("text", nargs="+", metavar="TEXT", help="the prompt, or - for stdin")
    p.add_argument("--timeout", type=_seconds, default=600.0, metavar="S",
                   help="give up after S seconds (default 600)")
    p.add_argument("--json", action="store_true",
                   help="reply, duration, and token and cost figures as JSON")
    p.set_defaults(handler=_lazy("cbos.scripting", "cmd_chat"))

    p = sub.add_parser("history", help="a session's prompts and replies, from its transcript")
    p.add_argument("slug", help="session slug")
    p.add_argument("--full", action="store_true", help="whole replies, tool calls included")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_lazy("cbos.scripting", "cmd_history"))

    p = sub.add_parser("resume", help="restart claude in a session, continuing its conversation")
    p.add_argument("slug", help="session slug")
    p.set_defaults(handler=_lazy("cbos.scripting", "cmd_resume"))

    p = sub.add_parser("fork", help="a new session continuing a session's conversation")
    p.add_argument("slug", help="session to fork")
    p.add_argument("new_slug", metavar="NEWSLUG", help="slug of the new session")
    p.set_defaults(handler=_lazy("cbos.scripting", "cmd_fork"))

    p = sub.add_parser("up", help="start the sessions described in a TOML file")
    p.add_argument("file", help="the TOML file")
    p.set_defaults(handler=_lazy("cbos.scripting", "cmd_up"))

    p = sub.add_parser("serve", help="run the WebSocket server without the TUI")
    _server_options(p)
    p.set_defaults(handler=_lazy("cbos.web", "cmd_serve"))

    p = sub.add_parser("answer", help="answer the permission or question dialog on screen")
    p.add_argument("slug", help="session slug")
    p.add_argument("choice", help="an option number, yes, no, or esc")
    p.set_defaults(handler=cmd_answer)

    p = sub.add_parser("wait", help="wait until a session reaches a state (exit 1 on timeout)")
    p.add_argument("slug", help="session slug")
    p.add_argument("--state", default="waiting,permission",
                   help="comma-separated states to wait for (default: waiting,permission)")
    p.add_argument("--timeout", type=_seconds, default=None, metavar="S",
                   help="give up after S seconds (default: wait for ever)")
    p.set_defaults(handler=cmd_wait)

    p = sub.add_parser("kill", help="end a session (its log stays)")
    p.add_argument("slug", help="session slug")
    p.set_defaults(handler=cmd_kill)

    p = sub.add_parser("attach", help="switch to (inside tmux) or attach a session")
    p.add_argument("slug", help="session slug")
    p.set_defaults(handler=cmd_attach)

    p = sub.add_parser("buffer", help="a session's screen, or its raw log")
    p.add_argument("slug", help="session slug")
    p.add_argument("--raw", action="store_true", help="the raw bytes from the log")
    p.add_argument("--lines", type=_lines, metavar="N", help="only the last N lines")
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                   help="keep the screen's colours (default: when stdout is a terminal)")
    p.set_defaults(handler=cmd_buffer)

    p = sub.add_parser("hooks", help="install, uninstall or check cbos's Claude Code hooks")
    p.add_argument("action", choices=("install", "uninstall", "status"),
                   help="install into Claude's user settings, remove, or report")
    p.set_defaults(handler=cmd_hooks)

    p = sub.add_parser("status", help="one short line for tmux's status bar")
    p.set_defaults(handler=cmd_status)

    p = sub.add_parser("plugin-path", help="print the path of the tmux plugin file")
    p.set_defaults(handler=cmd_plugin_path)

    p = sub.add_parser("projects", help="directories holding a CLAUDE.md")
    p.add_argument("roots", nargs="*", metavar="ROOT", help="where to look (default: home)")
    p.add_argument("--depth", type=_depth, default=4, help="how deep to look (default 4)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_projects)

    return parser


def setup_logging(config: config_mod.Config) -> None:
    """cbos's own log file (0600); nothing goes to the terminal but the one-line errors."""
    try:
        config_mod.ensure_dirs(config)
        config_mod.touch_private(config.own_log)
        handler: logging.Handler = logging.FileHandler(config.own_log, encoding="utf-8")
    except OSError:
        handler = logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("cbos")
    root.handlers[:] = [handler]
    root.setLevel(config.log_level)
    root.propagate = False


CLAUDE_ARG_COMMANDS = frozenset({"new"})


def _command_of(words: Sequence[str]) -> str | None:
    """The subcommand word, skipping global options (and -L's value)."""
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word in ("-L", "--socket-name"):
            skip = True
        elif not word.startswith("-"):
            return word
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        # Everything after a lone "--" goes to claude untouched (`cbos new . -- --model x`);
        # argparse's REMAINDER would also swallow cbos's own options placed after PATH.
        extra: list[str] = []
        if _command_of(args_list) in CLAUDE_ARG_COMMANDS and "--" in args_list:
            cut = args_list.index("--")
            args_list, extra = args_list[:cut], args_list[cut + 1:]
        args = build_parser().parse_args(args_list)
        if extra:
            args.claude_args = extra
        config = config_mod.load()
        if args.socket_name:
            config = config.replace(tmux_socket=args.socket_name)
        setup_logging(config)
        if args.host:
            config = config.replace(api_host=args.host)
        if args.port is not None:
            config = config.replace(api_port=args.port)
        handler: Handler | None = args.handler
        if handler is None:
            from cbos import app

            result: int = app.run(args, config)
            return result
        return handler(args, Context(config))
    except CbosError as exc:
        print(f"cbos: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `cbos ls | head`: the reader left; that is not an error worth a traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as exc:  # the last line of defence: log, one line, exit 1
        log.exception("unexpected error running %s", args_list)
        print(f"cbos: internal error: {exc!r}; details are in cbos's log "
              f"({_own_log_hint()})", file=sys.stderr)
        return 1


def _own_log_hint() -> str:
    try:
        return str(config_mod.load().own_log)
    except CbosError:
        return "~/.local/state/cbos/cbos.log"


if __name__ == "__main__":
    sys.exit(main())
