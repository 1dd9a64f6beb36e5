"""Commands that wire cbos into its surroundings: Claude's hooks, tmux's status line and
plugin, and the search for projects."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from cbos.cli.context import Context, depth
from cbos.errors import CbosError, UsageError

if TYPE_CHECKING:
    from cbos.cli.context import Subparsers


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
    # share/ five levels above site-packages/cbos/cli/integration.py), then sys.prefix.
    prefix = here.parents[5] if len(here.parents) > 5 else Path(sys.prefix)
    candidates = [here.parents[2] / "tmux" / "cbos.tmux",
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


# What register() adds: a command's words build only its own group's parser.
COMMANDS = ("hooks", "status", "plugin-path", "projects")


def register(sub: Subparsers) -> None:
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
    p.add_argument("--depth", type=depth, default=4, help="how deep to look (default 4)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_projects)
