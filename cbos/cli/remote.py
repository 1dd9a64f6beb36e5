"""Commands on other machines' sessions (``HOST:SLUG``), and `cbos hosts`.

Each command here talks to a host's own cbos through ``ssh HOST COMMAND serve --stdio``
(:class:`cbos.hosts.Remote`): text and choices travel inside protocol messages; the only
remote command lines are the fixed ``serve --stdio``, ``attach SLUG`` and ``history SLUG``
with a checked slug. One connection per host per command (and cbos's ControlMaster shares
the ssh connection between commands).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from typing import TYPE_CHECKING, Any

from cbos.cli.context import Context, Remotes
from cbos.errors import CbosError, UsageError

if TYPE_CHECKING:
    from cbos import hosts
    from cbos.cli.context import Subparsers
    from cbos.config import HostConfig

_SGR = re.compile(r"\x1b\[[0-9;:]*m")


# -- the commands' remote halves (called from the command groups) ---------------------------


def new(args: argparse.Namespace, ctx: Context) -> int:
    """`cbos new --host HOST PATH`: PATH is a directory on that machine."""
    from cbos import hosts

    host = ctx.config.host(args.on_host)
    if host is None:
        hosts.address(ctx.config, f"{args.on_host}:x")  # raises the clear error
        return 2
    if not args.path or not (args.path.startswith("/") or args.path.startswith("~")):
        raise UsageError(f"give the project directory on {host.name} as an absolute path "
                         "(or ~/...)")
    if args.claude_args or args.resume or args.append_system_prompt \
            or args.append_system_prompt_file or args.group:
        raise UsageError("--resume, --append-system-prompt, --group and claude's own "
                         "arguments apply to this machine's sessions only")
    fields: dict[str, Any] = {"path": args.path}
    if args.slug:
        from cbos.sessions import validate_slug

        fields["slug"] = validate_slug(args.slug)
    with hosts.Remote(ctx.config, host) as remote:
        reply = remote.ask("create_session", **fields)
    print(f"{host.name}:{reply['session']['slug']}")
    return 0


def answer(args: argparse.Namespace, ctx: Context) -> int:
    with Remotes(ctx) as remotes:
        view = remotes.view(args.slug)
        remotes.ask(args.slug, "answer", choice=args.choice)
    question = view.dialog.question if view.dialog is not None else ""
    print(f"answered {args.slug}: {question}")
    return 0


def kill(args: argparse.Namespace, ctx: Context) -> int:
    with Remotes(ctx) as remotes:
        remotes.ask(args.slug, "delete_session")
    print(f"killed {args.slug}; its log stays on {args.slug.partition(':')[0]}")
    return 0


def buffer(args: argparse.Namespace, ctx: Context) -> int:
    with Remotes(ctx) as remotes:
        if args.raw:
            data = remotes.ask(args.slug, "get_buffer")["data"]
            if args.lines is not None:
                data = "".join(data.splitlines(keepends=True)[-args.lines:])
            sys.stdout.write(data)
            sys.stdout.flush()
            return 0
        screen = str(remotes.ask(args.slug, "get_screen")["data"])
    colours = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
    if not colours:
        screen = _SGR.sub("", screen)
    text = screen.rstrip("\n")
    if args.lines is not None:
        text = "\n".join(text.splitlines()[-args.lines:])
    print(text)
    return 0


def tail(args: argparse.Namespace, ctx: Context) -> int:
    """As `cbos tail` for a local session: the end of the output (raw) or the screen,
    then with -f what comes, with no gap and no repeat between the two."""
    with Remotes(ctx) as remotes:
        remote, slug = remotes.remote(args.slug)
        if not args.follow:
            if args.raw:
                data = str(remote.ask("get_buffer", session=slug)["data"])
                sys.stdout.write("".join(data.splitlines(keepends=True)[-args.lines:]))
            else:
                sys.stdout.write(_screen_lines(remote, slug, args.lines))
            sys.stdout.flush()
            return 0
        try:
            if args.raw:
                _follow_raw(remote, slug, args.lines)
            else:
                _follow_rendered(remote, slug, args.lines)
        except KeyboardInterrupt:
            pass  # Ctrl+C is how `tail -f` ends
        return 0


def _screen(remote: hosts.Remote, slug: str) -> list[str]:
    """The session's screen as rows (colours kept only for a terminal)."""
    screen = str(remote.ask("get_screen", session=slug)["data"])
    if not sys.stdout.isatty():
        screen = _SGR.sub("", screen)
    return screen.rstrip("\n").splitlines()


def _screen_lines(remote: hosts.Remote, slug: str, lines: int) -> str:
    return "\n".join(_screen(remote, slug)[-lines:]) + "\n"


def _follow_raw(remote: hosts.Remote, slug: str, lines: int) -> None:
    """The last lines, then every byte after them. The host replays from an offset and
    goes live where the replay ends (subscribe with ``since``): a first subscribe tells
    where the output ends now, so the replay is the last SHOWN_BYTES, not the whole log."""
    from cbos.follow import SHOWN_BYTES

    end = int(remote.ask("subscribe", sessions=[slug])["offsets"][slug])
    remote.ask("unsubscribe", sessions=[slug])
    start = max(0, end - SHOWN_BYTES)
    live_from = int(remote.ask("subscribe", sessions=[slug], since={slug: start})
                    ["offsets"][slug])
    # What the first subscription sent until it ended came before this reply; the replay
    # and the live stream come after it and cover all of that again.
    remote.forget_streams(slug)
    backlog: list[str] = []
    replaying = start < live_from
    while (message := _next_stream(remote, slug)) is not None:
        data = str(message.get("data", ""))
        if replaying:
            backlog.append(data)
            if int(message.get("offset", live_from)) < live_from:
                continue
            replaying = False
            text = "".join(backlog)
            if start > 0:
                text = text.partition("\n")[2]  # the window's start cut the first line
            data = "".join(text.splitlines(keepends=True)[-lines:])
        sys.stdout.write(data)
        sys.stdout.flush()


def _follow_rendered(remote: hosts.Remote, slug: str, lines: int) -> None:
    """The screen, then the lines that change on it, re-read when the session's output
    moves (at most ten times a second), as local `tail -f` does."""
    from cbos.follow import MIN_INTERVAL, new_lines

    remote.ask("subscribe", sessions=[slug])  # first: output after the screen wakes us
    previous = _screen(remote, slug)
    print("\n".join(previous[-lines:]), flush=True)
    last = time.monotonic()
    while _next_stream(remote, slug) is not None:
        # Output that came while a screen was read wakes one more read, not one each.
        more = True
        while more:
            wait = MIN_INTERVAL - (time.monotonic() - last)
            if wait > 0:
                time.sleep(wait)  # (a one-shot command: nothing else waits on this thread)
            current = _screen(remote, slug)
            last = time.monotonic()
            for line in new_lines(previous, current):
                print(line, flush=True)
            previous = current
            more = remote.forget_streams(slug)


def _next_stream(remote: hosts.Remote, slug: str) -> dict[str, Any] | None:
    """The session's next output message; None once the session is gone."""
    while True:
        message = remote.events(3600)
        if message is None:
            continue
        if message.get("type") == "stream" and message.get("session") == slug:
            return message
        if message.get("type") == "session_deleted" and message.get("slug") == slug:
            return None


def wait(args: argparse.Namespace, ctx: Context, wanted: set[str]) -> int:
    from cbos import protocol as pr

    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    with Remotes(ctx) as remotes:
        remote, slug = remotes.remote(args.slug)
        view = remotes.view(args.slug)
        while view.state.value not in wanted:
            left = 3600.0 if deadline is None else deadline - time.monotonic()
            if left <= 0:
                print(f"cbos: {args.slug} did not reach {','.join(sorted(wanted))} within "
                      f"{args.timeout:g}s", file=sys.stderr)
                return 1
            message = remote.events(min(left, 3600.0))
            if message is None:
                continue
            if message.get("type") in ("session_update", "session_created"):
                try:
                    fresh = pr.view_from_json(message.get("session"), remote.host.name)
                except pr.BadEvent:
                    continue  # a row this cbos cannot read: not the one waited for
                if fresh.slug == args.slug:
                    view = fresh
            elif message.get("type") == "session_deleted" and message.get("slug") == slug:
                raise CbosError(f"{args.slug} ended")
    print(f"{view.slug} {view.state.value}: {view.reason}")
    return 0


def chat(args: argparse.Namespace, ctx: Context, text: str) -> int:
    """Send, then wait for the turn to end (the session waits again) and print Claude's
    last words, from the protocol's session_waiting."""
    started = time.monotonic()
    with Remotes(ctx) as remotes:
        remote, slug = remotes.remote(args.slug)
        reply = remote.chat(args.slug, slug, text, args.timeout)
    if args.json:
        print(json.dumps({"slug": args.slug, "reply": reply,
                          "duration_s": round(time.monotonic() - started, 3)}, indent=2,
                         ensure_ascii=False))
    else:
        print(reply)
    return 0


def _where(ctx: Context, name: str) -> tuple[HostConfig, str]:
    from cbos import hosts

    where = hosts.address(ctx.config, name)
    assert where.host is not None
    return where.host, where.slug


def history(args: argparse.Namespace, ctx: Context) -> int:
    """The remote cbos's own `history` (a fixed command line with a checked slug)."""
    from cbos import hosts

    host, slug = _where(ctx, args.slug)
    words = ["history"] + (["--full"] if args.full else []) + (["--json"] if args.json else [])
    sys.stdout.write(hosts.run_remote(ctx.config, host, [*words, slug]))
    return 0


def attach(args: argparse.Namespace, ctx: Context) -> int:
    """``ssh -t HOST COMMAND attach SLUG``: a new tmux window inside tmux, else this
    terminal."""
    from cbos import hosts

    with Remotes(ctx) as remotes:
        remotes.remote(args.slug)  # the session exists, before anything takes the terminal
    host, slug = _where(ctx, args.slug)
    if ctx.tmux.inside():
        ctx.tmux.open_window(args.slug.replace(":", "-"),
                             hosts.ssh_argv(ctx.config, host, ["attach", slug], tty=True))
        return 0
    if not sys.stdin.isatty():
        raise CbosError("attach needs a terminal; run it from an interactive shell")
    hosts.exec_remote(ctx.config, host, ["attach", slug])
    return 0  # not reached


# -- cbos hosts -------------------------------------------------------------------------------


def cmd_hosts(args: argparse.Namespace, ctx: Context) -> int:
    """Each configured host: reachable (with its session count) or why not."""
    from cbos import hosts

    if not ctx.config.hosts:
        print(f"no hosts configured; add [[hosts]] tables to {ctx.config.config_dir}/"
              "config.toml (see `man cbos`)", file=sys.stderr)
        return 0
    views, errors = hosts.gather(ctx.config)
    rows = []
    for host in ctx.config.hosts:
        count = sum(1 for v in views if v.host == host.name)
        rows.append({"name": host.name, "ssh": host.ssh, "command": host.command,
                     "reachable": host.name not in errors, "sessions": count,
                     "error": errors.get(host.name)})
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
    else:
        for row in rows:
            state = (f"{row['sessions']} sessions" if row["reachable"]
                     else f"unreachable: {row['error']}")
            print(f"{row['name']}\t{row['ssh']}\t{state}")
    return 1 if errors else 0


# What register() adds: a command's words build only its own group's parser.
COMMANDS = ("hosts",)


def register(sub: Subparsers) -> None:
    p = sub.add_parser("hosts", help="the machines in [[hosts]]: reachable or why not")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_hosts)
