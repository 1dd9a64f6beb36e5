"""Commands on sessions: new, ls, send, interrupt, answer, wait, kill, attach, buffer, tail."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cbos.cli import remote
from cbos.cli.context import (
    Context,
    Remotes,
    all_views,
    for_each,
    group_options,
    is_remote,
    lines,
    parse_states,
    read_text_arg,
    seconds,
    targets,
)
from cbos.errors import CbosError, UsageError

if TYPE_CHECKING:
    from cbos.cli.context import Subparsers
    from cbos.model import SessionView


def cmd_new(args: argparse.Namespace, ctx: Context) -> int:
    from cbos import delegation
    from cbos.core import Core

    if args.on_host is not None:
        return remote.new(args, ctx)

    path = Path(args.path) if args.path else Path.cwd()
    extra = list(args.claude_args or ())
    if args.resume:
        extra = ["--resume", check_resume(path, args.resume), *extra]
    extra += delegation.system_prompt_args(system_prompt(args))
    env = delegation.group_env(None, args.group)
    session = Core(ctx.config, ctx.tmux).create(path, slug=args.slug, extra_args=extra,
                                                env=env)
    print(session.slug)
    return 0


def system_prompt(args: argparse.Namespace) -> str | None:
    """--append-system-prompt TEXT, or the text of --append-system-prompt-file FILE."""
    if args.append_system_prompt_file is None:
        text: str | None = args.append_system_prompt
        return text
    try:
        return Path(args.append_system_prompt_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the system prompt file "
                         f"{args.append_system_prompt_file}: {exc}") from None


def check_resume(path: Path, session_id: str) -> str:
    """A conversation id to resume must be one Claude stored for this directory."""
    from cbos import transcript

    if not transcript.SESSION_ID_RE.match(session_id):
        raise UsageError(f"{session_id!r} is not a conversation id; see `cbos conversations "
                         f"{path}`")
    known = {c.session_id for c in transcript.conversations(path)}
    if session_id not in known:
        raise UsageError(f"Claude has no conversation {session_id} stored for {path}; see "
                         f"`cbos conversations {path}`")
    return session_id


def _in_group(ctx: Context, views: Sequence[SessionView], group: str | None,
              ) -> list[SessionView]:
    if group is None:
        return list(views)
    from cbos import delegation, registry

    delegation.check_group(group)
    entries = registry.load(ctx.config)
    return [v for v in views if (entry := entries.get(v.slug)) is not None
            and entry.env.get(delegation.GROUP_ENV) == group]


def cmd_ls(args: argparse.Namespace, ctx: Context) -> int:
    from cbos import model, transcript

    the_core = ctx.core()
    # Tokens and cost from each transcript, memory and CPU from the process table.
    procs = the_core.board.procs
    views = [model.with_usage(v, transcript.usage_for(v.claude_session_id, v.pid, procs))
             for v in _in_group(ctx, the_core.snapshot().sessions, args.group)]
    if args.group is None:
        views = all_views(ctx, views)  # every host's (unreachable ones on stderr)
    if not args.json:  # scripts get no warning, so --json need not read the credential
        from cbos import auth

        warning = auth.expiry_warning(auth.credential())
        if warning:
            print(f"cbos: {warning}", file=sys.stderr)
    if args.json:
        from cbos import registry

        groups = registry.groups(ctx.config)
        print(json.dumps([{**v.to_json(), "group": groups.get(v.slug)} for v in views],
                         indent=2, ensure_ascii=False))
        return 0
    if not views:
        print("no claude sessions; start one with `cbos new PATH`", file=sys.stderr)
        return 0
    print(format_table(views, hosts=bool(ctx.config.hosts)))
    return 0


def _tokens(value: Any) -> str:
    if not isinstance(value, int):
        return "-"
    for unit, size in (("M", 1_000_000), ("k", 1_000)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return str(value)


def _cost(value: Any) -> str:
    if not isinstance(value, int | float):
        return "-"
    return f"${value:.2f}" if value >= 1 else f"${value:.3f}"


def _memory(value: Any) -> str:
    if not isinstance(value, int):
        return "-"
    return f"{value / (1 << 20):.0f}M"


def usage_cells(usage: Mapping[str, Any]) -> tuple[str, str, str]:
    """(tokens, cost, memory) of a `usage` object, short enough for a table."""
    return (_tokens(usage.get("total_tokens")), _cost(usage.get("cost_usd")),
            _memory(usage.get("rss_bytes")))


def format_table(views: Sequence[SessionView], now: float | None = None,
                 hosts: bool = False) -> str:
    """`cbos ls`: icon, (HOST,) slug, state, age, TOKENS, COST, MEM, reason and path, in
    attention order across every host."""
    from cbos.model import age, attention_key

    now = time.time() if now is None else now
    head: tuple[str, ...] = ("", "HOST") if hosts else ("",)
    rows = [(*head, "SLUG", "STATE", "AGE", "TOKENS", "COST", "MEM", "REASON", "PATH")]
    for v in sorted(views, key=attention_key):
        lead = (v.icon, v.host or "-") if hosts else (v.icon,)
        rows.append((*lead, v.slug, v.state.value, age(now - v.since), *usage_cells(v.usage),
                     v.reason, v.path))
    last = len(rows[0]) - 1
    widths = [max(len(r[i]) for r in rows) for i in range(last)]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) if i < last else cell for i, cell in enumerate(row))
        .rstrip() for row in rows)


def cmd_send(args: argparse.Namespace, ctx: Context) -> int:
    the_core = ctx.core()
    with Remotes(ctx) as remotes:
        slugs, words = targets(args, args.words, the_core, remotes)
        if not words:
            raise UsageError("give the text to send (or - to read it from stdin)")
        text = read_text_arg(words)
        return for_each(slugs, lambda slug: remotes.ask(slug, "send", text=text)
                        if is_remote(slug) else the_core.send(slug, text), "sent")


def cmd_interrupt(args: argparse.Namespace, ctx: Context) -> int:
    the_core = ctx.core()
    with Remotes(ctx) as remotes:
        slugs, words = targets(args, args.words, the_core, remotes)
        if words:
            raise UsageError(f"unexpected words after the session: {' '.join(words)!r}")
        return for_each(slugs, lambda slug: remotes.ask(slug, "interrupt")
                        if is_remote(slug) else the_core.interrupt(slug),
                        "interrupted")


def cmd_answer(args: argparse.Namespace, ctx: Context) -> int:
    if is_remote(args.slug):
        return remote.answer(args, ctx)
    dialog = ctx.core().answer(args.slug, args.choice)
    print(f"answered {args.slug}: {dialog.question or dialog.title or 'the dialog'}")
    return 0


def cmd_kill(args: argparse.Namespace, ctx: Context) -> int:
    if is_remote(args.slug) and args.group is None:
        return remote.kill(args, ctx)
    the_core = ctx.core()
    if args.group is not None:
        if args.slug is not None:
            raise UsageError("give a slug or --group, not both")
        members = [v.slug for v in _in_group(ctx, the_core.snapshot().sessions, args.group)]
        if not members:
            print(f"no session in group {args.group}", file=sys.stderr)
            return 1
        return for_each(members, the_core.kill, "killed")
    if args.slug is None:
        raise UsageError("name the session to kill (or --group G)")
    session = the_core.kill(args.slug)
    print(f"killed {session.slug}; its log stays at {ctx.config.log_path(session.slug)}")
    return 0


def cmd_attach(args: argparse.Namespace, ctx: Context) -> int:
    if is_remote(args.slug):
        return remote.attach(args, ctx)
    session = ctx.core().session(args.slug)
    if ctx.tmux.inside():
        ctx.tmux.switch_client(session.pane)
        return 0
    if not sys.stdin.isatty():
        raise CbosError("attach needs a terminal; run it from an interactive shell")
    ctx.tmux.exec_attach(session.pane)
    return 0  # not reached: the process became tmux attach


def cmd_wait(args: argparse.Namespace, ctx: Context) -> int:
    from cbos import waiting
    from cbos.core import Core

    wanted = parse_states(args.state)
    if is_remote(args.slug):
        return remote.wait(args, ctx, wanted)
    # A fresh Core: wait_for reads the events backlog itself, once.
    reached = waiting.wait_for(Core(ctx.config, ctx.tmux), args.slug, wanted, args.timeout)
    if reached is None:
        print(f"cbos: {args.slug} did not reach {','.join(sorted(wanted))} within "
              f"{args.timeout:g}s", file=sys.stderr)
        return 1
    print(f"{reached.slug} {reached.state.value}: {reached.reason}")
    return 0


def cmd_buffer(args: argparse.Namespace, ctx: Context) -> int:
    if is_remote(args.slug):
        return remote.buffer(args, ctx)
    session = ctx.core().session(args.slug)
    if args.raw:
        sys.stdout.buffer.write(tail_bytes(ctx.config.log_path(session.slug), args.lines))
        sys.stdout.flush()
        return 0
    colours = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
    print(ctx.tmux.capture(session.pane.pane_id, colours=colours, lines=args.lines))
    return 0


def cmd_tail(args: argparse.Namespace, ctx: Context) -> int:
    from cbos import follow

    if is_remote(args.slug):
        return remote.tail(args, ctx)
    session = ctx.core().session(args.slug)
    colours = sys.stdout.isatty()
    try:
        if args.raw and not args.follow:
            sys.stdout.buffer.write(tail_bytes(ctx.config.log_path(session.slug), args.lines))
            sys.stdout.flush()
        elif args.raw:
            follow.raw(ctx.config, session.slug, sys.stdout.buffer, args.lines)
        elif not args.follow:
            print(ctx.tmux.capture(session.pane.pane_id, colours=colours, lines=args.lines),
                  flush=True)
        else:
            follow.rendered(ctx.config, ctx.tmux, session.slug, session.pane.pane_id,
                            colours, args.lines, sys.stdout)
    except KeyboardInterrupt:
        pass  # Ctrl+C is how `tail -f` ends: not an error
    return 0


def tail_bytes(path: Path, lines: int | None) -> bytes:
    """The last ``lines`` lines (or last :data:`cbos.follow.SHOWN_BYTES`) of a log."""
    from cbos.follow import SHOWN_BYTES, last_lines

    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - SHOWN_BYTES))
            data = fh.read()
    except FileNotFoundError:
        raise CbosError(f"no log at {path}; the session has printed nothing yet") from None
    return last_lines(data, lines)


# What register() adds: a command's words build only its own group's parser.
COMMANDS = ("new", "ls", "send", "interrupt", "tail", "answer", "wait", "kill", "attach", "buffer")


def register(sub: Subparsers) -> None:
    p = sub.add_parser("new", help="start claude in a new tmux session")
    p.add_argument("path", nargs="?", help="project directory (default: the current one)")
    p.add_argument("--slug", help="session name (default: git origin's repo name, upper-cased,"
                   " else the directory name)")
    p.add_argument("--resume", metavar="ID", help="continue Claude conversation ID (see "
                   "`cbos conversations PATH`)")
    prompt = p.add_mutually_exclusive_group()
    prompt.add_argument("--append-system-prompt", metavar="TEXT",
                        help="text appended to Claude's system prompt")
    prompt.add_argument("--append-system-prompt-file", metavar="FILE",
                        help="the same, read from FILE")
    p.add_argument("--group", metavar="G", help="a group label (`cbos ls --group G`)")
    p.add_argument("--host", dest="on_host", metavar="HOST",
                   help="start it on that [[hosts]] machine (PATH is a directory there)")
    p.set_defaults(claude_args=[])
    p.set_defaults(handler=cmd_new)

    p = sub.add_parser("ls", help="list sessions with state, reason and age")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--group", metavar="G", help="only the sessions of group G")
    p.set_defaults(handler=cmd_ls)

    p = sub.add_parser("send", help="type text into a session (or a group), then Enter",
                       usage="cbos send [--all | --state S] [SLUG[,SLUG...]] TEXT... | -")
    group_options(p)
    p.add_argument("words", nargs="*", metavar="SLUG TEXT",
                   help="session(s), then the text (or - to read it from stdin)")
    p.set_defaults(handler=cmd_send)

    p = sub.add_parser("interrupt", help="press Ctrl+C in a session (or a group)",
                       usage="cbos interrupt [--all | --state S] [SLUG[,SLUG...]]")
    group_options(p)
    p.add_argument("words", nargs="*", metavar="SLUG", help="session(s)")
    p.set_defaults(handler=cmd_interrupt)

    p = sub.add_parser("tail", help="follow a session's output, like tail -f")
    p.add_argument("slug", help="session: SLUG, or HOST:SLUG on another machine")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new output")
    p.add_argument("--raw", action="store_true", help="raw bytes instead of rendered text")
    p.add_argument("--lines", type=lines, default=20, metavar="N",
                   help="lines of existing output to start with (default 20)")
    p.set_defaults(handler=cmd_tail)

    p = sub.add_parser("answer", help="answer the permission or question dialog on screen")
    p.add_argument("slug", help="session: SLUG, or HOST:SLUG on another machine")
    p.add_argument("choice", help="an option number, yes, no, or esc")
    p.set_defaults(handler=cmd_answer)

    p = sub.add_parser("wait", help="wait until a session reaches a state (exit 1 on timeout)")
    p.add_argument("slug", help="session: SLUG, or HOST:SLUG on another machine")
    p.add_argument("--state", default="waiting,permission",
                   help="comma-separated states to wait for (default: waiting,permission)")
    p.add_argument("--timeout", type=seconds, default=None, metavar="S",
                   help="give up after S seconds (default: wait for ever)")
    p.set_defaults(handler=cmd_wait)

    p = sub.add_parser("kill", help="end a session, or a group (logs stay)")
    p.add_argument("slug", nargs="?", help="session: SLUG, or HOST:SLUG on another machine")
    p.add_argument("--group", metavar="G", help="every session of group G")
    p.set_defaults(handler=cmd_kill)

    p = sub.add_parser("attach", help="switch to (inside tmux) or attach a session")
    p.add_argument("slug", help="session: SLUG, or HOST:SLUG on another machine")
    p.set_defaults(handler=cmd_attach)

    p = sub.add_parser("buffer", help="a session's screen, or its raw log")
    p.add_argument("slug", help="session: SLUG, or HOST:SLUG on another machine")
    p.add_argument("--raw", action="store_true", help="the raw bytes from the log")
    p.add_argument("--lines", type=lines, metavar="N", help="only the last N lines")
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                   help="keep the screen's colours (default: when stdout is a terminal)")
    p.set_defaults(handler=cmd_buffer)
