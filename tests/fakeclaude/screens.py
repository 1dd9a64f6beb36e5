"""The dialog frames of Claude Code 2.1.328, drawn for any pane width (stdlib only).

Each function returns the screen rows of one dialog as the real CLI lays them out; at 160
columns they match the recordings row for row (tests/test_dialog.py checks it), and at
other widths text is wrapped at word boundaries as Ink does. The fake claude draws them,
and the dialog parser's tests read them at widths 60-250.

Recordings: ``blockers/trust``, ``blockers/mcp-json``, ``blockers/plan-approval``,
``screens/09_permission_prompt``, ``screens/13_ask_user_question``,
``screens/19_add_dir_trust_dialog``.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

MIDDOT = "\u00b7"
RULE = "─"
PROMPT_MARK = "\u276f"
DASHED = "╌"
CONFIRM_FOOTER = f"Enter to confirm {MIDDOT} Esc to cancel"
ASK_FOOTER = f"Enter to select {MIDDOT} ↑/↓ to navigate {MIDDOT} Esc to cancel"
ASK_TABS_FOOTER = f"Enter to select {MIDDOT} Tab/Arrow keys to navigate {MIDDOT} Esc to cancel"
PERMISSION_FOOTER = f"Esc to cancel {MIDDOT} Tab to amend"

TRUST_OPTIONS = ("No, exit", "Yes, I trust this folder")
TRUST_QUESTION = ("Quick safety check: Is this a project you created or one you trust? (Like "
                  "your own code, a well-known open source project, or work from your team). "
                  "If not, take a moment to review what's in this folder first.")
TRUST_NOTE = "Claude Code'll be able to read, edit, and execute files here."
MCP_OPTIONS = ("Use this MCP server", "Use this and all future MCP servers in this project",
               "Continue without using this MCP server")
MCP_NOTE = ("MCP servers may execute code or access system resources. All tool calls "
            "require approval. Learn more in the MCP documentation.")
PLAN_OPTIONS = ("Yes, and switch to default (ask each time) for this session", "No")
ADD_DIR_OPTIONS = ("No, leave it out", "Yes, add it")
ADD_DIR_QUESTION = ("This session hasn't worked here before. Is this a directory you created "
                    "or one you trust?")
ADD_DIR_NOTE = ("Claude Code'll be able to read, edit, and execute files here. Its skills, "
                "commands, and agents load and can run commands, and so can the git settings "
                "of its repository. Your answer holds for this session. Starting Claude Code "
                "in this directory and trusting it there lasts, and covers its whole "
                "repository or everything below it.")


def wrap(text: str, width: int, indent: str = "") -> list[str]:
    """``text`` broken at spaces into rows of at most ``width`` cells, each indented."""
    rows = textwrap.wrap(text, max(8, width - len(indent)), break_on_hyphens=False) or [""]
    return [indent + row for row in rows]


def _unnumbered(options: Sequence[str], selected: int, pad: str, cols: int) -> list[str]:
    out = []
    for index, label in enumerate(options):
        mark = f"{PROMPT_MARK} " if index == selected else "  "
        room = cols - len(pad) - 2 - 1
        shown = label if len(label) <= room else label[:room - 1] + "…"
        out.append(f"{pad}{mark}{shown}")
    return out


def _numbered(options: Sequence[str], selected: int, pad: str, cols: int) -> list[str]:
    out = []
    for index, label in enumerate(options):
        mark = f"{PROMPT_MARK} " if index == selected else "  "
        head = f"{pad}{mark}{index + 1}. "
        rows = wrap(label, cols - 1 - len(head))
        out.append(head + rows[0])
        out += [" " * len(head) + row for row in rows[1:]]
    return out


def trust(cols: int, folder: str, selected: int = 0) -> list[str]:
    """blockers/trust: workspace trust, before SessionStart; no numbers on its options."""
    width = cols - 1
    return [
        RULE * cols, " Accessing workspace:", "", f" {folder}", "",
        *wrap(TRUST_QUESTION, width, " "), "", *wrap(TRUST_NOTE, width, " "), "",
        " Security guide", "", *_unnumbered(TRUST_OPTIONS, selected, " ", cols), "",
        f" {CONFIRM_FOOTER}",
    ]


def mcp_servers(cols: int, name: str, selected: int = 2) -> list[str]:
    """blockers/mcp-json: a project's .mcp.json server; the cursor starts on the third."""
    width = cols - 2
    return [
        RULE * cols, f"  New MCP server found in this project: {name}", "",
        *wrap(MCP_NOTE, width, "  "), "", *_unnumbered(MCP_OPTIONS, selected, "  ", cols), "",
        f"  {CONFIRM_FOOTER}",
    ]


def plan_approval(cols: int, selected: int = 0) -> list[str]:
    """blockers/plan-approval: ExitPlanMode. The recording's footer was below the 50th row;
    what follows the options here is a guess of the same family's footer."""
    return [
        "▔" * cols, "", "  " + RULE * (cols - 4), "   Exit plan mode?", "",
        "    Claude wants to exit plan mode", "",
        *_numbered(PLAN_OPTIONS, selected, "    ", cols), "",
        f"   {CONFIRM_FOOTER}",
    ]


def add_dir(cols: int, directory: str, selected: int = 0) -> list[str]:
    """screens/19: /add-dir asks whether to trust the directory."""
    width = cols - 3
    return [
        "▔" * cols, "", "  " + RULE * (cols - 4), "   Adding a new directory:", "",
        f"   {directory}", "", *wrap(ADD_DIR_QUESTION, width, "   "), "",
        *wrap(ADD_DIR_NOTE, width, "   "), "", "   Security guide", "",
        *_unnumbered(ADD_DIR_OPTIONS, selected, "   ", cols), "", f"   {CONFIRM_FOOTER}",
    ]


def write_permission(cols: int, shown_path: str, file_name: str, content: Sequence[str],
                     options: Sequence[str], selected: int = 0, create: bool = True,
                     ) -> list[str]:
    """screens/09: the Write tool asks; option 2 wraps under its own text."""
    verb = "create" if create else "overwrite"
    out = [RULE * cols, f" {'Create' if create else 'Overwrite'} file", f" {shown_path}",
           DASHED * cols]
    out += [f"  {n} {line}" for n, line in enumerate(content, 1)]
    out += [DASHED * cols, f" Do you want to {verb} {file_name}?"]
    out += _numbered(options, selected, " ", cols)
    out += ["", f" {PERMISSION_FOOTER}"]
    return out


def ask(cols: int, question: str, options: Sequence[tuple[str, str]], selected: int = 0,
        headers: Sequence[str] = ("Choice",), multi: bool = False,
        checked: Sequence[int] = ()) -> list[str]:
    """screens/13: AskUserQuestion. With several questions the header row lists them all
    as tabs (and a Submit tab); a multi-select question shows a checkbox per option."""
    def mark(index: int) -> str:
        return PROMPT_MARK if index == selected else " "

    if len(headers) > 1:
        top = "←  " + "  ".join(f"☐ {h}" for h in headers) + "  ✔ Submit  →"
    else:
        top = f" ☐ {headers[0]}"
    out = [RULE * cols, top, "", *wrap(question, cols - 1), ""]
    for index, (label, description) in enumerate(options):
        box = ("[✔] " if index in checked else "[ ] ") if multi else ""
        head = f"{mark(index)} {index + 1}. {box}"
        rows = wrap(label, cols - 1 - len(head))
        out.append(head + rows[0])
        out += wrap(description, cols - 1, "     ")
    n = len(options)
    out += [f"{mark(n)} {n + 1}. Type something.", RULE * cols,
            f"{mark(n + 1)} {n + 2}. Chat about this", ""]
    out.append(ASK_TABS_FOOTER if len(headers) > 1 else ASK_FOOTER)
    return out
