"""What every command group shares: the handler's `Context`, the parser class, argument
types, and the session-targeting rules (one slug, A,B, --all, --state).

The modules here are the top floor of cbos: they import from every other module, and no
other module imports them. Heavy imports stay inside functions so that a command pays only
for what it uses.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cbos import config as config_mod
from cbos.errors import CbosError, UsageError

if TYPE_CHECKING:
    from cbos.core import Core
    from cbos.hosts import Address, Remote
    from cbos.model import SessionView
    from cbos.tmux import Tmux


@dataclass
class Context:
    """What every handler gets: the resolved config and a lazily built tmux handle."""

    config: config_mod.Config
    _tmux: Tmux | None = field(default=None, repr=False)

    @property
    def tmux(self) -> Tmux:
        if self._tmux is None:
            from cbos.tmux import Tmux

            self._tmux = Tmux(self.config.tmux_socket)
        return self._tmux

    def core(self) -> Core:
        """A Core that has applied the event backlog and looked at tmux once."""
        from cbos.core import Core

        return Core(self.config, self.tmux).load()


Handler = Callable[[argparse.Namespace, Context], int]


class Parser(argparse.ArgumentParser):
    """argparse that reports errors as one `cbos: ...` line with exit status 2.

    No abbreviations: `--all` must never be read as a prefix of `--allow-remote`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> Any:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


if TYPE_CHECKING:
    from typing import TypeAlias

    Subparsers: TypeAlias = argparse._SubParsersAction[Parser]


def read_text_arg(words: Sequence[str]) -> str:
    """TEXT... joined by spaces, or standard input when the only word is ``-``."""
    from cbos.sessions import check_text

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


def targets(args: argparse.Namespace, words: list[str], the_core: Core,
            remotes: Remotes | None = None) -> tuple[list[str], list[str]]:
    """(slugs, remaining words) for commands that take one slug, several (A,B) or a group
    (--all, --state); with ``remotes``, HOST:SLUG names and every host's sessions too."""
    views = the_core.snapshot().sessions
    if remotes is not None and (args.all or args.state):
        views = tuple(all_views(remotes.ctx, views))
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
        # Unknown names fail before anything is typed anywhere.
        if ":" in slug and remotes is not None:
            remotes.remote(slug)
        else:
            the_core.session(slug)
    return slugs, words[1:]


def for_each(slugs: list[str], action: Callable[[str], object], verb: str) -> int:
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


def parse_states(text: str) -> set[str]:
    from cbos.state import State

    names = {part.strip().lower() for part in text.split(",") if part.strip()}
    valid = {s.value for s in State}
    unknown = names - valid
    if unknown or not names:
        raise UsageError(f"unknown state {', '.join(sorted(unknown)) or repr(text)}; "
                         f"use a comma-separated list of {', '.join(s.value for s in State)}")
    return names


# -- argument types ----------------------------------------------------------------------


def depth(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 20:
        raise argparse.ArgumentTypeError("depth must be from 0 to 20")
    return value


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError("seconds must be 0 or more")
    return value


def lines(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("lines must be greater than 0")
    return value


def port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("a port is from 0 to 65535")
    return value


def group_options(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--all", action="store_true", help="every session that is not exited")
    group.add_argument("--state", metavar="S",
                       help="sessions in these states (comma-separated, e.g. waiting)")


def server_options(p: argparse.ArgumentParser, ws_prefix: bool = False) -> None:
    """--host/--port/... on the top level (for --ws) and again on `serve`.

    On `serve` the defaults are SUPPRESS, so `cbos --host X serve` keeps the X given
    before the subcommand instead of a subparser default overwriting it.
    """
    what = " (with --ws)" if ws_prefix else ""
    kw: dict[str, Any] = {} if ws_prefix else {"default": argparse.SUPPRESS}
    p.add_argument("--host", help=f"bind address{what} (default CBOS_API_HOST, 127.0.0.1)",
                   **kw)
    p.add_argument("--port", type=port, help=f"port{what} (default CBOS_API_PORT, 32205)",
                   **kw)
    p.add_argument("--allow-remote", action="store_true",
                   help=f"allow a non-loopback bind{what}; every client then needs the token",
                   **kw)
    p.add_argument("--allow-origin", action="append", metavar="ORIGIN",
                   help=f"a browser Origin allowed to connect{what} (repeatable)",
                   **(kw or {"default": []}))
    p.add_argument("--web", action="store_true",
                   help=f"also serve the browser page on the same port{what}; prints its "
                        "address, token included", **kw)


# -- other machines' sessions (HOST:SLUG) --------------------------------------------------


class Remotes:
    """One :class:`~cbos.hosts.Remote` per host, opened on first use, closed at the end."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._open: dict[str, Remote] = {}

    def address(self, name: str) -> Address:
        from cbos import hosts

        return hosts.address(self.ctx.config, name)

    def remote(self, name: str) -> tuple[Remote, str]:
        """The connection to ``name``'s host and the bare slug; the session must exist."""
        from cbos.hosts import Remote

        where = self.address(name)
        assert where.host is not None
        remote = self._open.get(where.host.name)
        if remote is None:
            remote = self._open[where.host.name] = Remote(self.ctx.config, where.host)
        if not any(v.slug == where.name for v in remote.views):
            raise UsageError(f"no session named {where.slug!r} on {where.host.name}; "
                             f"`cbos ls` lists them")
        return remote, where.slug

    def view(self, name: str) -> SessionView:
        remote, _ = self.remote(name)
        return next(v for v in remote.views if v.slug == name)

    def ask(self, name: str, kind: str, **fields: Any) -> dict[str, Any]:
        remote, slug = self.remote(name)
        return remote.ask(kind, session=slug, **fields)

    def __enter__(self) -> Remotes:
        return self

    def __exit__(self, *exc: object) -> None:
        for remote in self._open.values():
            remote.close()


def is_remote(name: str | None) -> bool:
    return name is not None and ":" in name


def all_views(ctx: Context, local: Sequence[SessionView]) -> list[SessionView]:
    """This machine's views and every reachable host's; unreachable hosts on stderr."""
    if not ctx.config.hosts:
        return list(local)
    from cbos import hosts

    remote, errors = hosts.gather(ctx.config)
    for host in ctx.config.hosts:
        if host.name in errors:
            print(f"cbos: {errors[host.name]}", file=sys.stderr)
    return [*local, *remote]
