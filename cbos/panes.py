"""A tmux pane and the cbos session bound to it, as plain values (no I/O, no tmux).

:mod:`cbos.tmux` fills :class:`Pane` from one listing; :mod:`cbos.sessions` binds a slug and
the claude process to it. The board (:mod:`cbos.model`) works on these values alone, so it
can be built and tested without a tmux server.
"""

from __future__ import annotations

from dataclasses import dataclass

from cbos.procs import Proc


@dataclass(frozen=True)
class Pane:
    """One row of the batched pane listing."""

    pane_id: str
    session_id: str
    session_name: str
    window_id: str
    window_index: str
    pane_index: str
    pid: int | None
    dead: bool
    dead_status: int | None
    dead_signal: int | None
    current_command: str
    current_path: str
    in_mode: bool
    piped: bool
    width: int
    height: int
    attached: bool
    slug: str  # "" when cbos has not adopted the pane
    owned: bool  # cbos created the tmux session around it
    pipe_ours: bool = False  # the pane's pipe is the one cbos armed (PIPE_OPTION)

    @property
    def foreign_pipe(self) -> bool:
        """The pane pipes its output somewhere cbos did not choose: not ours to touch."""
        return self.piped and not self.pipe_ours

    @property
    def target(self) -> str:
        """Human-readable ``session:window.pane`` address (for display only, never -t)."""
        return f"{self.session_name}:{self.window_index}.{self.pane_index}"



@dataclass(frozen=True)
class PaneSession:
    """A pane cbos tracks, with the claude process found in it (if any)."""

    slug: str
    pane: Pane
    claude: Proc | None
    adopted: bool  # claude was started by hand, not by `cbos new`

    @property
    def path(self) -> str:
        return self.pane.current_path
