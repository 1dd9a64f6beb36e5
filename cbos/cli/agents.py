"""Agents driving agents: delegate, continue, the MCP server, past conversations, auth."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from cbos.cli.context import Context, read_text_arg, seconds
from cbos.errors import UsageError

if TYPE_CHECKING:
    from cbos.cli.context import Subparsers
    from cbos.delegation import Delegation


def usd(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an amount in USD") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("an amount in USD must be more than 0")
    return value


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _print_delegation(result: Delegation, as_json: bool) -> int:
    if as_json:
        print(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
    else:
        cost = "?" if result.cost_usd is None else f"${result.cost_usd:.4f}"
        if result.reply:
            print(result.reply)
        print(f"{result.slug}: {result.status} ({result.turns} turns, {cost}, "
              f"{result.duration_s:.1f}s)", file=sys.stderr)
        for violation in result.violations:
            print(f"{result.slug}: {violation}", file=sys.stderr)
    return 0 if result.ok else 1


def cmd_delegate(args: argparse.Namespace, ctx: Context) -> int:
    from cbos import api, delegation

    task = read_text_arg(args.task)
    limits = delegation.Limits(args.max_cost, args.max_turns, args.timeout,
                               args.on_permission)
    result = api.delegate(ctx.config, ctx.tmux, Path(args.path), task, slug=args.slug,
                          preset_name=args.preset, model=args.model, limits=limits,
                          context=args.context, group=args.group)
    return _print_delegation(result, args.json)


def cmd_continue(args: argparse.Namespace, ctx: Context) -> int:
    from cbos import api

    result = api.continue_(ctx.config, ctx.tmux, args.slug, read_text_arg(args.text))
    return _print_delegation(result, args.json)


def cmd_conversations(args: argparse.Namespace, ctx: Context) -> int:
    from cbos import transcript

    path = Path(args.path) if args.path else Path.cwd()
    if not path.is_dir():
        raise UsageError(f"{path} is not a directory; give a project directory")
    found = transcript.conversations(path)
    if args.json:
        print(json.dumps([c.to_json() for c in found], indent=2, ensure_ascii=False))
        return 0
    if not found:
        print(f"Claude has no stored conversations for {path.resolve()}", file=sys.stderr)
        return 0
    rows = [("ID", "STARTED", "LAST ACTIVITY", "MSGS", "FIRST PROMPT")]
    rows += [(c.session_id, c.started[:19].replace("T", " "),
              c.last_activity[:19].replace("T", " "), str(c.messages), c.first_prompt[:60])
             for c in found]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join([*(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])),
                         row[4]]).rstrip())
    return 0


def cmd_auth(args: argparse.Namespace, ctx: Context) -> int:
    from cbos import auth

    cred = auth.credential()
    if args.json:
        print(json.dumps({**cred.to_json(), "warning": auth.expiry_warning(cred)}, indent=2))
    else:
        print(auth.describe(cred))
    return 1 if cred.kind == "none" else 0


def cmd_mcp(args: argparse.Namespace, ctx: Context) -> int:
    from cbos import mcp

    mcp.serve(ctx.config, args.max_preset, args.budget, args.allow_approve)
    return 0


def cmd_mcp_install(args: argparse.Namespace, ctx: Context) -> int:
    from cbos import mcp

    entry = mcp.server_entry(mcp.cbos_command(), args.max_preset, args.budget,
                             args.allow_approve)
    print(mcp.install(args.scope, entry))
    return 0


def cmd_mcp_uninstall(args: argparse.Namespace, ctx: Context) -> int:
    from cbos import mcp

    print(mcp.uninstall(args.scope))
    return 0


def cmd_mcp_status(args: argparse.Namespace, ctx: Context) -> int:
    from cbos import mcp

    found = mcp.status()
    if args.json:
        print(json.dumps(found, indent=2))
    else:
        for item in found:
            if item["error"]:
                state = f"cannot tell: {item['error']}"
            elif not item["registered"]:
                state = "not registered"
            else:
                missing = "" if item["command_exists"] else " (that command is missing!)"
                state = f"registered: {item['command']} {' '.join(item['args'] or ())}{missing}"
            print(f"{item['scope']:8} {item['file']}: {state}")
    return 0 if any(item["registered"] for item in found) else 1


def _ceiling(p: argparse.ArgumentParser) -> None:
    from cbos.presets import DEFAULT_PRESET, PRESET_NAMES

    p.add_argument("--max-preset", choices=PRESET_NAMES, default=DEFAULT_PRESET,
                   help=f"the most permissive preset sessions may get (default "
                   f"{DEFAULT_PRESET})")
    p.add_argument("--budget", type=usd, metavar="USD",
                   help="total USD for everything the server starts")
    p.add_argument("--allow-approve", action="store_true",
                   help="let the caller answer yes to other sessions' permission dialogs")


# What register() adds: a command's words build only its own group's parser.
COMMANDS = ("delegate", "continue", "conversations", "mcp", "auth")


def register(sub: Subparsers) -> None:
    from cbos.presets import DEFAULT_PRESET, PRESET_NAMES

    p = sub.add_parser("delegate", help="run a task in a new session under a safety preset "
                       "and limits; exit 0 only when it is done")
    p.add_argument("path", help="project directory")
    p.add_argument("task", nargs="+", help="what the session should do (or - for stdin)")
    p.add_argument("--slug", help="session name (default from git origin or the directory)")
    p.add_argument("--preset", choices=PRESET_NAMES, default=DEFAULT_PRESET,
                   help=f"what the session may do (default {DEFAULT_PRESET}; see README)")
    p.add_argument("--model", help="claude's --model")
    p.add_argument("--max-cost", type=usd, metavar="USD",
                   help="interrupt once the conversation has cost this much")
    p.add_argument("--max-turns", type=positive, metavar="N",
                   help="interrupt after N tool-using model messages")
    p.add_argument("--timeout", type=seconds, default=1800.0, metavar="S",
                   help="interrupt after S seconds (default 1800)")
    p.add_argument("--context", metavar="TEXT",
                   help="background for the session (appended to Claude's system prompt)")
    p.add_argument("--group", metavar="G", help="a group label (`cbos ls --group G`)")
    p.add_argument("--on-permission", choices=("deny", "wait"), default="deny",
                   help="a dialog the preset does not cover: answer no (default), or "
                   "leave it for a person")
    p.add_argument("--json", action="store_true", help="the result as JSON")
    p.set_defaults(handler=cmd_delegate)

    p = sub.add_parser("continue", help="a follow-up to a delegated session under the same "
                       "(cumulative) limits")
    p.add_argument("slug", help="session slug")
    p.add_argument("text", nargs="+", help="what to do next (or - for stdin)")
    p.add_argument("--json", action="store_true", help="the result as JSON")
    p.set_defaults(handler=cmd_continue)

    p = sub.add_parser("conversations", help="Claude's stored conversations for a directory "
                       "(resume one with `cbos new PATH --resume ID`)")
    p.add_argument("path", nargs="?", help="project directory (default: the current one)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_conversations)

    p = sub.add_parser("mcp", help="the MCP server for Claude (stdio); install, uninstall, "
                       "status register it")
    _ceiling(p)
    p.set_defaults(handler=cmd_mcp)
    msub = p.add_subparsers(dest="mcp_command", metavar="ACTION", parser_class=type(p))
    q = msub.add_parser("install", help="register `cbos mcp` in Claude Code's configuration")
    q.add_argument("--scope", choices=("user", "project"), default="user",
                   help="user: ~/.claude.json (default); project: ./.mcp.json")
    _ceiling(q)
    q.set_defaults(handler=cmd_mcp_install)
    q = msub.add_parser("uninstall", help="remove exactly cbos's MCP server entry")
    q.add_argument("--scope", choices=("user", "project"), default="user",
                   help="user: ~/.claude.json (default); project: ./.mcp.json")
    q.set_defaults(handler=cmd_mcp_uninstall)
    q = msub.add_parser("status", help="where the cbos MCP server is registered")
    q.add_argument("--json", action="store_true", help="machine-readable output")
    q.set_defaults(handler=cmd_mcp_status)

    p = sub.add_parser("auth", help="which credential Claude uses, and when a login expires")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_auth)
