"""The scripting commands: chat, history, resume, fork, up.

The work is done by :mod:`cbos.api`; this module parses and prints. ``cbos up`` reads a
TOML file of sessions (the format is in :func:`parse_up`), checks all of it before
starting anything, leaves running slugs alone, and types each first prompt once that
session shows its composer.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cbos.cli import remote
from cbos.cli.context import Context, is_remote, read_text_arg, seconds
from cbos.config import ENV_NAME_RE
from cbos.errors import CbosError, UsageError

if TYPE_CHECKING:
    from cbos.cli.context import Subparsers
    from cbos.transcript import Message

CLIP_LINES = 15  # lines of a message `cbos history` shows without --full


# -- chat -----------------------------------------------------------------------------------


def cmd_chat(args: argparse.Namespace, ctx: Context) -> int:
    from cbos import api

    text = read_text_arg(args.text)
    if is_remote(args.slug):
        return remote.chat(args, ctx, text)
    result = api.chat(ctx.config, ctx.tmux, args.slug, text, args.timeout)
    if args.json:
        print(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
    else:
        print(result.reply)
    return 0


# -- history --------------------------------------------------------------------------------


def format_history(messages: Sequence[Message], full: bool) -> str:
    """Prompts as ``❯ text`` and replies as ``● text``, the way Claude's screen shows them;
    without ``full`` a long message keeps its first CLIP_LINES lines."""
    marks = {"prompt": "❯", "text": "●", "tool_use": "→", "tool_result": "⎿",
             "thinking": "✻", "meta": "·"}
    blocks = []
    for message in messages:
        lines = message.text.splitlines() or [""]
        if not full and len(lines) > CLIP_LINES:
            more = len(lines) - CLIP_LINES
            lines = [*lines[:CLIP_LINES], f"… ({more} more lines; --full shows all)"]
        mark = marks.get(message.kind, "·")
        rest = (f"  {line}" if line else "" for line in lines[1:])
        blocks.append("\n".join([f"{mark} {lines[0]}", *rest]))
    return "\n\n".join(blocks)


def cmd_history(args: argparse.Namespace, ctx: Context) -> int:
    from cbos import api

    if is_remote(args.slug):
        return remote.history(args, ctx)
    found = api.history(ctx.config, ctx.tmux, args.slug, full=args.full)
    if args.json:
        print(json.dumps(found.to_json(), indent=2, ensure_ascii=False))
        return 0
    if not found.messages:
        print(f"{args.slug}: nothing said yet in conversation {found.session_id}",
              file=sys.stderr)
        return 0
    print(format_history(found.messages, args.full))
    return 0


# -- resume, fork ---------------------------------------------------------------------------


def cmd_resume(args: argparse.Namespace, ctx: Context) -> int:
    from cbos import api

    done = api.resume(ctx.config, ctx.tmux, args.slug)
    where = "in its pane" if done.how == "respawned" else "in a new tmux session"
    print(f"resumed {done.slug} {where} (conversation {done.session_id})")
    return 0


def cmd_fork(args: argparse.Namespace, ctx: Context) -> int:
    from cbos import api

    done = api.fork(ctx.config, ctx.tmux, args.slug, args.new_slug)
    print(done.slug)
    return 0


# -- up ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UpEntry:
    """One ``[[session]]`` of an up file, checked."""

    slug: str
    path: Path
    prompt: str | None = None
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)


SESSION_KEYS = ("slug", "path", "prompt", "args", "env")
DEFAULT_KEYS = ("args", "env")
# Flags cbos sets itself (the conversation, the hooks) or that make claude non-interactive.
FORBIDDEN_ARGS = frozenset({"--resume", "-r", "--continue", "-c", "--fork-session",
                            "--session-id", "--settings", "--print", "-p"})


def _where(index: int, raw: Mapping[str, Any]) -> str:
    slug = raw.get("slug")
    named = f" ({slug})" if isinstance(slug, str) and slug else ""
    return f"session {index}{named}"


def _args(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise UsageError(f"{where}: args must be a list of strings, e.g. "
                         '["--permission-mode", "acceptEdits"]')
    for arg in value:
        if arg.partition("=")[0] in FORBIDDEN_ARGS:
            raise UsageError(f"{where}: args may not hold {arg.partition('=')[0]} (cbos sets "
                             "the conversation and hooks itself; sessions are interactive)")
    return tuple(value)


def _env(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise UsageError(f'{where}: env must be a table of strings, e.g. env = {{ K = "v" }}')
    for name, item in value.items():
        if not ENV_NAME_RE.match(name):
            raise UsageError(f"{where}: env has {name!r}, which is not a variable name")
        if not isinstance(item, str):
            raise UsageError(f"{where}: env {name} must be a string (quote it)")
    return dict(value)


def _unknown(raw: Mapping[str, Any], known: Sequence[str], where: str) -> None:
    extra = sorted(set(raw) - set(known))
    if extra:
        raise UsageError(f"{where}: unknown key {extra[0]!r}; known keys: {', '.join(known)}")


def parse_up(text: str, base: Path) -> list[UpEntry]:
    """Check a whole up file; the first problem raises UsageError naming the entry.

    ::

        [defaults]                      # optional, applies to every session
        args = ["--permission-mode", "acceptEdits"]
        env = { NODE_ENV = "test" }

        [[session]]
        slug = "AUTH"                   # optional: default from git origin or the directory
        path = "~/code/auth"            # required; relative to this file's directory
        prompt = "run the tests and fix what fails"   # optional first prompt
        args = ["--model", "sonnet"]    # optional, after the defaults' args
        env = { DEBUG = "1" }           # optional, over the defaults' env

    Paths must be existing directories and slugs unique within the file.
    """
    import tomllib  # here: only `cbos up` parses a sessions file

    from cbos.sessions import SLUG_RE, check_text, default_slug

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"not valid TOML: {exc}") from None
    _unknown(data, ("defaults", "session"), "the file")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise UsageError("defaults must be a table: [defaults]")
    _unknown(defaults, DEFAULT_KEYS, "defaults")
    common_args = _args(defaults.get("args", []), "defaults")
    common_env = _env(defaults.get("env", {}), "defaults")
    raw_sessions = data.get("session")
    if not isinstance(raw_sessions, list) or not raw_sessions:
        raise UsageError("no sessions: describe each one in a [[session]] table with at "
                         "least a path")
    entries: list[UpEntry] = []
    seen: dict[str, str] = {}
    for index, raw in enumerate(raw_sessions, 1):
        if not isinstance(raw, dict):
            raise UsageError(f"session {index}: must be a [[session]] table")
        where = _where(index, raw)
        _unknown(raw, SESSION_KEYS, where)
        path_value = raw.get("path")
        if not isinstance(path_value, str) or not path_value.strip():
            raise UsageError(f'{where}: path is required, e.g. path = "~/code/project"')
        path = base / os.path.expanduser(path_value)
        if not path.is_dir():
            problem = "is not a directory" if path.exists() else "does not exist"
            raise UsageError(f"{where}: path {str(path)!r} {problem}")
        slug = raw.get("slug")
        if slug is None:
            slug = default_slug(path)
        if not isinstance(slug, str) or not SLUG_RE.match(slug):
            raise UsageError(f"{where}: invalid slug {slug!r}: use 1 to 64 letters, digits, "
                             "'_' or '-'")
        if slug in seen:
            raise UsageError(f"{where}: slug {slug} is already used by {seen[slug]}")
        seen[slug] = f"session {index}"
        prompt = raw.get("prompt")
        if prompt is not None:
            if not isinstance(prompt, str) or not prompt.strip():
                raise UsageError(f"{where}: prompt must be non-empty text")
            try:
                check_text(prompt)
            except UsageError as exc:
                raise UsageError(f"{where}: prompt: {exc}") from None
        args = (*common_args, *_args(raw.get("args", []), where))
        env = {**common_env, **_env(raw.get("env", {}), where)}
        entries.append(UpEntry(slug, path.resolve(), prompt, args, env))
    return entries


def load_up(file: str) -> list[UpEntry]:
    path = Path(file)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{file}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{file}: cannot read it ({exc})") from None
    try:
        return parse_up(text, path.resolve().parent)
    except UsageError as exc:
        raise UsageError(f"{file}: {exc}") from None


def cmd_up(args: argparse.Namespace, ctx: Context) -> int:
    entries = load_up(args.file)  # everything is checked before anything starts
    the_core = ctx.core()
    running = {v.slug: v for v in the_core.snapshot().sessions}
    taken = set(ctx.tmux.session_names())
    failed = 0
    started: dict[str, str] = {}
    for entry in entries:
        view = running.get(entry.slug)
        if view is not None:
            note = "" if view.pid else f" (claude is not running: `cbos resume {entry.slug}`)"
            print(f"{entry.slug}: already running, left alone{note}")
            continue
        if entry.slug in taken:
            failed += 1
            print(f"{entry.slug}: failed: a tmux session of that name exists and is not a "
                  "cbos session; rename it or pick another slug", file=sys.stderr)
            continue
        try:
            session = the_core.create(entry.path, entry.slug, list(entry.args), entry.env)
        except CbosError as exc:
            failed += 1
            print(f"{entry.slug}: failed: {exc}", file=sys.stderr)
            continue
        started[entry.slug] = session.pane.pane_id
        if entry.prompt is None:
            print(f"{entry.slug}: started")
    prompts = {e.slug: e.prompt for e in entries if e.slug in started and e.prompt}
    if prompts:
        failed += _first_prompts(ctx, {s: started[s] for s in prompts}, prompts)
    return 1 if failed else 0


def _first_prompts(ctx: Context, panes: dict[str, str], prompts: Mapping[str, str]) -> int:
    """Type each first prompt once its session shows the composer; the number that failed."""
    from cbos import api

    problems = api.wait_composer(ctx.tmux, panes, api.READY_TIMEOUT)
    failed = 0
    the_core = ctx.core()
    for slug, prompt in prompts.items():
        if slug in problems:
            failed += 1
            print(f"{slug}: started, but the prompt was not sent: {problems[slug]}",
                  file=sys.stderr)
            continue
        try:
            the_core.send(slug, prompt)
        except CbosError as exc:
            failed += 1
            print(f"{slug}: started, but the prompt was not sent: {exc}", file=sys.stderr)
            continue
        print(f"{slug}: started, prompt sent")
    return failed


# What register() adds: a command's words build only its own group's parser.
COMMANDS = ("chat", "history", "resume", "fork", "up")


def register(sub: Subparsers) -> None:
    p = sub.add_parser("chat", help="send a prompt, wait for the turn to end, print the reply")
    p.add_argument("slug", help="session: SLUG, or HOST:SLUG on another machine")
    p.add_argument("text", nargs="+", metavar="TEXT", help="the prompt, or - for stdin")
    p.add_argument("--timeout", type=seconds, default=600.0, metavar="S",
                   help="give up after S seconds (default 600)")
    p.add_argument("--json", action="store_true",
                   help="reply, duration, and token and cost figures as JSON")
    p.set_defaults(handler=cmd_chat)

    p = sub.add_parser("history", help="a session's prompts and replies, from its transcript")
    p.add_argument("slug", help="session: SLUG, or HOST:SLUG on another machine")
    p.add_argument("--full", action="store_true", help="whole replies, tool calls included")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_history)

    p = sub.add_parser("resume", help="restart claude in a session, continuing its conversation")
    p.add_argument("slug", help="session slug")
    p.set_defaults(handler=cmd_resume)

    p = sub.add_parser("fork", help="a new session continuing a session's conversation")
    p.add_argument("slug", help="session to fork")
    p.add_argument("new_slug", metavar="NEWSLUG", help="slug of the new session")
    p.set_defaults(handler=cmd_fork)

    p = sub.add_parser("up", help="start the sessions described in a TOML file")
    p.add_argument("file", help="the TOML file")
    p.set_defaults(handler=cmd_up)
