"""The only module that runs tmux: every tmux command line goes through :meth:`Tmux.cmd`.

Listings are lenient (no server means no panes); actions are loud (a failure raises
:class:`~cbos.errors.TmuxError` with tmux's own words). Panes and sessions are always
addressed by id (``%7``, ``$3``): tmux matches names by prefix, and typing into the wrong
session is the one mistake cbos must never make.

tmux runs as a plain subprocess of the binary found once (:func:`tmux_binary`): one path
for every call, able to feed stdin (``load-buffer -``), and no library import on the
status line's or the first paint's start-up budget.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from cbos.errors import RefusedError, TmuxError
from cbos.panes import Pane

MIN_VERSION = (3, 2)
SEP = "\x1f"  # unit separator: never in slugs, and tmux passes it through unescaped
SLUG_OPTION = "@cbos_slug"
OWNED_OPTION = "@cbos_owned"  # set on tmux sessions that cbos created (kill-session is ok)
# Set on a pane while its pipe is the one cbos armed. A pane hook clears it whenever
# anything else runs pipe-pane on the pane (a person's own `pipe-pane 'cat >> mine.log'`),
# so cbos re-arms only pipes it armed, and never replaces one it did not.
PIPE_OPTION = "@cbos_pipe"

# (format, attribute) pairs of one batched `list-panes -a` query.
_PANE_FORMAT = (
    "pane_id", "session_id", "session_name", "window_id", "window_index", "pane_index",
    "pane_pid", "pane_dead", "pane_dead_status", "pane_dead_signal", "pane_current_command",
    "pane_current_path", "pane_in_mode", "pane_pipe", "pane_width", "pane_height",
    "session_attached", SLUG_OPTION, OWNED_OPTION, PIPE_OPTION,
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
        pipe_ours=f["pane_pipe"] == "1" and f[PIPE_OPTION] == "1",
    )


PANE_FORMAT = SEP.join(f"#{{{name}}}" for name in _PANE_FORMAT)


def parse_panes(lines: Iterable[str]) -> list[Pane]:
    return [pane for pane in map(_parse_pane, lines) if pane is not None]


def format_escape(text: str) -> str:
    """Make ``text`` literal where tmux expands formats (``#`` starts a format)."""
    return text.replace("#", "##")


def parse_version(text: str) -> tuple[int, int] | None:
    """``tmux 3.3a`` -> (3, 3); ``tmux next-3.4`` -> (3, 4); ``tmux master`` -> None."""
    match = re.search(r"(\d+)\.(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def which(name: str) -> str | None:
    """``shutil.which`` for a plain command name: importing shutil costs the status line
    several ms (it loads the compression modules)."""
    if "/" in name:
        return name if os.access(name, os.X_OK) and not os.path.isdir(name) else None
    for folder in os.environ.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(folder or ".", name)
        if os.access(path, os.X_OK) and not os.path.isdir(path):
            return path
    return None


@cache
def tmux_binary() -> str:
    """Path of a usable tmux, checked once per process."""
    path = which("tmux")
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

    def __init__(self, socket_name: str | None = None, check_version: bool = True) -> None:
        # A missing or too old tmux fails here, clearly, not mid-action. The status line
        # only lists panes, and saves the `tmux -V` on each of its starts.
        self._binary = tmux_binary() if check_version else which("tmux") or "tmux"
        self.socket_name = socket_name

    # -- the one wrapper ------------------------------------------------------------------

    def _server_args(self) -> list[str]:
        return [f"-L{self.socket_name}"] if self.socket_name else []

    def cmd(self, *args: str, stdin: bytes | None = None, check: bool = True) -> list[str]:
        """Run one tmux command line (``";"`` separates commands); return stdout lines.

        ``stdin`` is fed to tmux (for ``load-buffer -``).
        """
        try:
            proc = subprocess.run([self._binary, *self._server_args(), *args],
                                  input=stdin, capture_output=True, check=False)
        except FileNotFoundError:
            raise TmuxError("tmux is not installed; install tmux 3.2 or newer "
                            "(e.g. `apt-get install tmux`) and try again") from None
        out = proc.stdout.decode("utf-8", "replace").splitlines()
        err = proc.stderr.decode("utf-8", "replace").splitlines()
        if check and (proc.returncode != 0 or err):
            message = " ".join(err).strip() or f"exit status {proc.returncode}"
            if any(marker in message for marker in _NO_SERVER):
                raise TmuxError(f"no tmux server is running{self._where()}; "
                                "start a session with `cbos new`")
            raise TmuxError(f"tmux {args[0]} failed: {message}")
        return out

    def _where(self) -> str:
        return f" on socket {self.socket_name!r}" if self.socket_name else ""

    def alive(self) -> bool:
        """Whether the server answers (a plain call: asked on refreshes that list nothing)."""
        try:
            self.cmd("list-sessions", "-F", "#{session_id}")
        except TmuxError:
            return False
        return True

    # -- listing --------------------------------------------------------------------------

    def list_panes(self) -> list[Pane]:
        """Every pane of every session in one query; no server means an empty list."""
        try:
            lines = self.cmd("list-panes", "-a", "-F", PANE_FORMAT)
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

    def respawn(self, pane_id: str, path: str, command: str, env: Mapping[str, str]) -> None:
        """Start ``command`` again in a dead pane, in place (same pane id, same pipe).

        Without ``-k``, tmux refuses a pane whose process still runs: this can never kill
        a program that came back in the meantime.
        """
        env_args = [a for k, v in env.items() for a in ("-e", f"{k}={v}")]
        self.cmd("respawn-pane", "-t", pane_id, "-c", format_escape(path), *env_args, command)

    def pipe(self, pane_id: str, log_path: Path) -> None:
        """Start the pane's pipe into ``log_path`` and mark it as cbos's.

        Callers pipe only a pane with no pipe, or with cbos's own (:meth:`rearm` checks).
        Without ``-o``, pipe-pane closes an existing pipe and opens the new one; ``-o``
        would toggle it off instead. tmux expands formats in the command, hence the escape.
        One command line: the hook that forgets the mark on any later pipe-pane, the pipe
        (which fires that hook at once), then the mark.
        """
        # tee rather than cat: its argv names the log, so the pipe process can be found
        # (and found dead or stopped) in a process snapshot without opening /proc fds.
        shell = f"exec tee -a -- {shlex.quote(str(log_path))} >/dev/null"
        self.cmd(*self._forget_mark(pane_id), ";",
                 "pipe-pane", "-t", pane_id, format_escape(shell), ";",
                 "set-option", "-p", "-t", pane_id, PIPE_OPTION, "1")

    def claim_pipe(self, pane_id: str) -> None:
        """Mark the pane's running pipe as cbos's (one an older cbos armed unmarked)."""
        self.cmd(*self._forget_mark(pane_id), ";",
                 "set-option", "-p", "-t", pane_id, PIPE_OPTION, "1")

    @staticmethod
    def _forget_mark(pane_id: str) -> list[str]:
        # A pane hook: it runs after every pipe-pane on this pane, whoever runs it, and
        # leaves any global after-pipe-pane hook of the user's alone.
        return ["set-hook", "-p", "-t", pane_id, "after-pipe-pane",
                f"set-option -p -u {PIPE_OPTION}"]

    def rearm(self, pane_id: str, log_path: Path) -> bool:
        """Point cbos's pipe at ``log_path`` again (log rotated or deleted, tee died);
        False, and nothing done, when the pane's pipe is not cbos's: a person's own
        ``pipe-pane`` is never replaced. Asks tmux afresh: a listing may be seconds old."""
        state = self.cmd("display-message", "-p", "-t", pane_id,
                         f"#{{pane_pipe}}:#{{{PIPE_OPTION}}}")
        piped, _, mark = (state[0] if state else "0:").partition(":")
        if piped == "1" and mark != "1":
            return False
        self.pipe(pane_id, log_path)
        return True

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

    def capture_many(self, pane_ids: list[str], colours: bool = False) -> dict[str, str]:
        """The visible screens of several panes in one tmux call (a marker line after
        each). If one pane is gone tmux stops there: the rest are captured one by one."""
        if len(pane_ids) == 1:
            return {pane_ids[0]: self.capture(pane_ids[0], colours)}
        marker = "\x1f cbos capture of "
        args: list[str] = []
        for pane_id in pane_ids:
            args += ["capture-pane", "-p", *(["-e"] if colours else []), "-t", pane_id, ";",
                     "display-message", "-p", marker + pane_id.lstrip("%"), ";"]
        screens: dict[str, str] = {}
        try:
            out = self.cmd(*args[:-1])
        except TmuxError:
            out = []
        current: list[str] = []
        for line in out:
            if line.startswith(marker):
                while current and not current[-1].strip():
                    current.pop()
                # "%" is left out of the marker: display-message expands it (strftime).
                screens["%" + line[len(marker):].strip()] = "\n".join(current)
                current = []
            else:
                current.append(line)
        for pane_id in pane_ids:
            if pane_id not in screens:
                with contextlib.suppress(TmuxError):
                    screens[pane_id] = self.capture(pane_id, colours)
        return screens

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

    def open_window(self, name: str, argv: Sequence[str]) -> None:
        """A new window in the current session running ``argv`` (tmux execs the words
        itself, no shell), e.g. ``ssh -t HOST cbos attach SLUG``."""
        self.cmd("new-window", "-n", name, "--", *argv)

    def switch_client(self, pane: Pane) -> None:
        self.cmd("select-window", "-t", pane.window_id, ";",
                 "select-pane", "-t", pane.pane_id, ";",
                 "switch-client", "-t", pane.session_id)

    def select(self, pane: Pane) -> None:
        """Make the pane the current one of its session (what an attach then shows)."""
        self.cmd("select-window", "-t", pane.window_id, ";",
                 "select-pane", "-t", pane.pane_id)

    def _attach_argv(self, pane: Pane) -> list[str]:
        return [self._binary, *self._server_args(), "attach-session", "-t", pane.session_id]

    def attach(self, pane: Pane) -> int:
        """``tmux attach`` to the pane's session on this terminal until it detaches; its
        exit status. The caller selected the pane (:meth:`select`) and handed the terminal
        over (the TUI pauses its screen)."""
        return subprocess.run(self._attach_argv(pane), env=_outside_tmux(),
                              check=False).returncode

    def exec_attach(self, pane: Pane) -> None:
        """Select the pane and become ``tmux attach`` (the CLI's last act): never returns."""
        self.select(pane)
        argv = self._attach_argv(pane)
        os.execve(argv[0], argv, _outside_tmux())

    # -- clients --------------------------------------------------------------------------

    def clients(self) -> list[Client]:
        """The attached clients (none without a server)."""
        lines = self.cmd("list-clients", "-F", f"#{{client_name}}{SEP}#{{client_tty}}",
                         check=False)
        return [Client(*line.split(SEP)) for line in lines if line.count(SEP) == 1]

    def show_message(self, client: str, text: str, milliseconds: int) -> None:
        """``text`` on one client's status line; the caller makes it literal (formats)."""
        self.cmd("display-message", "-c", client, "-d", str(milliseconds), "--", text,
                 check=False)

    def set_global_options(self, values: Mapping[str, str | None]) -> None:
        """Set (or, for None, unset) global user options in one command line; lenient:
        no server means nothing to set."""
        args: list[str] = []
        for name, value in values.items():
            args += [";"] if args else []
            args += (["set-option", "-gu", name] if value is None
                     else ["set-option", "-g", name, _argument(value)])
        if args:
            self.cmd(*args, check=False)

    def global_option(self, name: str) -> str:
        """A global (user) option's value; "" when unset or with no server."""
        lines = self.cmd("show-options", "-gqv", name, check=False)
        return lines[0] if lines else ""


@dataclass(frozen=True)
class Client:
    """One attached tmux client: its name (for ``-c``) and the terminal it draws on."""

    name: str
    tty: str


def _argument(text: str) -> str:
    # An argument ending in ";" would end the command line instead.
    return text[:-1] + "\\;" if text.endswith(";") else text


def _outside_tmux() -> dict[str, str]:
    # A client started with $TMUX set refuses to nest.
    return {k: v for k, v in os.environ.items() if k != "TMUX"}
