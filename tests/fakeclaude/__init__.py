"""The fake Claude Code for cbos tests, as a package of named parts.

- ``main``: the interactive fake itself (the event loop, prompts, turns, the transcript;
  run as ``claude`` in a tmux pane, or ``python -m tests.fakeclaude``);
- ``screens``: the dialog frames it draws, shared with the dialog parser's tests;
- ``startup``: workspace trust and ``.mcp.json`` servers, asked before the session starts;
- ``hooks``: which hook commands run for an event (settings, matchers);
- ``status``: Claude's own status file ``sessions/<pid>.json``;
- this module: :func:`install_fake_claude`, which puts it on a PATH as ``claude``.

Test helpers that are not the fake (``wait_until`` and friends) live in tests/support.py.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

FAKE_CLAUDE = Path(__file__).resolve().with_name("main.py")
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "claude-code-2.1.328"


def install_fake_claude(bin_dir: Path) -> Path:
    """Write an executable ``claude`` shim into ``bin_dir`` and return its path.

    The shim execs this interpreter on the fake, so the pane's process keeps the shim's
    pid. ``exec -a claude`` makes argv[0] "claude": tmux's ``pane_current_command`` reads
    it (the real CLI shows ``claude`` there); the fake also writes "claude" to
    /proc/self/comm, which ps and psutil's ``name()`` read.
    """
    bash = shutil.which("bash") or "/bin/bash"
    shim = bin_dir / "claude"
    shim.write_text(
        f"#!{bash}\n"
        "# Fake Claude Code for cbos tests (tests/fakeclaude/main.py).\n"
        # Python finds its own files from argv[0], searching PATH for "claude" when it has
        # no slash: the shim's directory goes first, or a real claude installed in /usr/bin
        # would make this interpreter take /usr/lib/python3.11 for its standard library.
        f"PATH={shlex.quote(str(bin_dir))}:$PATH\n"
        f'exec -a claude {shlex.quote(sys.executable)} {shlex.quote(str(FAKE_CLAUDE))} "$@"\n',
        encoding="utf-8",
    )
    shim.chmod(0o755)
    return shim
