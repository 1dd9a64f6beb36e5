"""One snapshot of the process table per refresh, and what it says about claude.

``children(recursive=True)`` per session costs tens of milliseconds each; reading the whole
table once and walking it in memory is what makes 100 sessions cheap. Processes vanish
mid-read; that is normal and never an error.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

_VERSION_NAME = re.compile(r"^\d+\.\d+\.\d+")  # claude can show as its version string
_CLAUDE_NAMES = frozenset({"claude", "claude.exe"})
_RUNTIMES = frozenset({"node", "bun", "nodejs"})
_HOOK_SHELLS = frozenset({"sh", "dash", "bash"})
ZOMBIE = "zombie"  # psutil.STATUS_ZOMBIE, without importing psutil for a constant
_NOT_RUNNING = frozenset({"stopped", ZOMBIE, "dead", "tracing-stop"})  # a pipe there is stuck


@dataclass(frozen=True)
class Proc:
    """One process of the table, with the fields the board reads.

    (Documented dataclasses start faster: without a docstring, dataclass() computes an
    inspect.signature for one, on every start of every command.)
    """

    pid: int
    ppid: int
    name: str
    cmdline: tuple[str, ...]
    create_time: float
    status: str

    @property
    def command(self) -> str:
        return " ".join(self.cmdline) if self.cmdline else self.name


def is_claude(proc: Proc) -> bool:
    """Whether ``proc`` is a Claude Code CLI process, under any of the names it shows."""
    if proc.name in _CLAUDE_NAMES or _VERSION_NAME.match(proc.name):
        return True
    argv0 = os.path.basename(proc.cmdline[0]) if proc.cmdline else ""
    if argv0 in _CLAUDE_NAMES:
        return True
    if proc.name in _RUNTIMES or argv0 in _RUNTIMES:
        return any("claude" in os.path.basename(arg) for arg in proc.cmdline[1:3])
    return False


@dataclass
class ProcTable:
    """The process table at one instant, indexed by pid and by parent."""

    procs: dict[int, Proc] = field(default_factory=dict)
    children: dict[int, list[int]] = field(default_factory=dict)

    @classmethod
    def snapshot(cls) -> ProcTable:
        table = cls()
        procs = _read_proc() if _PROC_STAT.exists() else None
        for proc in procs if procs is not None else _read_psutil():
            table.procs[proc.pid] = proc
            table.children.setdefault(proc.ppid, []).append(proc.pid)
        return table

    def descendants(self, pid: int) -> Iterator[Proc]:
        stack = list(self.children.get(pid, ()))
        while stack:
            child = self.procs.get(stack.pop())
            if child is None:
                continue
            yield child
            stack.extend(self.children.get(child.pid, ()))

    def claude_in_pane(self, pane_pid: int | None) -> Proc | None:
        """The claude process a pane runs: the pane's own process or its nearest descendant."""
        if pane_pid is None:
            return None
        root = self.procs.get(pane_pid)
        if root is not None and is_claude(root) and root.status != ZOMBIE:
            return root
        for proc in self.descendants(pane_pid):
            if is_claude(proc) and proc.status != ZOMBIE:
                return proc
        return None

    def tools_of(self, claude: Proc) -> list[Proc]:
        """Tool processes under claude: its children minus hook shells and helpers.

        A hook runs as ``claude -> sh -c COMMAND``; those are not work the person sees.
        """
        tools = []
        for pid in self.children.get(claude.pid, ()):
            child = self.procs.get(pid)
            if child is None or child.status == ZOMBIE:
                continue
            if child.name in _HOOK_SHELLS and "-c" in child.cmdline[1:2] and any(
                "cbos" in arg for arg in child.cmdline[2:]
            ):
                continue
            tools.append(child)
        return tools

    def pipe_logs(self) -> set[str]:
        """Real paths of the logs that running pipe processes of cbos (``tee``) write."""
        return {os.path.realpath(target) for proc in self.procs.values()
                if proc.status not in _NOT_RUNNING and (target := pipe_target(proc.cmdline))}

    def tree_usage(self, pid: int) -> tuple[int, float]:
        """(RSS bytes, CPU seconds) of a process and everything under it, read now.

        From /proc/PID/stat, as psutil reads them (rss pages times the page size; utime and
        stime over the clock ticks): `cbos ls` calls this per session, and importing psutil
        for it cost ~10 ms of every `ls`. A process whose start differs from the snapshot's
        is a reused pid and is left out.
        """
        root = self.procs.get(pid)
        procs = [root] if root else []
        procs.extend(self.descendants(pid))
        if not _PROC_STAT.exists():
            return _usage_psutil(procs)
        ticks, page = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE")
        boot = _boot_time()
        rss, cpu = 0, 0.0
        for proc in procs:
            fields = _stat_fields(proc.pid)
            if fields is None or int(fields[19]) / ticks + boot != proc.create_time:
                continue  # gone since the snapshot, or the pid was reused
            rss += int(fields[21]) * page
            cpu += (int(fields[11]) + int(fields[12])) / ticks
        return rss, cpu


def _usage_psutil(procs: list[Proc]) -> tuple[int, float]:
    """tree_usage where there is no /proc to read."""
    import psutil

    rss, cpu = 0, 0.0
    for proc in procs:
        try:
            handle = psutil.Process(proc.pid)
            if handle.create_time() != proc.create_time:
                continue  # the pid was reused since the snapshot
            with handle.oneshot():
                rss += handle.memory_info().rss
                times = handle.cpu_times()
                cpu += times.user + times.system
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue  # gone since the snapshot, or not ours to read: normal
    return rss, cpu


def _stat_fields(pid: int) -> list[bytes] | None:
    """The fields of /proc/PID/stat after the name (state first), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb", buffering=0) as f:
            stat = f.readall()
    except OSError:
        return None
    right = stat.rfind(b")")
    fields = stat[right + 2:].split()
    return fields if right >= 0 and len(fields) >= 22 else None


_BOOT: list[float] = []


def _boot_time() -> float:
    """The kernel's boot time (``btime`` of /proc/stat), as psutil.boot_time() reads it."""
    if not _BOOT:
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"btime "):
                    _BOOT.append(float(line.split()[1]))
                    break
            else:
                raise OSError("/proc/stat has no btime line")
    return _BOOT[0]


_PIPE_SHELLS = frozenset({"sh", "bash", "dash", "zsh"})


_PROC_STAT = Path("/proc/self/stat")
_KERNEL_THREAD = 0x00200000  # PF_KTHREAD in the flags field of /proc/PID/stat
# psutil's names for the state letter of /proc/PID/stat (see psutil._pslinux.PROC_STATUSES).
_STATES = {"R": "running", "S": "sleeping", "D": "disk-sleep", "T": "stopped",
           "t": "tracing-stop", "Z": ZOMBIE, "X": "dead", "x": "dead", "K": "wake-kill",
           "W": "waking", "I": "idle", "P": "parked"}


# A process's argv, read once per process image: (pid, start, name, argv's address) ->
# (name, argv). Rebuilt by every walk from what it saw, so it never outgrows the table.
_ARGV: dict[tuple[object, ...], tuple[str, tuple[str, ...]]] = {}


def _read_proc() -> list[Proc] | None:
    """The table read straight from /proc: two small reads per process (stat, cmdline).

    psutil's ``process_iter`` costs about 50 µs a process in its own Python machinery;
    at 600 processes every refresh that alone was 1.5 % of a core with everything idle
    (bench/hosts.py). These reads cost a fifth of that, and argv is read again only
    when the process image changed (an exec moves it and renames the process). The
    values are psutil's to the digit (name, status words, create_time from boot time
    and clock ticks), so a pid's create_time still matches
    ``psutil.Process(pid).create_time()`` (tree_usage).
    None if /proc cannot be listed (the caller falls back to psutil).
    """
    try:
        pids = [int(n) for n in os.listdir("/proc") if n.isdigit()]
        ticks = os.sysconf("SC_CLK_TCK")
        boot = _boot_time()
    except (OSError, ValueError):
        return None
    global _ARGV
    procs, known = [], _ARGV
    seen: dict[tuple[object, ...], tuple[str, tuple[str, ...]]] = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb", buffering=0) as f:
                stat = f.readall()
            right = stat.rfind(b")")
            fields = stat[right + 2:].split()
            if right < 0 or len(fields) < 20:
                continue
            # One process image: its start, its name, where its argv lives (an exec
            # moves it; 0 when the kernel does not tell us).
            key = (pid, fields[19], stat[:right], *fields[45:47])
            cached = known.get(key) if len(key) == 5 and key[3] != b"0" else None
            raw = b""
            if cached is None and not int(fields[6]) & _KERNEL_THREAD:  # (no argv)
                with open(f"/proc/{pid}/cmdline", "rb", buffering=0) as f:
                    raw = f.readall()
        except OSError:
            continue  # gone mid-read, or not ours to read: normal
        if cached is not None:
            name, cmdline = cached
        else:
            name = os.fsdecode(stat[stat.find(b"(") + 1:right])
            cmdline = _split_cmdline(os.fsdecode(raw))
            if len(name) >= 15 and cmdline:
                # The kernel keeps 15 bytes of a name; psutil takes the rest from argv[0].
                full = os.path.basename(cmdline[0])
                if full.startswith(name):
                    name = full
        if cmdline and len(key) == 5 and key[3] != b"0":
            seen[key] = (name, cmdline)
        state = fields[0].decode("ascii", "replace")
        procs.append(Proc(pid=pid, ppid=int(fields[1]), name=name, cmdline=cmdline,
                          create_time=int(fields[19]) / ticks + boot,
                          status=_STATES.get(state, state)))
    _ARGV = seen
    return procs


def _split_cmdline(data: str) -> tuple[str, ...]:
    """argv as psutil reads it, also for processes that rewrote theirs with spaces."""
    if not data:
        return ()
    sep = "\x00" if data.endswith("\x00") else " "
    if data.endswith(sep):
        data = data[:-1]
    argv = data.split(sep)
    if sep == "\x00" and len(argv) == 1 and " " in data:
        argv = data.split(" ")
    return tuple(argv)


def _read_psutil() -> list[Proc]:
    """The table through psutil, where there is no /proc to read."""
    # psutil is imported here: the status-line path never takes a snapshot and
    # should not pay for the import.
    import psutil

    # Memory and CPU are read only for the few trees someone asks about
    # (tree_usage): for every process they would cost a third of the snapshot.
    attrs = ["pid", "ppid", "name", "cmdline", "create_time", "status"]
    procs = []
    for p in psutil.process_iter(attrs):
        info = p.info
        if info.get("pid") is None:
            continue
        procs.append(Proc(
            pid=info["pid"], ppid=info.get("ppid") or 0, name=info.get("name") or "",
            cmdline=tuple(info.get("cmdline") or ()),
            create_time=info.get("create_time") or 0.0,
            status=info.get("status") or "",
        ))
    return procs


def pipe_target(argv: tuple[str, ...]) -> str | None:
    """The log a pipe process of :meth:`cbos.tmux.Tmux.pipe` writes: ``tee -a -- LOG``, or
    ``sh -c 'exec tee ... LOG ...'`` for the instant before the shell execs tee. (Here, not
    in tmux.py: the process table reads it, and tmux sits above it.)"""
    if not argv:
        return None
    name = os.path.basename(argv[0])
    if name == "tee":
        return argv[-1]
    if name in _PIPE_SHELLS and len(argv) >= 3 and argv[1] == "-c" and "tee" in argv[2]:
        try:
            words = shlex.split(argv[2])
        except ValueError:
            return None
        if "tee" in words and "--" in words[words.index("tee"):]:
            rest = words[words.index("--", words.index("tee")) + 1:]
            return rest[0] if rest else None
    return None
