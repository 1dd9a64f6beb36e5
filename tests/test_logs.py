"""logs.Tail on real files, real inotify, and real tmux pipes where the case involves one."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import select
import shlex
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from cbos.config import touch_private
from cbos.logs import Chunk, Tail
from cbos.procs import ProcTable
from cbos.tmux import Tmux
from tests.support import wait_until


class Collector:
    """Keeps every chunk a tail emits, and the text per session."""

    def __init__(self, tail: Tail) -> None:
        self.tail = tail
        self.chunks: list[Chunk] = []

    def poll(self) -> Collector:
        self.chunks += self.tail.read()
        while self.tail.pending:
            self.chunks += self.tail.read()
        return self

    def of(self, slug: str) -> list[Chunk]:
        return [c for c in self.chunks if c.slug == slug]

    def text(self, slug: str) -> str:
        return "".join(c.data for c in self.of(slug))

    def raw(self, slug: str) -> bytes:
        return b"".join(c.raw for c in self.of(slug))

    def wait_for(self, slug: str, needle: str, timeout: float = 10.0) -> None:
        wait_until(lambda: needle in self.poll().text(slug), timeout=timeout,
                   message=f"{needle!r} in the output of {slug}")


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def assert_contiguous(chunks: list[Chunk], start: int) -> None:
    """Each chunk's offset is the previous one plus its own bytes: no overlap, no hole."""
    offset = start
    for chunk in chunks:
        offset += len(chunk.raw)
        assert chunk.offset == offset


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    path = tmp_path / "logs"
    path.mkdir()
    return path


@pytest.fixture
def tail(log_dir: Path) -> Iterator[Tail]:
    with Tail(log_dir, max_buffer=1000) as t:
        yield t


# -- tmux panes whose output we control ----------------------------------------------------


class Pane(NamedTuple):
    pane_id: str
    src: Path  # the pane prints whatever is appended here
    log: Path

    def say(self, text: str) -> None:
        append(self.src, text.encode())


def start_pane(tmux: Tmux, tmp_path: Path, log_dir: Path, slug: str) -> Pane:
    """A pane running ``tail -f`` of a source file, piped into ``log_dir/SLUG.log``."""
    src = tmp_path / f"{slug}.src"
    src.touch()
    pane_id = tmux.cmd("new-session", "-d", "-s", slug, "-x", "100", "-y", "30", "-P",
                       "-F", "#{pane_id}", f"exec tail -n +1 -f {shlex.quote(str(src))}")[0]
    log = log_dir / f"{slug}.log"
    touch_private(log)
    tmux.pipe(pane_id, log)
    pane = Pane(pane_id, src, log)
    wait_until(lambda: tee_of(log) is not None, message="the pipe's tee is running")
    return pane


def tee_of(log: Path) -> int | None:
    for proc in ProcTable.snapshot().procs.values():
        if proc.name == "tee" and proc.cmdline and proc.cmdline[-1] == str(log):
            return proc.pid
    return None


def rearmer(tmux: Tmux, panes: dict[str, Pane], calls: list[str]) -> Callable[[str], None]:
    def rearm(slug: str) -> None:
        calls.append(slug)
        pane = panes[slug]
        touch_private(pane.log)
        tmux.pipe(pane.pane_id, pane.log)

    return rearm


# -- basics --------------------------------------------------------------------------------


def test_pane_output_reaches_the_tail_with_logical_offsets(
        tmux: Tmux, tmp_path: Path, log_dir: Path, tail: Tail) -> None:
    pane = start_pane(tmux, tmp_path, log_dir, "A")
    got = Collector(tail)
    pane.say("hello from the pane\n")
    got.wait_for("A", "hello from the pane\r\n")
    pane.say("second line\n")
    got.wait_for("A", "second line\r\n")
    assert_contiguous(got.of("A"), 0)
    assert got.of("A")[-1].offset == pane.log.stat().st_size == tail.offset("A")
    assert not any(c.gap for c in got.chunks)
    assert tail.buffer("A") == pane.log.read_bytes()


def test_start_up_begins_at_the_end_with_the_recent_output_prefilled(log_dir: Path) -> None:
    history = b"".join(b"old line %04d\n" % i for i in range(500))
    (log_dir / "A.log").write_bytes(history)
    (log_dir / "B.log").write_bytes(b"x" * 10 + "é".encode()[:1])  # ends mid-character
    with Tail(log_dir, max_buffer=1000) as tail:
        assert tail.slugs() == ["A", "B"]
        assert tail.read() == [] and tail.rescan() == []  # old output is not re-emitted
        assert tail.offset("A") == len(history)
        assert tail.buffer("A") == history[-1000:]
        assert tail.offset("B") == 10  # starts on a character boundary
        append(log_dir / "B.log", "é".encode()[1:] + b"!")
        got = Collector(tail)
        wait_until(lambda: got.poll().text("B"), message="B's new output")
        assert got.text("B") == "é!"
    with Tail(log_dir, max_buffer=1000, prefill=False) as bare:
        assert bare.buffer("A") == b""
        assert bare.offset("A") == len(history)


def test_adopt_later_follows_the_logs_found_at_start_from_where_they_end_then(
        log_dir: Path) -> None:
    """The TUI lists the logs at once and follows them after its first frame: a log
    that was there starts at its end then (what it wrote meanwhile is history, kept in
    the ring); a log created meanwhile is new output, read from its first byte."""
    (log_dir / "OLD.log").write_bytes(b"before\n")
    with Tail(log_dir, max_buffer=1000, adopt_later=True) as tail:
        append(log_dir / "OLD.log", b"meanwhile\n")
        (log_dir / "NEW.log").write_bytes(b"created meanwhile\n")
        tail.adopt()
        assert tail.slugs() == ["OLD"]  # NEW is the watch's to report
        assert tail.offset("OLD") == 17 and tail.buffer("OLD") == b"before\nmeanwhile\n"
        got = Collector(tail)
        append(log_dir / "OLD.log", b"after\n")
        got.wait_for("OLD", "after\n")
        got.wait_for("NEW", "created meanwhile\n")
        assert got.text("OLD") == "after\n" and got.of("OLD")[-1].offset == 23
    with Tail(log_dir, adopt_later=True) as lazy:
        assert lazy.offset("OLD") == 23  # any call adopts first


def test_the_ring_joins_prefill_and_live_output_written_during_start_up(
        log_dir: Path) -> None:
    """What the TUI and the server show of a session (the ring) has no hole where output
    landed while the tail started: the prefill ends where the live read begins."""
    path = log_dir / "A.log"
    path.write_bytes(b"".join(b"old %05d\n" % i for i in range(300)))
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            append(path, b"new %05d\n" % n)
            n += 1
            stop.wait(0.0005)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        with Tail(log_dir, max_buffer=4000) as tail:
            wait_until(lambda: path.stat().st_size > tail.offset("A") + 3000,
                       message="more output after the start")
            stop.set()
            thread.join()
            wait_until(lambda: tail.read() + tail.rescan() == [] and
                       tail.offset("A") == path.stat().st_size, message="caught up")
            assert tail.buffer("A") == path.read_bytes()[-4000:]
    finally:
        stop.set()
        thread.join()


def test_a_log_that_appears_later_is_read_from_its_first_byte(
        log_dir: Path, tail: Tail) -> None:
    got = Collector(tail)
    (log_dir / "NEW.log").write_bytes(b"first bytes\n")
    got.wait_for("NEW", "first bytes\n")
    assert got.of("NEW")[0].offset == len(b"first bytes\n")
    assert "NEW" in tail.slugs()


def test_other_files_are_ignored(log_dir: Path, tail: Tail) -> None:
    for name in ("A.log.1", "A.log.base", ".A.log.base.1.tmp", "notes.txt", "a.b.log"):
        (log_dir / name).write_bytes(b"not a session\n")
    (log_dir / "REAL.log").write_bytes(b"a session\n")
    got = Collector(tail)
    got.wait_for("REAL", "a session")
    assert tail.slugs() == ["REAL"]
    assert {c.slug for c in got.chunks} == {"REAL"}


def test_fileno_is_pollable_and_read_never_blocks(log_dir: Path, tail: Tail) -> None:
    fd = tail.fileno()
    assert select.select([fd], [], [], 0)[0] == []
    assert tail.read() == []  # nothing waiting: returns at once
    append(log_dir / "A.log", b"wake up\n")
    wait_until(lambda: select.select([fd], [], [], 0)[0], message="inotify fd readable")
    assert "".join(c.data for c in tail.read()) == "wake up\n"
    # Numbering a new log writes its A.log.base sidecar: one more wake-up, and no output.
    assert tail.read() == []
    assert select.select([fd], [], [], 0)[0] == []


# -- UTF-8 -----------------------------------------------------------------------------------


def test_characters_split_across_reads_are_never_emitted_half(
        log_dir: Path, tail: Tail) -> None:
    log = log_dir / "U.log"
    got = Collector(tail)
    text = "é€😀"
    data = text.encode()
    log.write_bytes(b"a")
    got.wait_for("U", "a")
    for i in range(len(data)):  # one byte per read: every cut point inside a character
        append(log, data[i:i + 1])
        wait_until(lambda: select.select([tail.fileno()], [], [], 0)[0],
                   message="a wake-up for the byte")
        got.poll()
    assert got.text("U") == "a" + text
    for chunk in got.of("U"):
        assert chunk.raw.decode("utf-8") == chunk.data  # whole characters only
    assert_contiguous(got.of("U"), 0)
    assert tail.offset("U") == 1 + len(data)


def test_a_half_character_is_held_back_from_the_offset(log_dir: Path, tail: Tail) -> None:
    log = log_dir / "U.log"
    log.write_bytes(b"ab" + "€".encode()[:2])
    got = Collector(tail)
    got.wait_for("U", "ab")
    assert tail.offset("U") == 2  # a client resuming here never starts inside "€"
    assert tail.read_since("U", 0) == (b"ab", 2, False)
    append(log, "€".encode()[2:])
    got.wait_for("U", "€")
    assert tail.offset("U") == 5


def test_invalid_bytes_become_replacement_characters(log_dir: Path, tail: Tail) -> None:
    log = log_dir / "BAD.log"
    got = Collector(tail)
    log.write_bytes(b"ok \xff\xfe \xe2\x82A \xc3")
    got.wait_for("BAD", "A ")
    append(log, b"( done\n")  # the lone lead byte is completed by an ASCII byte: invalid
    got.wait_for("BAD", "done")
    assert got.text("BAD") == "ok \ufffd\ufffd \ufffdA \ufffd( done\n"
    assert tail.offset("BAD") == log.stat().st_size


# -- truncation, deletion, rename ----------------------------------------------------------


def test_truncation_restarts_at_zero_with_a_gap(log_dir: Path, tail: Tail) -> None:
    log = log_dir / "T.log"
    got = Collector(tail)
    log.write_bytes(b"0123456789 before\n")
    got.wait_for("T", "before")
    log.write_bytes(b"after\n")  # truncate, then a short write
    got.wait_for("T", "after")
    after = got.of("T")[-1]
    assert after.gap and after.data == "after\n"
    assert after.offset == 18 + 6  # logical offsets keep counting
    assert not got.of("T")[0].gap
    data, offset, gap = tail.read_since("T", 0)
    assert (data, offset, gap) == (b"after\n", 24, True)  # the old bytes are gone
    assert json.loads((log_dir / "T.log.base").read_text())["base"] == 18


@pytest.mark.parametrize("how", ["delete", "rename"])
def test_a_log_deleted_or_renamed_is_drained_then_the_pipe_rearmed(
        how: str, tmux: Tmux, tmp_path: Path, log_dir: Path) -> None:
    panes: dict[str, Pane] = {}
    calls: list[str] = []
    with Tail(log_dir, rearm=rearmer(tmux, panes, calls)) as tail:
        pane = panes["D"] = start_pane(tmux, tmp_path, log_dir, "D")
        got = Collector(tail)
        pane.say("before\n")
        got.wait_for("D", "before")
        with open(pane.log, "rb") as old:
            if how == "delete":
                pane.log.unlink()
            else:
                pane.log.rename(log_dir / "moved-away.txt")
            # tee still writes to the old inode: the tail must read this from it.
            pane.say("late in the old file\n")
            wait_until(lambda: b"late in the old file" in old.read(),
                       message="late bytes in the old inode")
        got.wait_for("D", "late in the old file")
        assert calls == ["D"]
        pane.say("in the new file\n")
        got.wait_for("D", "in the new file")
        chunks = got.of("D")
        late = next(i for i, c in enumerate(chunks) if "late" in c.data)
        new = next(i for i, c in enumerate(chunks) if "in the new file" in c.data)
        gaps = [i for i, c in enumerate(chunks) if c.gap]
        assert len(gaps) == 1 and late < gaps[0] <= new
        assert_contiguous(chunks, 0)
        assert b"in the new file" in pane.log.read_bytes()


# -- the pipe process ------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP])
def test_a_killed_or_stopped_pipe_is_detected_and_rearmed(
        sig: signal.Signals, tmux: Tmux, tmp_path: Path, log_dir: Path) -> None:
    panes: dict[str, Pane] = {}
    calls: list[str] = []
    with Tail(log_dir, rearm=rearmer(tmux, panes, calls)) as tail:
        pane = panes["P"] = start_pane(tmux, tmp_path, log_dir, "P")
        other = panes["Q"] = start_pane(tmux, tmp_path, log_dir, "Q")
        live = {"P": pane.pane_id, "Q": other.pane_id}
        got = Collector(tail)
        pane.say("first\n")
        got.wait_for("P", "first")
        assert tail.check_pipes(ProcTable.snapshot(), live) == []  # both healthy
        assert calls == []

        tee = tee_of(pane.log)
        assert tee is not None
        os.kill(tee, sig)
        try:
            def broken() -> bool:
                proc = ProcTable.snapshot().procs.get(tee)
                return proc is None or proc.status in ("stopped", "zombie")

            wait_until(broken, message="the tee is gone or stopped")
            # A dead pane needs no pipe: only live panes are checked.
            assert tail.check_pipes(ProcTable.snapshot(), {"Q": other.pane_id}) == []
            assert tail.check_pipes(ProcTable.snapshot(), live) == ["P"]
            assert calls == ["P"]
            pane.say("after the re-arm\n")
            got.wait_for("P", "after the re-arm")
            after = [c for c in got.of("P") if "first" not in c.data]
            assert after[0].gap
            assert tail.check_pipes(ProcTable.snapshot(), live) == []
        finally:
            if sig == signal.SIGSTOP:
                with contextlib.suppress(ProcessLookupError):  # SIGKILL ends a stopped one
                    os.kill(tee, signal.SIGKILL)


def test_pipe_check_finds_tee_by_its_argv() -> None:
    from cbos.procs import Proc

    def table(*procs: Proc) -> ProcTable:
        return ProcTable(procs={p.pid: p for p in procs})

    def proc(pid: int, cmd: tuple[str, ...], status: str = "sleeping") -> Proc:
        return Proc(pid, 1, os.path.basename(cmd[0]), cmd, 0.0, status)

    calls: list[str] = []
    with Tail(Path(os.environ["HOME"]) / "logs", rearm=calls.append) as tail:
        log = str(Path(os.environ["HOME"]) / "logs" / "S.log")
        sh = ("/bin/sh", "-c", f"exec tee -a -- {shlex.quote(log)} >/dev/null")
        assert tail.check_pipes(table(proc(5, ("tee", "-a", "--", log))), {"S": "%1"}) == []
        assert tail.check_pipes(table(proc(5, sh)), {"S": "%1"}) == []  # about to exec
        assert tail.check_pipes(table(proc(5, ("tee", "-a", "--", log + "x"))),
                                {"S": "%1"}) == ["S"]
        assert tail.check_pipes(table(proc(5, ("tee", "-a", "--", log), "zombie")),
                                {"S": "%1"}) == ["S"]
        assert calls == ["S", "S"]


# -- overflow and bursts -------------------------------------------------------------------


def test_queue_overflow_rescans_everything_from_saved_offsets(log_dir: Path) -> None:
    (log_dir / "C.log").write_bytes(b"existing\n")
    with Tail(log_dir) as tail:
        limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
        fds = [os.open(log_dir / f"{s}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
               for s in ("A", "B")]
        try:
            # Alternating files defeats the kernel's merging of identical events.
            for i in range(limit + 10):
                os.write(fds[i % 2], b"x")
        finally:
            for fd in fds:
                os.close(fd)
        # These events are dropped: only a rescan can find them.
        append(log_dir / "C.log", b"written after the overflow\n")
        (log_dir / "D.log").write_bytes(b"created after the overflow\n")
        got = Collector(tail).poll()
        assert tail.overflows == 1
        assert got.text("C") == "written after the overflow\n"
        assert got.text("D") == "created after the overflow\n"
        total = len(got.raw("A")) + len(got.raw("B"))
        assert total == limit + 10
        assert_contiguous(got.of("C"), len(b"existing\n"))


def test_a_50mb_burst_is_read_in_bounded_steps_and_others_still_flow(log_dir: Path) -> None:
    budget = 1 << 20
    size = 50 * 1024 * 1024
    block = bytes(range(32, 127)) * 11000  # ~1 MB of printable bytes
    with Tail(log_dir, max_buffer=100_000, read_budget=budget) as tail:
        digest = hashlib.sha256()
        with open(log_dir / "BIG.log", "ab") as f:
            written = 0
            while written < size:
                piece = block[: size - written]
                f.write(piece)
                digest.update(piece)
                written += len(piece)
        got: list[Chunk] = []
        calls = 0
        seen_small_at: int | None = None
        while True:
            chunks = tail.read()
            calls += 1
            assert sum(len(c.raw) for c in chunks) <= budget
            got += chunks
            if calls == 5:
                append(log_dir / "SMALL.log", b"still responsive\n")
            if seen_small_at is None and any(c.slug == "SMALL" for c in chunks):
                seen_small_at = calls
            if not tail.pending and sum(len(c.raw) for c in got if c.slug == "BIG") >= size:
                break
            assert calls < 200
        big = [c for c in got if c.slug == "BIG"]
        assert hashlib.sha256(b"".join(c.raw for c in big)).digest() == digest.digest()
        assert calls >= size // budget
        assert_contiguous(big, 0)
        assert len(tail.buffer("BIG")) == 100_000
        # The small session was not made to wait for the 50 MB behind the burst.
        assert seen_small_at is not None and seen_small_at <= 7


# -- rotation and resume -------------------------------------------------------------------


def test_rotation_caps_the_log_without_losing_or_repeating_bytes(
        tmux: Tmux, tmp_path: Path, log_dir: Path) -> None:
    panes: dict[str, Pane] = {}
    calls: list[str] = []
    rearm = rearmer(tmux, panes, calls)
    with Tail(log_dir, max_file_bytes=4096, rearm=rearm) as tail:
        pane = panes["R"] = start_pane(tmux, tmp_path, log_dir, "R")
        got = Collector(tail)
        for batch in range(8):
            pane.say("".join(f"line {n:04d}\n" for n in range(batch * 50, batch * 50 + 50)))
            got.wait_for("R", f"line {batch * 50 + 49:04d}\r\n")
        assert calls, "the log was never rotated"
        assert (log_dir / "R.log.1").exists()
        assert pane.log.stat().st_size < 4096 + 600
        text = got.text("R")
        assert text == "".join(f"line {n:04d}\r\n" for n in range(400))
        assert not any(c.gap for c in got.of("R"))
        assert_contiguous(got.of("R"), 0)
        # A resume from an offset the .1 still holds is served from disk, without a gap.
        end = tail.offset("R")
        kept = (log_dir / "R.log.1").stat().st_size + pane.log.stat().st_size
        data, offset, gap = tail.read_since("R", end - kept)
        assert (offset, gap) == (end, False)
        assert data == got.raw("R")[-kept:]
        assert tail.read_since("R", 0)[2] == (len(calls) > 1)


class Writer:
    """Stands in for tee: appends to SLUG.log, and re-opens the path when re-armed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.data = b""

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)
        self.data += data

    def rearm(self, slug: str) -> None:
        os.close(self.fd)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)


def test_offsets_survive_a_restart_and_old_offsets_report_a_gap(log_dir: Path) -> None:
    writer = Writer(log_dir / "S.log")
    first = bytes(range(48, 58)) * 150  # 1500 bytes
    with Tail(log_dir, max_file_bytes=1000, rearm=writer.rearm) as tail:
        got = Collector(tail)
        writer.write(first)
        wait_until(lambda: got.poll() and (log_dir / "S.log.1").exists()
                   and tail.offset("S") == 1500, message="rotated")
        writer.write(b"y" * 300)
        wait_until(lambda: got.poll() and tail.offset("S") == 1800, message="read 1800")
        assert not any(c.gap for c in got.chunks)
        assert_contiguous(got.of("S"), 0)
    with Tail(log_dir, max_file_bytes=1000, rearm=writer.rearm) as again:
        assert again.offset("S") == 1800
        assert again.read_since("S", 1000) == (writer.data[1000:1800], 1800, False)
        assert again.read_since("S", 0) == (writer.data, 1800, False)
        writer.write(b"z" * 800)  # 1100 bytes in S.log: rotates again, replacing .1
        got = Collector(again)
        wait_until(lambda: got.poll() and again.offset("S") == 2600, message="read 2600")
        writer.write(b"after\n")
        wait_until(lambda: got.poll() and again.offset("S") == 2606, message="read 2606")
        assert_contiguous(got.of("S"), 1800)
        data, offset, gap = again.read_since("S", 0)
        assert gap and offset == 2606 and data == writer.data[1500:]
        assert again.read_since("S", 99_999) == (writer.data[1500:], 2606, True)


def test_a_restart_rewrites_no_sidecar_and_still_knows_what_was_emitted(
        log_dir: Path) -> None:
    for slug in ("A", "B"):
        append(log_dir / f"{slug}.log", b"first run\n")
    with Tail(log_dir) as tail:
        got = Collector(tail)
        append(log_dir / "A.log", b"more\n")
        wait_until(lambda: got.poll() and tail.offset("A") == 15, message="read A")
    sidecars = {slug: os.stat(log_dir / f"{slug}.log.base") for slug in ("A", "B")}
    assert json.loads((log_dir / "A.log.base").read_text())["end"] == 15
    append(log_dir / "A.log", b"while no cbos ran\n")
    with Tail(log_dir) as again:
        assert again.offset("A") == 33 and again.offset("B") == 10
        for slug, before in sidecars.items():  # the start renamed no file into place
            assert os.stat(log_dir / f"{slug}.log.base").st_ino == before.st_ino
        # Were this process to die now, the next start would still know that bytes up
        # to 15 were emitted: a log cut shorter than that reads as truncated.
        assert json.loads((log_dir / "A.log.base").read_text())["end"] == 15
    assert json.loads((log_dir / "A.log.base").read_text())["end"] == 33


def test_two_tails_rotate_once_and_both_follow_without_a_gap(log_dir: Path) -> None:
    writer = Writer(log_dir / "S.log")
    rearms: list[str] = []

    def rearm(slug: str) -> None:
        rearms.append(slug)
        writer.rearm(slug)

    with Tail(log_dir, max_file_bytes=1000, rearm=rearm) as one, \
            Tail(log_dir, max_file_bytes=1000, rearm=rearm) as two:
        a, b = Collector(one), Collector(two)
        writer.write(b"a" * 1200)
        wait_until(lambda: a.poll() and b.poll() and (log_dir / "S.log.1").exists(),
                   message="rotated")
        writer.write(b"b" * 100)
        wait_until(lambda: a.poll() and b.poll() and one.offset("S") == two.offset("S") == 1300,
                   message="both at 1300")
        assert rearms == ["S"]
        for got in (a, b):
            assert got.raw("S") == writer.data
            assert not any(c.gap for c in got.chunks)


def test_after_a_switch_the_old_file_is_read_to_its_end_before_the_new_one(
        log_dir: Path) -> None:
    writer = Writer(log_dir / "S.log")
    old_fds: list[int] = []

    def rearm(slug: str) -> None:  # like tmux: the new tee starts before the old one exits
        old_fds.append(writer.fd)
        writer.fd = os.open(writer.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    with Tail(log_dir, max_file_bytes=100, rearm=rearm) as tail:
        got = Collector(tail)
        writer.write(b"a" * 150)
        wait_until(lambda: got.poll() and old_fds, message="rotated")
        writer.write(b"new\n")  # the new tee is already writing...
        os.write(old_fds[0], b"late\n")  # ...while the old one flushes what it held
        wait_until(lambda: "late" in got.poll().text("S"), message="late bytes read")
        assert "new" not in got.text("S")  # not before the old file is finished
        os.close(old_fds[0])  # the old tee exits
        got.wait_for("S", "new\n")
        assert got.text("S") == "a" * 150 + "late\nnew\n"
        assert not any(c.gap for c in got.chunks)
        assert_contiguous(got.of("S"), 0)
        assert tail.read_since("S", 0) == (b"a" * 150 + b"late\nnew\n", 159, False)


def test_read_since_in_limited_steps_never_cuts_a_character(log_dir: Path, tail: Tail) -> None:
    data = ("ab€" * 100).encode()  # 500 bytes, a 3-byte character every 5
    (log_dir / "L.log").write_bytes(data)
    got = Collector(tail)
    wait_until(lambda: got.poll() and tail.offset("L") == len(data), message="read it all")
    offset, parts = 0, []
    while offset < tail.offset("L"):
        part, offset, gap = tail.read_since("L", offset, limit=7)
        assert not gap and 0 < len(part) <= 7
        part.decode("utf-8")  # whole characters only
        parts.append(part)
    assert b"".join(parts) == data
