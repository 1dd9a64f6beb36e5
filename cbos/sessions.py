"""What a cbos session is: a slug bound to one tmux pane running claude.

Slugs live on the pane as the ``@cbos_slug`` option, so they survive cbos restarts and
apply equally to sessions cbos created and to ``claude`` a person started by hand (which
cbos adopts on sight: a slug, and a pipe into its log).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

from cbos.config import Config, ensure_dirs, touch_private
from cbos.errors import CbosError, NotFoundError, UsageError
from cbos.panes import Pane, PaneSession
from cbos.procs import ProcTable
from cbos.tmux import Tmux, which

SLUG_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_SLUG = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_REMOTE_HEADER = re.compile(r'^\s*\[\s*remote\s+"origin"\s*\]\s*$')
_URL_LINE = re.compile(r"^\s*url\s*=\s*(\S.*?)\s*$")


def make_safe(name: str) -> str:
    """Squeeze any name into ``[A-Za-z0-9_-]{1,64}`` (never empty)."""
    safe = _UNSAFE.sub("-", name).strip("-")[:MAX_SLUG].strip("-")
    return safe or "claude"


CONTROL_OK = frozenset({"\n", "\t"})


def check_text(text: str) -> str:
    """Refuse NUL and control characters (bar newline and tab) before anything is typed:
    whatever path text takes into a pane (CLI, API, WebSocket), it is checked here."""
    for index, char in enumerate(text):
        if (ord(char) < 32 or ord(char) == 127) and char not in CONTROL_OK:
            raise UsageError(f"the text has control character {char!r} at position {index}; "
                             "only printable text, newlines and tabs can be sent")
    return text


def validate_slug(slug: str) -> str:
    if not SLUG_RE.match(slug):
        raise UsageError(f"invalid slug {slug!r}: use 1 to {MAX_SLUG} letters, digits, "
                         "'_' or '-'")
    return slug


def _git_dir(path: Path) -> Path | None:
    dot_git = path / ".git"
    if dot_git.is_dir():
        return dot_git
    if dot_git.is_file():  # a worktree or submodule: "gitdir: <path>"
        text = dot_git.read_text(errors="replace").strip()
        if text.startswith("gitdir:"):
            target = Path(text.removeprefix("gitdir:").strip())
            target = target if target.is_absolute() else path / target
            common = target / "commondir"
            if common.is_file():
                return (target / common.read_text().strip()).resolve()
            return target
    return None


def origin_repo_name(path: Path) -> str | None:
    """Repository name of the ``origin`` remote, read from .git/config (no git needed)."""
    git_dir = _git_dir(path)
    if git_dir is None:
        return None
    try:
        lines = (git_dir / "config").read_text(errors="replace").splitlines()
    except OSError:
        return None
    in_origin = False
    for line in lines:
        if line.lstrip().startswith("["):
            in_origin = bool(_REMOTE_HEADER.match(line))
            continue
        match = _URL_LINE.match(line) if in_origin else None
        if match:
            url = match.group(1).strip("\"'").rstrip("/")
            name = re.split(r"[/:]", url)[-1].removesuffix(".git")
            return name or None
    return None


def default_slug(path: Path) -> str:
    """Git origin's repository name upper-cased, else the directory's name, made safe."""
    repo = origin_repo_name(path)
    if repo:
        return make_safe(repo.upper())
    return make_safe(path.resolve().name)


def _unique(base: str, taken: set[str]) -> str:
    if base not in taken:
        return base
    for n in range(2, 10_000):
        suffix = f"-{n}"
        candidate = base[: MAX_SLUG - len(suffix)] + suffix
        if candidate not in taken:
            return candidate
    raise CbosError("could not find a free slug")  # pragma: no cover - 10k sessions


def discover(tmux: Tmux, config: Config, procs: ProcTable | None = None,
             adopt: bool = True) -> list[PaneSession]:
    """Every pane cbos tracks, adopting hand-started claude panes on the way.

    One ``list-panes -a`` and one process-table snapshot serve the whole listing.
    """
    panes = tmux.list_panes()
    if not panes:
        return []
    table = procs if procs is not None else ProcTable.snapshot()
    taken = {p.slug for p in panes if p.slug} | {p.session_name for p in panes if p.owned}
    sessions: list[PaneSession] = []
    for pane in panes:
        if adopt and pane.slug and pane.foreign_pipe and _tees_into_its_log(
                table, config, pane.slug):
            # Armed by a cbos from before pipes were marked: ours, so say so.
            tmux.claim_pipe(pane.pane_id)
            pane = dataclasses.replace(pane, pipe_ours=True)
        claude = None if pane.dead else table.claude_in_pane(pane.pid)
        slug = pane.slug
        if not slug:
            if claude is None or not adopt:
                continue
            slug = _unique(make_safe(pane.session_name), taken)
            taken.add(slug)
            _adopt(tmux, config, pane, slug)
        elif adopt and not pane.dead and not pane.piped:
            # No pipe at all (ours died, or its owner stopped theirs): pipe into the log.
            _start_pipe(tmux, config, pane.pane_id, slug)
        sessions.append(PaneSession(slug=slug, pane=pane, claude=claude, adopted=not pane.owned))
    return sessions


def _tees_into_its_log(table: ProcTable, config: Config, slug: str) -> bool:
    return os.path.realpath(config.log_path(slug)) in table.pipe_logs()


def _start_pipe(tmux: Tmux, config: Config, pane_id: str, slug: str) -> None:
    ensure_dirs(config)
    log = config.log_path(slug)
    touch_private(log)
    tmux.pipe(pane_id, log)


def _adopt(tmux: Tmux, config: Config, pane: Pane, slug: str) -> None:
    tmux.set_pane_option(pane.pane_id, "@cbos_slug", slug)
    # A pane already piped somewhere is someone else's pipe: `pipe-pane` would replace it
    # and `pipe-pane -o` would switch it off. Leave it; the session just has no live log.
    if not pane.piped:
        _start_pipe(tmux, config, pane.pane_id, slug)


def resolve(sessions: Sequence[PaneSession], slug: str) -> PaneSession:
    """The session with exactly this slug (never a prefix match)."""
    for session in sessions:
        if session.slug == slug:
            return session
    names = [s.slug for s in sessions]
    import difflib  # only for this message

    close = difflib.get_close_matches(slug, names, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see `cbos ls`"
    raise NotFoundError(f"no session named {slug!r}{hint}")


def find(tmux: Tmux, config: Config, slug: str) -> PaneSession:
    return resolve(discover(tmux, config), slug)


def claude_argv(config: Config, extra: Sequence[str] = ()) -> list[str]:
    """The claude command as argv, checked to exist on PATH."""
    try:
        argv = shlex.split(config.claude_command)
    except ValueError as exc:
        raise UsageError(f"CBOS_CLAUDE_COMMAND cannot be parsed ({exc}); quote it "
                         "as a shell command line") from None
    if not argv:
        raise UsageError("CBOS_CLAUDE_COMMAND is empty; set it to the claude command")
    if which(argv[0]) is None:
        raise CbosError(f"claude command {argv[0]!r} not found; install Claude Code "
                        "(npm install -g @anthropic-ai/claude-code) or set "
                        "CBOS_CLAUDE_COMMAND to its path")
    return [*argv, *extra]


def create(
    tmux: Tmux,
    config: Config,
    path: Path,
    slug: str | None = None,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> PaneSession:
    """Start claude in ``path`` in a new tmux session named after the slug."""
    if not path.exists():
        raise UsageError(f"path {str(path)!r} does not exist; give an existing directory")
    if not path.is_dir():
        raise UsageError(f"path {str(path)!r} is not a directory; give a directory")
    path = path.resolve()
    slug = validate_slug(slug) if slug is not None else default_slug(path)
    argv = claude_argv(config, extra_args)
    panes = tmux.list_panes()
    if slug in {p.slug for p in panes} | {p.session_name for p in panes}:
        raise UsageError(f"slug {slug!r} is taken; pick another with --slug")
    ensure_dirs(config)
    log = config.log_path(slug)
    touch_private(log)
    full_env = {**config.claude_env, **(env or {}), "CBOS_SESSION": slug}
    command = "exec " + shlex.join(argv)
    pane = tmux.new_session(slug, path, command, full_env, log, config.history_limit)
    return PaneSession(slug=slug, pane=pane, claude=None, adopted=False)

