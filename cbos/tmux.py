"""The only module that talks to tmux (through libtmux).

Every tmux call goes through :meth:`Tmux.cmd`. Listings are lenient (no server means no
panes); actions are loud (a failure raises :class:`~cbos.errors.TmuxError` with tmux's own
words). Panes and sessions are always addressed by id (``%7``, ``$3``): tmux matches names
by prefix, and typing into the wrong session is the one mistake cbos must never make.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from cbos.errors import RefusedError, TmuxError
from cbos.panes import Pane

if TYPE_CHECKING:
    import libtmux

MIN_VERSION = (3, 2)
SEP = "\x1f"  # unit separator: never in slugs, and tmux passes it through unescaped
SLUG_OPTION = "@cbos_slug"
OWNED_OPTION = "@cbos_owned"  # set on tmux sessions that cbos created (kill-session is ok)

# (format, attribute) pairs of one batched `list-panes -a` query.
_PANE_FORMAT = (
    "pane_id", "session_id", "session_name", "window_id", "window_index", "pane_index",
    "pane_pid", "pane_dead", "pane_dead_status", "pane_dead_signal", "pane_current_command",
    "pane_current_path", "pane_in_mode", "pane_pipe", "pane_width", "pane_height",
    "session_attached", SLUG_OPTION, OWNED_OPTION,
)
_NO_SERVER = ("no server running", "error connecting to", "server exited unexpectedly")


def _int(text: str) -> int | None:
    return int(text) if text.lstrip("-").isdigit() else None


def _parse_pane(line: str) -> Pane | None:
    parts = line.split(SEP)
    if len(parts) != len(_PANE_FORMAT):
        return None
    f = dict(zip(_PANE_FORMAT, parts, strict=True))
    return Pane(
        pane_id=f["pane_id"], session_id=f["session_id"], session_name=f["session_name"],
        window_id=f["window_id"], window_index=f["window_index"],
        pane_index=f["pane_index"], pid=_int(f["pane_pid"]), dead=f["pane_dead"] == "1",
        dead_status=_int(f["pane_dead_status"]), dead_signal=_int(f["pane_dead_signal"]),
        current_command=f["pane_current_command"],
        current_path=f["pane_current_path"], in_mode=f["pane_in_mode"] == "1",
        piped=f["pane_pipe"] == "1", width=_int(f["pane_width"]) or 0,
        height=_int(f["pane_height"]) or 0, attached=f["session_attached"] not in ("", "0"),
        slug=f[SLUG_OPTION], owned=f[OWNED_OPTION] == "1",
    )


PANE_FORMAT = SEP.join(f"#{{{name}}}" for name in _PANE_FORMAT)


def parse_panes(lines: Iterable[str]) -> list[Pane]:
    return [pane for pane in map(_parse_pane, lines) if pane is not None]


def quick_list_panes(socket_name: str | None) -> list[Pane]:
    """The pane listing without libtmux, for the status line's start-up budget."""
    args = [tmux_binary(), *([f"-L{socket_name}"] if socket_name else []),
            "list-panes", "-a", "-F", PANE_FORMAT]
    proc = subprocess.run(args, capture_output=True, check=False)
    if proc.returncode != 0:
        return []
    return parse_panes(proc.stdout.decode("utf-8", "replace").splitlines())


def format_escape(text: str) -> str:
    """Make ``text`` literal where tmux expands formats (``#`` starts a format)."""
    return text.replace("#", "##")


def parse_version(text: str) -> tuple[int, int] | None:
    """``tmux 3.3a`` -> (3, 3); ``tmux next-3.4`` -> (3, 4); ``tmux master`` -> None."""
    match = re.search(r"(\d+)\.(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else None


@cache
def tmux_binary() -> str:
    """Path of a usable tmux, checked once per process."""
    path = shutil.which("tmux")
    if path is None:
        raise TmuxError("tmux is not installed; install tmux 3.2 or newer "
                        "(e.g. `apt-get install tmux`) and try again")
    out = subprocess.run([path, "-V"], capture_output=True, text=True, check=False).stdout
    version = parse_version(out)
    if version is not None and version < MIN_VERSION:
        raise TmuxError(f"{out.strip()} is too old; cbos needs tmux 3.2 or newer")
    return path


class Tmux:
    """A tmux server, by socket name (``tmux -L``); ``None`` is the user's default server."""

    def __init__(self, socket_name: str | None = None) -> None:
        tmux_binary()  # a missing or too old tmux fails here, clearly, not mid-action
        self.socket_name = socket_name
        self._server: libtmux.Server | None = None

    @property
    def server(self) -> libtmux.Server:
        # Imported on first use, not at module level: libtmux costs ~40-60 ms to import,
        # which the status line (`cbos status`) and the TUI's first paint (whose only
        # tmux call is the plain pane listing) need not pay.
        if self._server is None:
            import libtmux

            self._server = libtmux.Server(socket_name=self.socket_name,
                                          tmux_bin=tmux_binary())
        return self._server

    # -- the one wrapper ------------------------------------------------------------------

    def _server_args(self) -> list[str]:
        return [f"-L{self.socket_name}"] if self.socket_name else []

    def cmd(self, *args: str, stdin: bytes | None = None, check: bool = True,
            plain: bool = False) -> list[str]:
        """Run one tmux command line (``";"`` separates commands); return stdout lines.

        With ``stdin`` the bytes are fed to tmux (for ``load-buffer -``), which libtmux
        cannot do, so that case runs the same binary and socket directly; so does the
        read-only pane listing (``plain``), which must not wait for libtmux's import.
        """
        if stdin is None and not plain:
            result = self.server.cmd(*args)
            out, err, code = result.stdout, result.stderr, result.returncode
        else:
            proc = subprocess.run([tmux_binary(), *self._server_args(), *args],
                                  input=stdin, capture_output=True, check=False)
            out = proc.stdout.decode("utf-8", "replace").splitlines()
            err = proc.stderr.decode("utf-8", "replace").splitlines()
            code = proc.returncode
        if check and (code != 0 or err):
            message = " ".join(err).strip() or f"exit status {code}"
            if any(marker in message for marker in _NO_SERVER):
                raise TmuxError(f"no tmux server is running{self._where()}; "
                                "start a session with `cbos new`")
            raise TmuxError(f"tmux {args[0]} failed: {message}")
        return list(out)

    def _where(self) -> str:
        return f" on socket {self.socket_name!r}" if self.socket_name else ""

    def alive(self) -> bool:
        """Whether the server answers (a plain call: asked on refreshes that list nothing)."""
        try:
            self.cmd("list-sessions", "-F", "#{session_id}", plain=True)
        except TmuxError:
            return False
        return True

    # -- listing --------------------------------------------------------------------------

    def list_panes(self) -> list[Pane]:
        """Every pane of every session in one query; no server means an empty list."""
        try:
            lines = self.cmd("list-panes", "-a", "-F", PANE_FORMAT, plain=True)
        except TmuxError as exc:
            if "no tmux server is running" in str(exc):
                return []
            raise
        return parse_panes(lines)

    def pane(self, pane_id: str) -> Pane | None:
        return next((p for p in self.list_panes() if p.pane_id == pane_id), None)

    def session_names(self) -> set[str]:
        return {p.session_name for p in self.list_panes()}

    # -- creating -------------------------------------------------------------------------

    def new_session(
        self,
        name: str,
        path: Path,
        command: str,
        env: Mapping[str, str],
        log_path: Path,
        history_limit: int,
        size: tuple[int, int] = (200, 50),
    ) -> Pane:
        """Start ``command`` in a new detached session, logging from its very first byte.

        The pane first runs a placeholder; only once the history limit, remain-on-exit and
        the pipe are in place is it respawned with the real command, so no output is lost
        and the scrollback is the size asked for (tmux sizes it when the pane is made).
        """
        placeholder = "exec sleep 2147483647"
        cwd = format_escape(str(path))
        width, height = size
        first = self.cmd("new-session", "-d", "-s", name, "-c", cwd, "-x", str(width),
                         "-y", str(height), "-P", "-F", "#{session_id} #{window_id}",
                         placeholder)
        session_id, first_window = first[0].split()
        try:
            self.cmd("set-option", "-t", session_id, "history-limit", str(history_limit))
            self.cmd("set-option", "-t", session_id, OWNED_OPTION, "1")
            pane_id = self.cmd("new-window", "-d", "-t", f"{session_id}:", "-c", cwd,
                               "-P", "-F", "#{pane_id}", placeholder)[0]
            self.cmd("kill-window", "-t", first_window)
            self.cmd("set-option", "-p", "-t", pane_id, "remain-on-exit", "on", ";",
                     "set-option", "-p", "-t", pane_id, SLUG_OPTION, name)
            self.pipe(pane_id, log_path)
            env_args = [a for k, v in env.items() for a in ("-e", f"{k}={v}")]
            self.cmd("respawn-pane", "-k", "-t", pane_id, "-c", cwd, *env_args, command)
        except Exception:
            self.cmd("kill-session", "-t", session_id, check=False)
            raise
        pane = self.pane(pane_id)
        if pane is None:
            raise TmuxError(f"the new session {name!r} vanished at once; "
                            "check that the claude command starts by hand")
        return pane

    def pipe(self, pane_id: str, log_path: Path) -> None:
        """(Re)start the pane's pipe into ``log_path``, replacing any pipe it had.

        Without ``-o``, pipe-pane closes an existing pipe and opens the new one; ``-o``
        would toggle it off instead. tmux expands formats in the command, hence the escape.
        """
        # tee rather than cat: its argv names the log, so the pipe process can be found
        # (and found dead or stopped) in a process snapshot without opening /proc fds.
        shell = f"exec tee -a -- {shlex.quote(str(log_path))} >/dev/null"
        self.cmd("pipe-pane", "-t", pane_id, format_escape(shell))

    def unpipe(self, pane_id: str) -> None:
        self.cmd("pipe-pane", "-t", pane_id)

    def set_pane_option(self, pane_id: str, name: str, value: str) -> None:
        self.cmd("set-option", "-p", "-t", pane_id, name, value)

    # -- driving --------------------------------------------------------------------------

    def _check_typable(self, pane_id: str, label: str) -> None:
        pane = self.pane(pane_id)
        if pane is None:
            raise RefusedError(f"{label} has no tmux pane any more; see `cbos ls`")
        if pane.dead:
            raise RefusedError(f"{label}: claude has exited (the pane is dead), nothing "
                               f"would read the text; use `cbos resume {label}` or kill it")
        if pane.in_mode:
            raise RefusedError(f"{label} is in tmux copy-mode, which would swallow the text; "
                               "leave it (press q in the pane) and try again")

    def send_text(self, pane_id: str, text: str, label: str, enter: bool = True) -> None:
        """Type ``text`` literally, then Enter (a carriage return) as its own key.

        The text goes through a paste buffer fed on stdin: no command-line length limit,
        no tmux parsing of ``;``, ``-`` or key names, and a bracketed paste when the program
        asked for one, so newlines stay in the composer instead of submitting early.
        """
        self._check_typable(pane_id, label)
        args: list[str] = []
        if text:
            buffer = f"cbos-{os.urandom(6).hex()}"  # not secrets: its import costs 4 ms
            args += ["load-buffer", "-b", buffer, "-", ";",
                     "paste-buffer", "-d", "-p", "-r", "-b", buffer, "-t", pane_id]
        if enter:
            args += [";"] if args else []
            args += ["send-keys", "-t", pane_id, "Enter"]
        if args:
            self.cmd(*args, stdin=text.encode("utf-8") if text else None)

    def send_keys(self, pane_id: str, keys: Sequence[str], label: str) -> None:
        """Press tmux key names (``1``, ``Escape``, ``Enter``) in the pane, one by one."""
        self._check_typable(pane_id, label)
        self.cmd("send-keys", "-t", pane_id, *keys)

    def interrupt(self, pane_id: str, label: str) -> None:
        """Ctrl+C in the pane: what a person would press. Never a signal to the process."""
        pane = self.pane(pane_id)
        if pane is None:
            raise RefusedError(f"{label} has no tmux pane any more; see `cbos ls`")
        if pane.dead:
            raise RefusedError(f"{label}: claude has already exited")
        if pane.in_mode:
            self.cmd("send-keys", "-X", "-t", pane_id, "cancel")
        self.cmd("send-keys", "-t", pane_id, "C-c")

    def kill(self, pane: Pane) -> None:
        """End a session cbos created, or just the pane of one a person made."""
        if pane.owned:
            self.cmd("kill-session", "-t", pane.session_id)
        else:
            self.cmd("kill-pane", "-t", pane.pane_id)

    def capture(self, pane_id: str, colours: bool = True, lines: int | None = None) -> str:
        """The pane as ``tmux attach`` shows it (visible screen), or its last ``lines``."""
        args = ["capture-pane", "-p", "-t", pane_id]
        if colours:
            args.insert(1, "-e")
        if lines is not None:
            args += ["-S", f"-{max(lines, 1)}"]
        out = self.cmd(*args)
        while out and not out[-1].strip():
            out.pop()
        if lines is not None:
            out = out[-lines:]
        return "\n".join(out)

    # -- attaching ------------------------------------------------------------------------

    def socket_path(self) -> str:
        return self.cmd("display-message", "-p", "#{socket_path}")[0]

    def inside(self, environ: Mapping[str, str] | None = None) -> bool:
        """True when the caller runs inside a client of this very server."""
        env = os.environ if environ is None else environ
        value = env.get("TMUX", "")
        if not value:
            return False
        try:
            return value.split(",")[0] == self.socket_path()
        except TmuxError:
            return False

    def switch_client(self, pane: Pane) -> None:
        self.cmd("select-window", "-t", pane.window_id, ";",
                 "select-pane", "-t", pane.pane_id, ";",
                 "switch-client", "-t", pane.session_id)

    def attach_argv(self, pane: Pane) -> list[str]:
        """argv that attaches a terminal to the pane's session (run it, or exec it)."""
        self.cmd("select-window", "-t", pane.window_id, ";",
                 "select-pane", "-t", pane.pane_id)
        return [tmux_binary(), *self._server_args(), "attach-session", "-t", pane.session_id]
