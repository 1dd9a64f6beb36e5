"""The `cbos` command: the parser, built from one module per command group, and exit codes.

Exit status: 0 done, 1 could not do it (tmux down, refused, timed out), 2 bad input or
configuration, 130 interrupted. Paths that do not draw never import urwid.

This package is the top floor: it imports every other module, and none imports it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from cbos import __version__
from cbos import config as config_mod
from cbos.cli import agents, integration, remote, scripting, serve, sessions
from cbos.cli.context import Context, Handler, Parser, server_options
from cbos.errors import CbosError

log = logging.getLogger("cbos")

# Each group adds its subcommands, in this order, to `cbos --help`.
GROUPS = (sessions, scripting, agents, serve, integration, remote)

# Commands whose words after a lone "--" go to claude untouched.
CLAUDE_ARG_COMMANDS = frozenset({"new"})


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or with ``command`` only the subcommands of the group that owns
    it: building all of them (~26 subparsers, mostly argparse's gettext lookups) cost
    ~7 ms of every start, which scripts and the status line pay on each call."""
    parser = top_parser()
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    owners = [group for group in GROUPS if command in group.COMMANDS]
    for group in owners or GROUPS:
        group.register(sub)
    return parser


def parser_for(words: Sequence[str]) -> argparse.ArgumentParser:
    """The parser ``words`` need: the TUI (no command, no --help) needs no subcommand at
    all, a known command only its group's; anything else (help, a typo) gets them all,
    so that argparse can list them."""
    command = command_of(words, valued_options(top_parser()))
    if command is None and not {"-h", "--help"} & set(words):
        return top_parser()
    return build_parser(command)


def top_parser() -> argparse.ArgumentParser:
    """`cbos` and its global options, without the subcommands."""
    parser = Parser(prog="cbos", description="A tmux-native control room for many "
                    "interactive Claude Code sessions. With no command, opens the TUI.")
    parser.add_argument("--version", action="version", version=f"cbos {__version__}")
    parser.add_argument("-L", "--socket-name", metavar="NAME",
                        help="tmux server socket name, as `tmux -L` (env CBOS_TMUX_SOCKET)")
    parser.add_argument("--popup", action="store_true",
                        help="TUI in a tmux popup: opening a session closes it")
    parser.add_argument("--ws", action="store_true",
                        help="also run the WebSocket server while the TUI runs")
    server_options(parser, ws_prefix=True)
    parser.set_defaults(handler=serve.run_tui)
    return parser


def valued_options(parser: argparse.ArgumentParser) -> frozenset[str]:
    """The top-level options that take a value (``--port 9000``), so that the word after
    them is never taken for the subcommand."""
    return frozenset(option for action in parser._actions if action.nargs != 0
                     and not isinstance(action, argparse._SubParsersAction)
                     for option in action.option_strings)


def command_of(words: Sequence[str], valued: frozenset[str]) -> str | None:
    """The subcommand word, skipping global options and their values."""
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word == "--":
            return None
        elif word in valued:
            skip = True
        elif not word.startswith("-"):
            return word
    return None


def split_claude_args(parser: argparse.ArgumentParser,
                      words: Sequence[str]) -> tuple[list[str], list[str]]:
    """(cbos's words, claude's words): everything after a lone "--" goes to claude untouched
    for the commands that start claude (`cbos --port 9000 new . -- --model x`); argparse's
    REMAINDER would also swallow cbos's own options placed after PATH."""
    words = list(words)
    if command_of(words, valued_options(parser)) in CLAUDE_ARG_COMMANDS and "--" in words:
        cut = words.index("--")
        return words[:cut], words[cut + 1:]
    return words, []


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


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = parser_for(args_list)
        words, extra = split_claude_args(parser, args_list)
        args = parser.parse_args(words)
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
        handler: Handler = args.handler
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
