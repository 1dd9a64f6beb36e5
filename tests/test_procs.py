"""The process table read from /proc says what psutil says, for real processes."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time

import psutil

from cbos import procs


def test_proc_reader_agrees_with_psutil_on_a_real_process_tree() -> None:
    # A long name (over the kernel's 15 bytes), argv with a space in one argument, and a
    # zombie child: the fields the board reads from every process.
    script = ("import os, sys, time\n"
              "pid = os.fork()\n"
              "if pid == 0: os._exit(0)\n"
              "print(pid, flush=True); time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", script, "an argument with spaces"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        zombie = int(parent.stdout.readline())
        deadline = time.monotonic() + 30
        while psutil.Process(zombie).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "the child never became a zombie"
            time.sleep(0.05)
        read = procs._read_proc()
        assert read is not None
        table = {p.pid: p for p in read}
        for pid in (parent.pid, zombie):
            info = psutil.Process(pid).as_dict(
                ["ppid", "name", "cmdline", "create_time", "status"])
            expected = procs.Proc(pid=pid, ppid=info["ppid"], name=info["name"],
                                  cmdline=tuple(info["cmdline"] or ()),
                                  create_time=info["create_time"], status=info["status"])
            # The parent's state letter can move (R/S) between the two reads: compare
            # everything else exactly, and that the state is one psutil would name.
            if pid == parent.pid:
                assert table[pid].status in ("running", "sleeping")
                expected = dataclasses.replace(expected, status=table[pid].status)
            assert table[pid] == expected
        assert table[parent.pid].cmdline[-1] == "an argument with spaces"
        assert table[zombie].status == procs.ZOMBIE
        snap = procs.ProcTable.snapshot()
        assert zombie in snap.children[parent.pid]
        # A pid's create_time matches psutil's to the digit: tree_usage relies on it.
        assert snap.tree_usage(parent.pid)[0] > 0
    finally:
        parent.kill()
        parent.wait()


def test_long_names_are_completed_from_argv_like_psutil() -> None:
    argv = ("/usr/bin/a-very-long-program-name", "x")
    assert procs._split_cmdline("\x00".join(argv) + "\x00") == argv
    assert procs._split_cmdline("rewritten title with spaces") == (
        "rewritten", "title", "with", "spaces")
    assert procs._split_cmdline("") == ()


def test_an_exec_under_the_same_name_is_seen_with_its_new_argv() -> None:
    # argv is read once per process image; an exec that keeps the pid, its start time and
    # its name (python -> python) must still show the new argv on the next walk.
    script = ("import os, sys\n"
              "print('ready', flush=True); sys.stdin.readline()\n"
              "os.execv(sys.executable, [sys.executable, '-c',"
              " 'import sys; print(1, flush=True); sys.stdin.readline()',"
              " 'the second image, a longer argv'])\n")
    child = subprocess.Popen([sys.executable, "-c", script, "first"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdin is not None and child.stdout is not None
        assert child.stdout.readline() == "ready\n"
        first = procs.ProcTable.snapshot().procs[child.pid]
        assert first.cmdline[-1] == "first"
        assert procs.ProcTable.snapshot().procs[child.pid] == first  # the cached argv
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.stdout.readline() == "1\n"
        second = procs.ProcTable.snapshot().procs[child.pid]
        assert second.cmdline[-1] == "the second image, a longer argv"
        assert (second.name, second.create_time) == (first.name, first.create_time)
    finally:
        child.kill()
        child.wait()


def test_tree_usage_reads_what_psutil_reads() -> None:
    """Memory and CPU of a tree from /proc, psutil's figures (no psutil import on `ls`)."""
    # A parent that burns some CPU and holds ~30 MB, with a child: both are counted.
    script = ("import subprocess, sys, time\n"
              "block = bytearray(30 * 1024 * 1024)\n"
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
              "end = time.process_time() + 0.3\n"
              "while time.process_time() < end: pass\n"
              "print(child.pid, flush=True); time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        snap = procs.ProcTable.snapshot()
        rss, cpu = snap.tree_usage(parent.pid)
        handles = [psutil.Process(parent.pid), psutil.Process(child)]
        expected_rss = sum(h.memory_info().rss for h in handles)
        expected_cpu = sum(h.cpu_times().user + h.cpu_times().system for h in handles)
        assert rss > 30 * 1024 * 1024
        assert abs(rss - expected_rss) < 1024 * 1024  # both asleep: the same pages
        assert cpu >= 0.3 and abs(cpu - expected_cpu) < 0.05
        assert procs._boot_time() == psutil.boot_time()
        # A pid whose process image is not the snapshot's (reused) counts for nothing.
        stale = procs.ProcTable(procs={parent.pid: dataclasses.replace(
            snap.procs[parent.pid], create_time=snap.procs[parent.pid].create_time - 5)})
        assert stale.tree_usage(parent.pid) == (0, 0.0)
        assert procs.ProcTable().tree_usage(parent.pid) == (0, 0.0)
    finally:
        parent.kill()
        parent.wait()
