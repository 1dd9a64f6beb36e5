"""Safety presets for sessions one program starts for another: the Claude arguments of
each level of trust (permission mode, allowed and removed tools), ordered so a server can
cap what its callers may ask for. Small and import-light: the CLI lists the names in its
parser for every command."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cbos.errors import RefusedError, UsageError

READ_TOOLS = ("Read", "Glob", "Grep")
EDIT_TOOLS = ("Edit", "Write", "NotebookEdit")
GIT_READ = ("Bash(git diff *)", "Bash(git log *)", "Bash(git show *)", "Bash(git status *)",
            "Bash(git blame *)")
# The allowed git words can still write or run things through options: --output=FILE
# writes the diff to any path, --ext-diff runs the configured external diff program.
# Claude Code checks deny rules before allow rules and its * matches any run of
# characters, so these scoped denies close the options whatever their position.
GIT_WRITES = ("Bash(git *--output*)", "Bash(git *--ext-diff*)")


@dataclass(frozen=True)
class Preset:
    """Claude arguments for one level of trust; ``rank`` orders them for ``--max-preset``."""

    name: str
    rank: int
    mode: str  # --permission-mode
    allowed: tuple[str, ...]  # run without asking
    disallowed: tuple[str, ...]  # removed from the model's tools
    allows: str  # what it allows, in words (the README table)

    def args(self) -> list[str]:
        args = ["--permission-mode", self.mode]
        if self.allowed:
            args += ["--allowedTools", *self.allowed]
        if self.disallowed:
            args += ["--disallowedTools", *self.disallowed]
        return args


PRESETS: Mapping[str, Preset] = {p.name: p for p in (
    Preset("read-only", 0, "default", READ_TOOLS,
           (*EDIT_TOOLS, "Bash", "WebFetch", "WebSearch"),
           "read and search files; no edits, no commands, no web"),
    Preset("plan", 1, "plan", READ_TOOLS, (*EDIT_TOOLS, "WebFetch"),
           "Claude's plan mode: read, search and propose a plan (the plan is the reply); "
           "nothing is changed"),
    Preset("review", 2, "default", (*READ_TOOLS, *GIT_READ), (*EDIT_TOOLS, *GIT_WRITES),
           "read and search files, git diff/log/show/status/blame (without --output or "
           "--ext-diff); no edits, other commands are asked (answered no)"),
    Preset("edit", 3, "acceptEdits", (*READ_TOOLS, *EDIT_TOOLS), (),
           "read, and edit files in the project without asking; commands are asked "
           "(answered no)"),
    Preset("full", 4, "acceptEdits",
           (*READ_TOOLS, *EDIT_TOOLS, "Bash", "WebFetch", "WebSearch", "Agent", "TodoWrite"),
           (), "edits, any shell command, the web and subagents without asking; MCP tools "
           "and anything else are asked (answered no). Works as root (no bypass mode)"),
)}
PRESET_NAMES = tuple(sorted(PRESETS, key=lambda name: PRESETS[name].rank))
DEFAULT_PRESET = "edit"


def preset(name: str) -> Preset:
    found = PRESETS.get(name)
    if found is None:
        raise UsageError(f"unknown preset {name!r}; use one of {', '.join(PRESET_NAMES)}")
    return found


def check_ceiling(name: str, ceiling: str) -> Preset:
    """The preset, unless it allows more than ``ceiling`` (then a RefusedError saying so)."""
    wanted, top = preset(name), preset(ceiling)
    if wanted.rank > top.rank:
        allowed = ", ".join(n for n in PRESET_NAMES if PRESETS[n].rank <= top.rank)
        raise RefusedError(f"preset {name!r} allows more than this server's ceiling "
                           f"{ceiling!r}; use one of {allowed}")
    return wanted
