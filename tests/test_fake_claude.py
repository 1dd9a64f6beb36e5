"""The fake claude (tests/fakeclaude/main.py) against the recordings of Claude Code 2.1.328.

Each test runs the fake in a pane of a private tmux server, with HOME in a temp dir and a
hook in ``~/.claude/settings.json`` that appends every payload to a file. It compares
payload key lists with the recorded payloads (``*.json``, ``variants/``), event order
with ``timeline.json``, the status file with ``session_pidfile_*.json`` and the screen
with cues from ``screens/``.

Events the recording logged within 10 ms of each other are treated as unordered
(MessageDisplay, for one, fires without being awaited: the recording has it on either
side of Stop and of PreToolUse). Synchronisation is by polling conditions only.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import libtmux
import psutil
import pytest

from tests.fakeclaude import FIXTURES, install_fake_claude
from tests.support import wait_until

T = TypeVar("T")

TIMELINE: dict[str, dict[str, Any]] = {
    scenario["scenario"]: scenario
    for scenario in json.loads((FIXTURES / "timeline.json").read_text(encoding="utf-8"))
}
TIE_S = 0.010
NBSP = "\u00a0"
PROMPT = "\u276f"  # the composer's prompt character
# README.md "Hook events": the 33 event names in the 2.1.328 binary.
ALL_EVENTS = (
    "PreToolUse", "PostToolUse", "PostToolUseFailure", "PostToolBatch", "Notification",
    "UserPromptSubmit", "UserPromptExpansion", "SessionStart", "SessionEnd", "Stop",
    "StopFailure", "SubagentStart", "SubagentStop", "PreCompact", "PostCompact", "PreModelSwitch",
    "PostModelSwitch", "PermissionRequest", "PermissionDenied", "Setup", "TeammateIdle",
    "TaskCreated", "TaskCompleted", "Elicitation", "ElicitationResult", "ConfigChange",
    "WorktreeCreate", "WorktreeRemove", "InstructionsLoaded", "CwdChanged", "FileChanged",
    "DirectoryAdded", "MessageDisplay",
)


def recorded(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return data


def recorded_keys(name: str) -> list[str]:
    return list(recorded(name))


def recorded_screen(name: str) -> str:
    return (FIXTURES / "screens" / f"{name}.txt").read_text(encoding="utf-8")


def assert_order(names: list[str], scenario: str) -> None:
    """``names`` is the recorded sequence, up to events recorded within TIE_S of another."""
    clusters: list[list[str]] = []
    last = -1.0
    for event in TIMELINE[scenario]["events"]:
        if clusters and event["t_rel"] - last < TIE_S:
            clusters[-1].append(event["event"])
        else:
            clusters.append([event["event"]])
        last = event["t_rel"]
    expected = [name for cluster in clusters for name in cluster]
    assert len(names) == len(expected), f"{scenario}: got {names}, recorded {expected}"
    position = 0
    for cluster in clusters:
        got = names[position:position + len(cluster)]
        assert sorted(got) == sorted(cluster), f"{scenario}: got {names}, recorded {expected}"
        position += len(cluster)


class Fake:
    """One fake claude in a tmux pane, with its HOME, project dir and event log."""

    def __init__(self, server: libtmux.Server, root: Path) -> None:
        self.server = server
        self.root = root
        self.home = root / "home"
        self.proj = root / "proj"
        self.events_file = root / "events.jsonl"
        self.env_file = root / "hook-env.txt"
        self.prompt_log = root / "prompts.jsonl"
        self.error_log = root / "fake-errors.log"
        for folder in (self.home / ".claude", self.proj, root / "bin"):
            folder.mkdir(parents=True, exist_ok=True)
        self.shim = install_fake_claude(root / "bin")
        record = f"cat >> {shlex.quote(str(self.events_file))}; " \
                 f"echo >> {shlex.quote(str(self.events_file))}"
        probe = (
            'printf "%s|%s|%s|%s|%s|%s|" "$CLAUDE_PID" "$CLAUDE_CODE_SESSION_ID" '
            '"$CLAUDE_PROJECT_DIR" "$CLAUDECODE" "$CLAUDE_CODE_ENTRYPOINT" "$PPID" '
            f'>> {shlex.quote(str(self.env_file))}; '
            f"tr '\\0' ' ' < /proc/$$/cmdline >> {shlex.quote(str(self.env_file))}; "
            f"echo >> {shlex.quote(str(self.env_file))}"
        )
        hooks: dict[str, Any] = {
            event: [{"hooks": [{"type": "command", "command": record}]}] for event in ALL_EVENTS
        }
        hooks["SessionStart"][0]["hooks"].append({"type": "command", "command": probe})
        self.settings = self.home / ".claude" / "settings.json"
        self.settings.write_text(json.dumps({"hooks": hooks}), encoding="utf-8")
        self.pane: libtmux.Pane | None = None
        self.pid = 0
        self.session_name = ""

    # -- running

    def start(self, *args: str, env: dict[str, str] | None = None,
              exit_file: Path | None = None) -> Fake:
        """Run ``claude ARGS`` in a new pane and wait for its idle composer.

        The pane's process is the fake itself (``exec``), as with the real one, unless
        ``exit_file`` is given: then a shell runs it and writes its exit status there
        (tmux's own ``pane_dead_status`` is sometimes left empty by tmux 3.3a).
        """
        environment = {
            "HOME": str(self.home),
            "FAKE_CLAUDE_SPEED": "4",
            "FAKE_CLAUDE_IDLE_NOTIFY_S": "0.6",
            "FAKE_CLAUDE_PERMISSION_NOTIFY_S": "0.6",
            "FAKE_CLAUDE_LOG": str(self.prompt_log),
            "FAKE_CLAUDE_ERROR_LOG": str(self.error_log),
            **(env or {}),
        }
        command = shlex.join([str(self.shim), *args])
        if exit_file is None:
            command = "exec " + command
        else:
            command += f"; echo $? > {shlex.quote(str(exit_file))}"
        self.session_name = f"fake-{uuid.uuid4().hex[:8]}"
        session = self.server.new_session(
            session_name=self.session_name, window_command=command,
            start_directory=str(self.proj), x=160, y=50, environment=environment,
        )
        pane = session.active_window.active_pane
        assert pane is not None
        self.server.cmd("set-option", "-w", "-t", str(pane.window_id), "remain-on-exit", "on")
        self.pane = pane
        pane_pid = int(str(pane.pane_pid))
        if exit_file is None:
            self.pid = pane_pid
        else:
            self.pid = wait_until(lambda: next(p.pid for p in psutil.Process(pane_pid).children()
                                               if p.name() == "claude"), message="the fake")
        wait_until(lambda: self.status() and "? for shortcuts" in self.screen(),
                   message="the idle composer")
        return self

    def wait_exit(self) -> None:
        def gone() -> bool:
            try:
                return psutil.Process(self.pid).status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                return True

        wait_until(gone, message="the fake to exit")

    def fmt(self, template: str) -> str:
        assert self.pane is not None
        out = self.pane.cmd("display-message", "-p", template).stdout
        return str(out[0]) if out else ""

    def type(self, text: str) -> None:
        assert self.pane is not None
        self.pane.send_keys(text, enter=False, literal=True)

    def key(self, name: str) -> None:
        assert self.pane is not None
        self.pane.send_keys(name, enter=False)

    def submit(self, text: str) -> None:
        self.type(text)
        self.key("Enter")

    def paste(self, text: str) -> None:
        assert self.pane is not None
        source = self.root / f"paste-{uuid.uuid4().hex[:6]}.txt"
        source.write_text(text, encoding="utf-8")
        name = f"fake-{uuid.uuid4().hex[:6]}"
        self.server.load_buffer(str(source), buffer_name=name)
        self.pane.paste_buffer(buffer_name=name, bracket=True, delete_after=True)

    # -- observing

    def events(self) -> list[dict[str, Any]]:
        try:
            raw = self.events_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in raw.split("\n")[:-1] if line.strip()]

    def names(self, since: int = 0) -> list[str]:
        return [event["hook_event_name"] for event in self.events()[since:]]

    def wait_event(self, name: str, since: int = 0, count: int = 1,
                   timeout: float = 10.0) -> list[dict[str, Any]]:
        def found() -> list[dict[str, Any]]:
            hits = [e for e in self.events()[since:] if e["hook_event_name"] == name]
            return hits if len(hits) >= count else []

        return wait_until(found, timeout, message=f"{count} x {name}")

    def last(self, name: str) -> dict[str, Any]:
        return [e for e in self.events() if e["hook_event_name"] == name][-1]

    def assert_quiet(self, since: int, seconds: float) -> None:
        """No new hook event for ``seconds`` (polled, not slept)."""
        deadline = time.monotonic() + seconds
        grew = wait_until(lambda: len(self.events()) > since or time.monotonic() > deadline,
                          seconds + 5, message="quiet period")
        assert grew and len(self.events()) == since, self.names(since)

    def screen(self) -> str:
        assert self.pane is not None
        return "\n".join(self.pane.capture_pane())

    def screen_lines(self) -> list[str]:
        return [line.rstrip(" ") for line in self.screen().split("\n")]

    def status(self) -> dict[str, Any] | None:
        path = self.home / ".claude" / "sessions" / f"{self.pid}.json"
        try:
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None
        return data

    def wait_status(self, status: str, waiting_for: str | None = None) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            data = self.status()
            ok = data and data["status"] == status and data.get("waitingFor") == waiting_for
            return data if ok else None

        return wait_until(check, message=f"status {status}/{waiting_for}")

    def wait_screen(self, *cues: str) -> str:
        def check() -> str | None:
            screen = self.screen()
            return screen if all(cue in screen for cue in cues) else None

        return wait_until(check, message=f"screen cues {cues}")

    def wait_idle(self) -> None:
        self.wait_status("idle")
        self.wait_screen("? for shortcuts")

    def transcript(self, session_id: str) -> list[dict[str, Any]]:
        slug = "".join(c if c.isalnum() else "-" for c in str(self.proj))
        path = self.home / ".claude" / "projects" / slug / f"{session_id}.jsonl"
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[libtmux.Server]:
    """A private tmux server with an empty config; killed afterwards."""
    conf = tmp_path / "tmux.conf"
    conf.write_text("", encoding="utf-8")
    name = f"fake-{uuid.uuid4().hex[:12]}"
    srv = libtmux.Server(socket_name=name, config_file=str(conf))
    try:
        yield srv
    finally:
        with contextlib.suppress(Exception):
            srv.kill()
        # tmux 3.3a leaves the socket file of a killed server behind.
        folder = Path(os.environ.get("TMUX_TMPDIR") or "/tmp") / f"tmux-{os.getuid()}"
        (folder / name).unlink(missing_ok=True)


@pytest.fixture
def fake(server: libtmux.Server, tmp_path: Path) -> Iterator[Fake]:
    harness = Fake(server, tmp_path)
    yield harness
    assert not harness.error_log.exists(), harness.error_log.read_text()


# ------------------------------------------------------------------------------ startup


def test_startup_matches_recording(fake: Fake) -> None:
    (fake.proj / "CLAUDE.md").write_text("# project\n", encoding="utf-8")
    fake.start()
    fake.wait_event("InstructionsLoaded")
    assert_order(fake.names(), "startup")
    start, loaded = fake.events()
    assert list(start) == recorded_keys("variants/SessionStart.startup.json")
    assert list(loaded) == recorded_keys("InstructionsLoaded.json")
    assert start["source"] == "startup" and start["model"] == "claude-opus-5-5"
    assert start["cwd"] == str(fake.proj)
    assert loaded["file_path"] == str(fake.proj / "CLAUDE.md")

    # The status file, key for key (session_pidfile_idle.json).
    status = fake.status()
    assert status is not None
    assert list(status) == recorded_keys("session_pidfile_idle.json")
    stat = Path(f"/proc/{fake.pid}/stat").read_text().rsplit(")", 1)[1].split()
    assert status["procStart"] == stat[19]  # field 22 of /proc/<pid>/stat
    assert status["pid"] == fake.pid
    assert status["sessionId"] == start["session_id"]
    assert status["cwd"] == str(fake.proj)
    assert (status["version"], status["kind"], status["entrypoint"]) == (
        "2.1.328", "interactive", "cli")
    assert status["status"] == "idle" and "waitingFor" not in status
    assert status["tmux"] == fake.fmt("#{session_name}:#{window_id}.#{pane_id}")
    slug = "".join(c if c.isalnum() else "-" for c in str(fake.proj))
    assert start["transcript_path"] == str(
        fake.home / ".claude" / "projects" / slug / f"{status['sessionId']}.jsonl")

    # README.md "Process tree": comm and pane_current_command are "claude".
    assert Path(f"/proc/{fake.pid}/comm").read_text().strip() == "claude"
    assert psutil.Process(fake.pid).name() == "claude"
    assert fake.fmt("#{pane_current_command}") == "claude"

    # README.md "Hook process": claude -> /bin/sh -c COMMAND, with claude's variables.
    pid, session, project, claudecode, entry, ppid, cmdline = (
        fake.env_file.read_text().splitlines()[0].split("|", 6))
    assert (int(pid), session, project, claudecode, entry, int(ppid)) == (
        fake.pid, status["sessionId"], str(fake.proj), "1", "cli", fake.pid)
    assert cmdline.startswith("/bin/sh -c ")

    # screens/01_idle_startup.txt
    lines = fake.screen_lines()
    banner = recorded_screen("01_idle_startup").split("\n")[1].rstrip()
    assert banner in lines
    assert f"{PROMPT}{NBSP}" in lines
    assert lines[-1] == "  ⏸ manual mode on · ? for shortcuts"
    assert lines[-2] == lines[-4] == "─" * 160


# ------------------------------------------------------------------------------ turns


def test_say_turn_and_idle_notification(fake: Fake) -> None:
    fake.start()
    mark = len(fake.events())
    fake.submit("SAY hello")
    fake.wait_event("Notification", mark)
    assert_order(fake.names(mark), "say")
    submit, display, stop, note = fake.events()[mark:]
    assert list(submit) == recorded_keys("UserPromptSubmit.json")
    assert list(display) == recorded_keys("MessageDisplay.json")
    assert list(stop) == recorded_keys("Stop.json")
    assert list(note) == recorded_keys("variants/Notification.idle_prompt.json")
    assert submit["prompt"] == "SAY hello" and submit["permission_mode"] == "default"
    assert (display["delta"], display["index"], display["final"]) == ("hello", 0, True)
    assert stop["last_assistant_message"] == "hello" and stop["background_tasks"] == []
    assert note["message"] == "Claude is waiting for your input"
    assert submit["prompt_id"] == stop["prompt_id"] == note["prompt_id"]
    fake.wait_idle()
    lines = fake.screen_lines()
    assert f"{PROMPT} SAY hello" in lines and "● hello" in lines
    assert any(line.startswith("✻ Worked for ") and " · done " in line for line in lines)

    # Anything else is echoed, as a normal turn.
    fake.submit("hello there")
    wait_until(lambda: fake.last("Stop")["last_assistant_message"] == "echo: hello there")
    transcript = fake.transcript(stop["session_id"])
    assert [entry["type"] for entry in transcript] == ["user", "assistant"] * 2
    user, reply = transcript[:2]
    assert user["message"] == {"role": "user", "content": "SAY hello"}
    assert reply["message"]["content"] == [{"type": "text", "text": "hello"}]
    assert reply["parentUuid"] == user["uuid"] and user["parentUuid"] is None
    logged = [json.loads(line) for line in fake.prompt_log.read_text().splitlines()]
    assert [entry["prompt"] for entry in logged] == ["SAY hello", "hello there"]
    assert {entry["pid"] for entry in logged} == {fake.pid}


def test_run_tool_success_failure_and_order(fake: Fake) -> None:
    fake.start()
    mark = len(fake.events())
    fake.submit("RUN echo hi")
    fake.wait_event("Stop", mark)
    assert_order(fake.names(mark), "run_echo")
    pre = fake.last("PreToolUse")
    post = fake.last("PostToolUse")
    batch = fake.last("PostToolBatch")
    assert list(pre) == recorded_keys("variants/PreToolUse.Bash.json")
    assert list(post) == recorded_keys("variants/PostToolUse.Bash.json")
    assert list(batch) == recorded_keys("PostToolBatch.json")
    assert pre["tool_input"] == {"command": "echo hi", "description": "Run: echo hi"}
    assert list(post["tool_response"]) == list(
        recorded("variants/PostToolUse.Bash.json")["tool_response"])
    assert post["tool_response"]["stdout"] == "hi"
    assert batch["tool_calls"][0]["tool_response"] == "hi"
    assert pre["tool_use_id"] == post["tool_use_id"] == batch["tool_calls"][0]["tool_use_id"]
    fake.wait_screen("Ran 1 shell command", "● done")

    mark = len(fake.events())
    fake.submit("RUN sleep 0.3")
    fake.wait_event("Stop", mark)
    assert_order(fake.names(mark), "run_sleep")

    mark = len(fake.events())
    fake.submit("READ nonexistent.txt")
    fake.wait_event("Stop", mark)
    assert_order(fake.names(mark), "tool_failure")
    failure = fake.last("PostToolUseFailure")
    assert list(failure) == recorded_keys("variants/PostToolUseFailure.Read.json")
    assert failure["error"] == (
        f"File does not exist. Note: your current working directory is {fake.proj}.")
    fake.wait_screen("  Read 1 file · 1 failed", "● done (tool error)")

    mark = len(fake.events())
    fake.submit("RUN echo oops >&2; exit 3")
    fake.wait_event("Stop", mark)
    failure = fake.last("PostToolUseFailure")
    assert list(failure) == recorded_keys("PostToolUseFailure.json")
    assert failure["error"] == "Exit code 3\noops"
    assert fake.names(mark) == ["UserPromptSubmit", "MessageDisplay", "PreToolUse",
                                "PostToolUseFailure", "PostToolBatch", "MessageDisplay", "Stop"]


def test_tool_process_group_and_esc_interrupt(fake: Fake) -> None:
    fake.start()
    mark = len(fake.events())
    fake.submit("RUN sleep 30")
    fake.wait_event("PreToolUse", mark)
    def tool() -> list[psutil.Process]:
        found = [p for p in psutil.Process(fake.pid).children(recursive=True)
                 if p.name() in ("bash", "sleep") and "sleep 30" in " ".join(p.cmdline())]
        return found if len(found) == 2 else []  # bash -c ... and its sleep

    children = wait_until(tool, message="the tool's processes")
    bash = next(p for p in children if p.name() == "bash")
    # ps_tool_running.txt: bash -c ... in its own process group, no controlling terminal;
    # the terminal's foreground group stays claude's.
    claude_stat = Path(f"/proc/{fake.pid}/stat").read_text().rsplit(")", 1)[1].split()
    for child in children:
        stat = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()
        assert int(stat[2]) == bash.pid != fake.pid  # pgrp
        assert (int(stat[4]), int(stat[5])) == (0, -1)  # tty_nr, tpgid
    assert int(claude_stat[5]) == fake.pid  # tpgid: claude is the foreground group
    assert fake.fmt("#{pane_current_command}") == "claude"
    status = fake.wait_status("busy")
    assert list(status) == recorded_keys("session_pidfile_busy_tool.json")
    screen = fake.wait_screen("esc to interrupt", "✻ Thinking…", "⎿  $ sleep 30")
    assert "? for shortcuts" not in screen

    fake.key("Escape")
    fake.wait_screen("⎿ \u00a0Interrupted · What should Claude do instead?",
                     "No result recorded for 1 call")
    fake.wait_status("idle")
    wait_until(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE
                               for p in children), message="the tool to be killed")
    assert psutil.Process(fake.pid).is_running()
    assert_order(fake.names(mark), "interrupt_tool")
    fake.assert_quiet(len(fake.events()), 1.0)  # no hook, no idle_prompt (README.md)


def test_slow_stream_order(fake: Fake) -> None:
    fake.start()
    mark = len(fake.events())
    fake.submit("SLOW 2")
    fake.wait_event("Stop", mark)
    assert_order(fake.names(mark), "slow_stream")
    displays = [e for e in fake.events()[mark:] if e["hook_event_name"] == "MessageDisplay"]
    assert [(d["index"], d["final"]) for d in displays] == [
        *((i, False) for i in range(20)), (20, True)]
    assert displays[0]["delta"] == "chunk 00 of slow reply.\n" and displays[-1]["delta"] == ""
    assert len({d["message_id"] for d in displays}) == 1
    assert fake.last("Stop")["last_assistant_message"] == "\n".join(
        f"chunk {i:02d} of slow reply." for i in range(20))
    fake.wait_screen("● chunk 00 of slow reply.", "  chunk 19 of slow reply.")


def test_stream_interrupt_fires_no_hook(fake: Fake) -> None:
    fake.start(env={"FAKE_CLAUDE_SPEED": "1"})
    mark = len(fake.events())
    fake.submit("SLOW 10")
    fake.wait_event("MessageDisplay", mark, count=3)
    # README.md: while text streams there is no spinner line, only the footer.
    screen = fake.wait_screen("esc to interrupt", "chunk 02 of slow reply.")
    assert "Thinking…" not in screen
    assert fake.status() == fake.wait_status("busy")
    fake.key("Escape")
    fake.wait_screen("⎿ \u00a0Interrupted · What should Claude do instead?")
    fake.wait_status("idle")
    assert_order(fake.names(mark), "interrupt_stream")
    fake.assert_quiet(len(fake.events()), 1.0)
    expected = recorded_screen("14_after_esc_interrupt_stream").split("\n")
    assert expected[44] in fake.screen_lines()


def test_wait_and_think(fake: Fake) -> None:
    fake.start()
    mark = len(fake.events())
    fake.submit("WAIT 2")
    fake.wait_screen("✻ Thinking…", "esc to interrupt")  # screens/07: spinner, no text
    fake.wait_status("busy")
    fake.wait_event("Stop", mark)
    assert_order(fake.names(mark), "wait_first_token")
    assert fake.last("Stop")["last_assistant_message"] == "waited 2 s"

    mark = len(fake.events())
    fake.submit("THINK 2")
    fake.wait_screen("· Mulling… (thinking)")  # screens/08: a thinking spinner
    fake.wait_event("Stop", mark)
    assert_order(fake.names(mark), "think")
    fake.wait_screen("  Thought for 2s", "● thought for 2 s")


# ------------------------------------------------------------------------------ dialogs


def test_write_permission_granted(fake: Fake, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "x.txt"  # outside the project, like /tmp/x.txt
    fake.start()
    mark = len(fake.events())
    fake.submit(f"WRITE {target}")
    status = fake.wait_status("waiting", "permission prompt")
    assert list(status) == recorded_keys("session_pidfile_permission.json")
    recorded_dialog = recorded_screen("09_permission_prompt").split("\n")
    screen = fake.wait_screen("Do you want to create x.txt?")
    for cue in (" Do you want to create x.txt?", f" {PROMPT} 1. Yes", "   3. No",
                " Esc to cancel · Tab to amend", " Create file"):
        assert cue in recorded_dialog and cue in screen.split("\n"), cue
    assert "   2. Yes, and switch to accept edits" in screen and "(shift+tab)" in screen
    note = fake.wait_event("Notification", mark)[0]
    assert list(note) == recorded_keys("variants/Notification.permission_prompt.json")
    assert note["message"] == "Claude needs your permission"
    assert not target.exists()

    fake.key("1")
    fake.wait_event("Stop", mark)
    assert target.read_text() == "written by model backend\n"
    assert_order(fake.names(mark), "write_allow")
    request = fake.last("PermissionRequest")
    assert list(request) == recorded_keys("variants/PermissionRequest.Write.json")
    assert request["permission_suggestions"][1]["directories"] == [str(target.parent)]
    assert list(fake.last("PreToolUse")) == recorded_keys("variants/PreToolUse.Write.json")
    post = fake.last("PostToolUse")
    assert list(post) == recorded_keys("variants/PostToolUse.Write.json")
    assert list(post["tool_response"]) == list(
        recorded("variants/PostToolUse.Write.json")["tool_response"])
    fake.wait_screen(f"⎿ {NBSP}Wrote 1 line to {target}")
    fake.wait_status("idle")


def test_write_denied_ignores_early_keys_and_fires_no_hook(fake: Fake) -> None:
    fake.start(env={"FAKE_CLAUDE_DIALOG_GRACE_S": "1.0",
                    "FAKE_CLAUDE_PERMISSION_NOTIFY_S": "30"})
    mark = len(fake.events())
    fake.submit("WRITE denied.txt")
    fake.wait_screen("Do you want to create denied.txt?",
                     "2. Yes, allow all edits during this session (shift+tab)")
    shown = time.monotonic()
    fake.key("3")  # inside the grace time: ignored (README.md: dialogs ignore keys ~1 s)
    wait_until(lambda: time.monotonic() > shown + 1.2, message="the grace time")
    assert "Do you want to create denied.txt?" in fake.screen()
    fake.key("3")
    fake.wait_screen(f"⎿ {NBSP}Rejected write to denied.txt", "? for shortcuts")
    fake.wait_status("idle")
    assert not (fake.proj / "denied.txt").exists()
    assert_order(fake.names(mark), "write_deny")
    fake.assert_quiet(len(fake.events()), 1.2)  # no Stop, no idle_prompt after a deny


def test_auto_mode_dialog_has_no_permission_request(fake: Fake) -> None:
    fake.start("--permission-mode", "auto")
    mark = len(fake.events())
    fake.submit("WRITE auto.txt")
    fake.wait_status("waiting", "dialog open")
    note = fake.wait_event("Notification", mark)[0]
    assert note["notification_type"] == "agent_needs_input"
    assert note["message"] == (
        "Auto mode can't check actions in this session and needs your choice")
    fake.key("Enter")
    fake.wait_event("Stop", mark)
    assert fake.names(mark) == ["UserPromptSubmit", "PreToolUse", "Notification",
                                "PostToolUse", "PostToolBatch", "MessageDisplay", "Stop"]
    assert fake.events()[mark]["permission_mode"] == "auto"
    assert (fake.proj / "auto.txt").exists()


def test_ask_user_question(fake: Fake) -> None:
    fake.start()
    mark = len(fake.events())
    fake.submit("ASK Pick one?")
    fake.wait_status("waiting", "input needed")
    recorded_dialog = recorded_screen("13_ask_user_question").split("\n")
    screen = fake.wait_screen("Pick one?", "☐ Choice").split("\n")
    for cue in (" ☐ Choice", f"{PROMPT} 1. Alpha", "  2. Beta", "  3. Type something.",
                "  4. Chat about this", "Enter to select · ↑/↓ to navigate · Esc to cancel"):
        assert cue in recorded_dialog and cue in [line.rstrip() for line in screen], cue
    fake.wait_event("Notification", mark)
    fake.key("Enter")
    fake.wait_event("Stop", mark)
    assert_order(fake.names(mark), "ask_user")
    assert list(fake.last("PreToolUse")) == recorded_keys(
        "variants/PreToolUse.AskUserQuestion.json")
    request = fake.last("PermissionRequest")
    assert list(request) == recorded_keys("variants/PermissionRequest.AskUserQuestion.json")
    assert "tool_use_id" not in request
    post = fake.last("PostToolUse")
    assert list(post) == recorded_keys("variants/PostToolUse.AskUserQuestion.json")
    assert post["tool_response"]["answers"] == {"Pick one?": "Alpha"}
    assert "Alpha" in fake.last("Stop")["last_assistant_message"]
    fake.wait_screen(f"⎿ {NBSP}· Pick one? → Alpha")


# ------------------------------------------------------------------------------ background


def test_background_shell_and_task_notification(fake: Fake) -> None:
    fake.start()
    mark = len(fake.events())
    fake.submit("BG sleep 0.6")
    stop = fake.wait_event("Stop", mark)[0]
    [task] = stop["background_tasks"]
    assert (task["type"], task["status"], task["command"]) == ("shell", "running", "sleep 0.6")
    fake.wait_event("Stop", mark, count=2)
    assert_order(fake.names(mark), "bg_bash")
    notification = [e for e in fake.events()[mark:]
                    if e["hook_event_name"] == "UserPromptSubmit"][1]
    assert notification["prompt"].startswith("<task-notification>\n<task-id>" + task["id"])
    assert fake.last("Stop")["background_tasks"] == []
    fake.wait_idle()
    fake.wait_screen('● Background command "Background: sleep 0.6" completed (exit code 0)')


def test_background_shell_status(fake: Fake) -> None:
    fake.start()
    fake.submit("BG sleep 30")
    fake.wait_event("Stop")
    fake.wait_status("shell")  # README.md: idle with a background shell running


def test_agent(fake: Fake) -> None:
    fake.start()
    mark = len(fake.events())
    fake.submit("AGENT SAY sub-hello")
    fake.wait_event("Stop", mark, count=2)
    assert_order(fake.names(mark), "agent")
    assert list(fake.last("SubagentStart")) == recorded_keys("SubagentStart.json")
    stop = fake.last("SubagentStop")
    assert list(stop) == recorded_keys("SubagentStop.json")
    assert stop["last_assistant_message"] == "sub-hello"
    assert list(fake.last("PreToolUse")) == recorded_keys("variants/PreToolUse.Agent.json")
    assert list(fake.last("PostToolUse")) == recorded_keys("variants/PostToolUse.Agent.json")


def test_api_error(fake: Fake) -> None:
    fake.start()
    mark = len(fake.events())
    fake.submit("FAIL 400")
    failure = fake.wait_event("StopFailure", mark)[0]
    assert list(failure) == recorded_keys("StopFailure.json")
    assert failure["error"] == "unknown"
    assert_order(fake.names(mark), "api_error")
    fake.wait_screen("● API Error: 400 mock failure 400")
    fake.wait_status("idle")


# ------------------------------------------------------------------------------ commands


def test_compact_and_clear(fake: Fake) -> None:
    fake.start()
    first = fake.status()
    assert first is not None
    mark = len(fake.events())
    fake.submit("/compact")
    fake.wait_event("PostCompact", mark)
    assert_order(fake.names(mark), "compact")
    pre, sub, start, post = fake.events()[mark:]
    assert list(pre) == recorded_keys("variants/PreCompact.manual.json")
    assert list(sub) == recorded_keys("SubagentStop.json") and sub["agent_type"] == ""
    assert list(start) == recorded_keys("variants/SessionStart.compact.json")
    assert list(post) == recorded_keys("variants/PostCompact.manual.json")
    fake.wait_screen(f"⎿ {NBSP}Compacted (ctrl+o to see full summary)")
    fake.wait_idle()

    mark = len(fake.events())
    fake.submit("/clear")
    fake.wait_event("SessionStart", mark)
    assert_order(fake.names(mark), "clear")
    end, start = fake.events()[mark:]
    assert list(end) == recorded_keys("variants/SessionEnd.clear.json")
    assert list(start) == recorded_keys("variants/SessionStart.clear.json")
    assert end["session_id"] == first["sessionId"] != start["session_id"]
    wait_until(lambda: (fake.status() or {}).get("sessionId") == start["session_id"])
    assert "/compact" not in fake.screen()


def test_cd_after_compact(fake: Fake) -> None:
    """timeline.md cwd_change: InstructionsLoaded(compact) after the next prompt, then
    CwdChanged between PostToolUse and PostToolBatch."""
    (fake.proj / "CLAUDE.md").write_text("# project\n", encoding="utf-8")
    (fake.proj / "sub").mkdir()
    fake.start()
    fake.submit("/compact")
    fake.wait_event("PostCompact")
    fake.wait_idle()
    mark = len(fake.events())
    fake.submit(f"RUN cd {fake.proj / 'sub'}")
    fake.wait_event("Stop", mark)
    assert_order(fake.names(mark), "cwd_change")
    assert fake.last("InstructionsLoaded")["load_reason"] == "compact"
    changed = fake.last("CwdChanged")
    assert list(changed) == recorded_keys("CwdChanged.json")
    assert (changed["old_cwd"], changed["new_cwd"], changed["cwd"]) == (
        str(fake.proj), str(fake.proj / "sub"), str(fake.proj / "sub"))
    assert fake.last("Stop")["cwd"] == str(fake.proj / "sub")
    assert fake.last("PostToolUse")["tool_response"]["noOutputExpected"] is True


def test_queued_prompt_runs_after_the_turn(fake: Fake) -> None:
    fake.start()
    mark = len(fake.events())
    fake.submit("WAIT 2")
    fake.wait_status("busy")
    fake.submit("SAY later")
    fake.wait_event("Stop", mark, count=2)
    prompts = [e["prompt"] for e in fake.events()[mark:]
               if e["hook_event_name"] == "UserPromptSubmit"]
    assert prompts == ["WAIT 2", "SAY later"]


# ------------------------------------------------------------------------------ input


def test_paste_arrives_byte_for_byte(fake: Fake) -> None:
    fake.start()
    text = 'line one\nline "two" \\ tab\there\n  ünïcødé ✓ 😀 $HOME `x` ; end'
    fake.paste(text)
    fake.wait_screen(f"{PROMPT}{NBSP}line one", "  line \"two\"")
    fake.key("Enter")
    submit = fake.wait_event("UserPromptSubmit")[0]
    assert submit["prompt"] == text
    [logged] = [json.loads(line) for line in fake.prompt_log.read_text().splitlines()]
    assert logged["prompt"] == text and logged["pid"] == fake.pid


def test_typed_text_arrives_byte_for_byte(fake: Fake) -> None:
    """``send-keys -l``: LF (Ctrl+J) and Tab are inserted, CR (Enter) submits."""
    fake.start()
    text = "typed\tcolumns and a new\nline ; $(whoami) 日本語"
    fake.type(text)
    fake.wait_screen("  line ; $(whoami)")
    fake.key("Enter")
    assert fake.wait_event("UserPromptSubmit")[0]["prompt"] == text
    [logged] = [json.loads(line) for line in fake.prompt_log.read_text().splitlines()]
    assert logged["prompt"] == text


def test_ctrl_c_clears_text_and_interrupts_without_exiting(fake: Fake) -> None:
    fake.start()
    fake.type("draft text")
    fake.wait_screen(f"{PROMPT}{NBSP}draft text")
    fake.key("C-c")
    wait_until(lambda: f"{PROMPT}{NBSP}" in fake.screen_lines(), message="an empty composer")
    assert "Press Ctrl-C again" not in fake.screen()
    mark = len(fake.events())
    fake.submit("WAIT 20")
    fake.wait_status("busy")
    fake.key("C-c")
    fake.wait_screen("Interrupted · What should Claude do instead?")
    fake.wait_status("idle")
    assert fake.names(mark) == ["UserPromptSubmit"]
    assert psutil.Process(fake.pid).is_running()


@pytest.mark.parametrize("how", ["/exit", "C-c", "C-d", "EXIT 7", "SIGTERM", "SIGHUP"])
def test_exit_paths(fake: Fake, how: str) -> None:
    exit_file = fake.root / "exit-status"
    # SIGHUP: the pane's process is the fake itself, as recorded (exit_sighup); behind a
    # shell the hook could get the second SIGHUP the shell's exit sends.
    fake.start(exit_file=None if how == "SIGHUP" else exit_file)
    session_id = fake.events()[0]["session_id"]
    mark = len(fake.events())
    if how in ("C-c", "C-d"):
        fake.key(how)
        name = "Ctrl-C" if how == "C-c" else "Ctrl-D"
        screen = fake.wait_screen(f"Press {name} again to exit")  # screens/21_*
        assert screen.rstrip().split("\n")[-1] == f"  Press {name} again to exit"
        assert fake.status() is not None and fake.names(mark) == []
        fake.key(how)
    elif how.startswith("SIG"):
        os.kill(fake.pid, getattr(signal, how)) if how == "SIGTERM" else fake.pane.kill()  # type: ignore[union-attr]
    else:
        fake.submit(how)
    end = fake.wait_event("SessionEnd", mark)[0]
    expected = {"/exit": 0, "C-c": 0, "C-d": 0, "EXIT 7": 7, "SIGTERM": 143}
    if how.startswith("SIG"):
        assert end["reason"] == "other"
        assert list(end) == recorded_keys("variants/SessionEnd.other.json")
        assert_order(fake.names(mark), "exit_sigterm")
    else:
        assert end["reason"] == "prompt_input_exit"
        keys = recorded_keys("variants/SessionEnd.prompt_input_exit.json")
        if how in ("C-c", "C-d"):  # no prompt yet, so no prompt_id (timeline.md exit_ctrlc)
            keys.remove("prompt_id")
        assert list(end) == keys
        names = fake.names(mark)
        assert names == (["UserPromptSubmit", "SessionEnd"] if how == "EXIT 7"
                         else ["SessionEnd"])
    fake.wait_exit()
    assert fake.status() is None  # deleted on exit
    if how != "SIGHUP":
        code = wait_until(lambda: exit_file.read_text().strip(), message="the exit status")
        assert int(code) == expected[how]
    if how in ("/exit", "C-c", "C-d", "EXIT 7"):
        # screens/20_after_exit.txt: the hint on the top row, once tmux's "Pane is dead"
        # line has scrolled the screen by one (tmux 3.3a sometimes never writes that line:
        # then the hint is on the second row).
        fake.wait_screen("Resume this session with:", f"--resume {session_id}")
        lines = fake.screen_lines()
        row = lines.index("Resume this session with:")
        assert row in (0, 1) and lines[row + 1] == f"claude --resume {session_id}", lines


# ------------------------------------------------------------------------------ sessions


def test_resume_and_fork(fake: Fake) -> None:
    session_id = str(uuid.uuid4())
    fake.start("--session-id", session_id)
    fake.submit("SAY one")
    fake.wait_event("Stop")
    fake.submit("/exit")
    fake.wait_exit()

    mark = len(fake.events())
    fake.start("--resume", session_id)
    start = fake.wait_event("SessionStart", mark)[0]
    assert (start["session_id"], start["source"]) == (session_id, "resume")
    assert "prompt_id" not in start
    assert (fake.status() or {})["sessionId"] == session_id
    fake.wait_screen(f"{PROMPT} SAY one", "● one")
    fake.submit("SAY two")
    fake.wait_event("Stop", mark)
    transcript = fake.transcript(session_id)
    assert [entry["message"]["content"] for entry in transcript if entry["type"] == "user"] == [
        "SAY one", "SAY two"]
    assert transcript[2]["parentUuid"] == transcript[1]["uuid"]
    fake.submit("/exit")
    fake.wait_exit()

    mark = len(fake.events())
    fake.start("--resume", session_id, "--fork-session")
    start = fake.wait_event("SessionStart", mark)[0]
    forked = start["session_id"]
    assert forked != session_id and start["source"] == "fork"
    assert fake.transcript(forked) == fake.transcript(session_id)


@pytest.mark.parametrize("form", ["inline", "file"])
def test_settings_flag_hooks_matchers_and_blocking(fake: Fake, form: str) -> None:
    markers = fake.root / "markers.txt"
    append = f">> {shlex.quote(str(markers))}"
    extra = {"hooks": {
        "Stop": [{"hooks": [{"type": "command", "command": f"echo from-settings {append}"}]}],
        "PreToolUse": [
            {"matcher": "Write|Edit",
             "hooks": [{"type": "command", "command": f"echo write-matcher {append}"}]},
            {"matcher": "Bash",
             "hooks": [{"type": "command", "command": "echo no bash here >&2; exit 2"}]},
        ],
    }}
    if form == "inline":
        value = json.dumps(extra)
    else:
        (fake.root / "extra.json").write_text(json.dumps(extra), encoding="utf-8")
        value = str(fake.root / "extra.json")
    fake.start("--settings", value, "--model", "sonnet")
    assert fake.events()[0]["model"] == "claude-sonnet-5-5"
    mark = len(fake.events())
    fake.submit(f"RUN touch {fake.proj / 'never'}")
    fake.wait_event("Stop", mark)
    assert not (fake.proj / "never").exists()  # the exit-2 PreToolUse hook blocked it
    assert_order(fake.names(mark), "deny_rule")  # no PostToolUse, like a deny rule
    assert "no bash here" in fake.last("PostToolBatch")["tool_calls"][0]["tool_response"]
    # Both sources' Stop hooks ran (the user's one first, so wait for the other).
    assert wait_until(lambda: markers.read_text().split()) == ["from-settings"]
