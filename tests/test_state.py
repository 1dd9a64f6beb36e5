"""State inference, replayed from the recordings of the real Claude Code 2.1.328.

The recorded events (events_all.jsonl), the scenario windows and status-file snapshots
(timeline.json), the screens and the process trees live in
tests/fixtures/claude-code-2.1.328/. Rows marked "synthetic" build an event the recording
does not have out of a recorded payload of the same kind, and say why.
"""

from __future__ import annotations

import bisect
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from cbos import state as st
from cbos.dialog import parse_dialog
from cbos.events import HookEvent, parse_line
from cbos.procs import Proc, ProcTable
from cbos.state import Phase, Signals, State, StatusFile, ToolProc, Track

FIXTURES = Path(__file__).parent / "fixtures" / "claude-code-2.1.328"
W, P, T, K, IDLE, X = (State.WAITING, State.PERMISSION, State.THINKING, State.WORKING,
                       State.IDLE, State.EXITED)
MAIN_PID = 19909  # the claude of every scenario up to "exit" (ps_tool_running.txt)


# ------------------------------------------------------------------- recorded data


def to_event(record: Mapping[str, Any]) -> HookEvent:
    """A recording line as cbos's own hook writes it, read back by events.parse_line."""
    line = json.dumps({"ts": record["ts"], "cbos_session": record["cbos_session"],
                       "tmux_pane": record["tmux_pane"], "claude_pid": str(record["pppid"]),
                       "payload": record["payload"]})
    event = parse_line(line)
    assert event is not None
    return event


@cache
def recorded_events() -> tuple[HookEvent, ...]:
    with open(FIXTURES / "events_all.jsonl", encoding="utf-8") as handle:
        return tuple(to_event(json.loads(line)) for line in handle if line.strip())


@cache
def timeline() -> tuple[dict[str, Any], ...]:
    return tuple(json.loads((FIXTURES / "timeline.json").read_text(encoding="utf-8")))


def scenario(name: str) -> dict[str, Any]:
    return next(s for s in timeline() if s["scenario"] == name)


def scenario_events(name: str) -> tuple[list[HookEvent], list[HookEvent]]:
    """(everything before the scenario, the scenario's own events), in file order."""
    starts = [s["t_send"] for s in timeline()]
    index = [s["scenario"] for s in timeline()].index(name)
    before, own = [], []
    for event in recorded_events():
        at = bisect.bisect_right(starts, event.ts) - 1
        if at < index:
            before.append(event)
        elif at == index:
            own.append(event)
    return before, own


def fold_all(events: Sequence[HookEvent], track: Track | None = None) -> Track | None:
    for event in events:
        track = st.fold(track, event)
    return track


def track_at(ts: float) -> Track:
    track = fold_all([e for e in recorded_events() if e.ts <= ts])
    assert track is not None
    return track


def find(name: str, scenario_name: str, nth: int = 0) -> HookEvent:
    return [e for e in scenario_events(scenario_name)[1] if e.name == name][nth]


def payload(file: str, **changes: Any) -> dict[str, Any]:
    data = json.loads((FIXTURES / file).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    data.update(changes)
    return data


def event_from(base: HookEvent, ts: float, data: Mapping[str, Any]) -> HookEvent:
    """A synthetic event in the same pane/claude as a recorded one."""
    return replace(base, ts=ts, name=str(data["hook_event_name"]), payload=dict(data))


def signals(track: Track | None, now: float, **more: Any) -> Signals:
    pid = more.pop("claude_pid", track.claude_pid if track is not None else MAIN_PID)
    return Signals(now=now, track=track, claude_pid=pid, **more)


def status_file(snapshot: Mapping[str, Any], pid: int, session_id: str = "") -> StatusFile:
    return StatusFile(pid=pid, session_id=session_id, cwd="/home/dev/proj",
                      status=snapshot["status"], waiting_for=snapshot["waitingFor"],
                      tmux="fixtures:@0.%0", proc_start=None,
                      status_updated_at=snapshot["statusUpdatedAt"] / 1000)


def snapshot(scenario_name: str, label: str) -> dict[str, Any]:
    found = [p for p in scenario(scenario_name)["pidfile_status"] if p["label"] == label]
    assert found, label
    return dict(found[0])


# ----------------------------------------------------------------- enum, icons, order


def test_states_are_the_six_lowercase_strings() -> None:
    assert [s.value for s in State] == ["waiting", "permission", "thinking", "working",
                                        "idle", "exited"]
    assert State("permission") is State.PERMISSION and f"{State.IDLE}" == "idle"


def test_attention_order_and_icons() -> None:
    assert st.ATTENTION_ORDER == (P, W, K, T, IDLE, X)
    assert {s: s.icon for s in State} == {W: "●", P: "⚠", T: "◐", K: "◑", IDLE: "○", X: "✗"}
    assert dict(st.ICONS) == {s: s.icon for s in State}


# ----------------------------------------------- every recorded event, step by step


class Step(NamedTuple):
    event: str
    state: State
    reason: str  # must appear in the reason ("" = anything)


def steps(*rows: tuple[str, State, str] | list[Step]) -> list[Step]:
    flat: list[Step] = []
    for row in rows:
        flat.extend(row if isinstance(row, list) else [Step(*row)])
    return flat


def times(n: int, event: str, state: State, reason: str) -> list[Step]:
    return [Step(event, state, reason)] * n


class Replay(NamedTuple):
    scenario: str
    steps: list[Step]


REPLAYS = [
    Replay("startup", steps(("SessionStart", IDLE, "no turn yet"),
                            ("InstructionsLoaded", IDLE, "no turn yet"))),
    # Waiting shows at Stop; the idle_prompt Notification 5 s later changes nothing.
    Replay("say", steps(("UserPromptSubmit", T, 'thinking about "SAY hello"'),
                        ("MessageDisplay", T, 'writing: "hello"'),
                        ("Stop", W, 'done: "hello"'),
                        ("Notification", W, 'done: "hello"'))),
    Replay("run_echo", steps(("UserPromptSubmit", T, "RUN echo hi"),
                             ("MessageDisplay", T, "writing"),
                             ("PreToolUse", K, "Bash: echo hi"),
                             ("PostToolUse", T, "after Bash: echo hi"),
                             ("PostToolBatch", T, ""),
                             ("MessageDisplay", T, 'writing: "done"'),
                             ("Stop", W, 'done: "done"'))),
    Replay("run_sleep", steps(("UserPromptSubmit", T, "RUN sleep 6"),
                              ("PreToolUse", K, "Bash: sleep 6"),
                              ("MessageDisplay", K, "Bash: sleep 6"),
                              ("PostToolUse", T, "after Bash: sleep 6"),
                              ("PostToolBatch", T, ""),
                              ("MessageDisplay", T, ""),
                              ("Stop", W, "done"))),
    # MessageDisplay lands after its Stop (and 4 ms older): it must not reopen the turn.
    Replay("slow_stream", steps(("UserPromptSubmit", T, "SLOW 6"),
                                times(19, "MessageDisplay", T, 'writing: "chunk'),
                                ("Stop", W, 'done: "chunk 00 of slow reply.…"'),
                                times(2, "MessageDisplay", W, "done"))),
    Replay("wait_first_token", steps(("UserPromptSubmit", T, "WAIT 5"),
                                     ("MessageDisplay", T, ""),
                                     ("Stop", W, "waited 5 s"))),
    Replay("think", steps(("UserPromptSubmit", T, "THINK 5"),
                          ("Stop", W, "thought for 5 s"),
                          ("MessageDisplay", W, "thought for 5 s"))),
    Replay("write_allow", steps(("UserPromptSubmit", T, ""),
                                ("PreToolUse", K, "Write: /tmp/x.txt"),
                                ("PermissionRequest", P, "asks to use Write: /tmp/x.txt"),
                                ("Notification", P, "asks to use Write: /tmp/x.txt"),
                                ("PostToolUse", T, "after Write: /tmp/x.txt"),
                                ("PostToolBatch", T, ""),
                                ("Stop", W, "done"),
                                ("MessageDisplay", W, "done"))),
    Replay("write_deny", steps(("UserPromptSubmit", T, ""),
                               ("PreToolUse", K, "Write"),
                               ("PermissionRequest", P,
                                "asks to use Write: /home/dev/proj/denied.txt"))),
    Replay("ask_user", steps(("UserPromptSubmit", T, ""),
                             ("PreToolUse", K, "AskUserQuestion: Pick one?"),
                             ("PermissionRequest", P, "asks: Pick one?"),
                             ("Notification", P, "asks: Pick one?"),
                             ("PostToolUse", T, ""),
                             ("PostToolBatch", T, ""),
                             ("Stop", W, "done"),
                             ("MessageDisplay", W, "done"))),
    Replay("tool_failure", steps(("UserPromptSubmit", T, ""),
                                 ("PreToolUse", K, "Read: /home/dev/proj/nonexistent.txt"),
                                 ("PostToolUseFailure", T, "after Read"),
                                 ("PostToolBatch", T, ""),
                                 ("Stop", W, 'done: "done (tool error)"'),
                                 ("MessageDisplay", W, ""))),
    # A settings deny rule: PreToolUse, then only PostToolBatch ends the tool.
    Replay("deny_rule", steps(("UserPromptSubmit", T, ""),
                              ("MessageDisplay", T, ""),
                              ("PreToolUse", K, "Bash: rm -f /home/dev/proj/nothing"),
                              ("PostToolBatch", T, ""),
                              ("Stop", W, "tool error"),
                              ("MessageDisplay", W, ""))),
    Replay("file_changed", steps(("FileChanged", W, "tool error"))),
    Replay("interrupt_stream", steps(("UserPromptSubmit", T, "SLOW 10"),
                                     times(3, "MessageDisplay", T, "writing"))),
    Replay("interrupt_tool", steps(("UserPromptSubmit", T, "RUN sleep 20"),
                                   ("PreToolUse", K, "Bash: sleep 20"),
                                   ("MessageDisplay", K, "Bash: sleep 20"))),
    # SubagentStop must not end the main turn; the task-notification turn shows its work.
    Replay("agent", steps(("UserPromptSubmit", T, "AGENT SAY sub-hello"),
                          ("PreToolUse", K, "Agent: recorded subagent"),
                          ("PostToolUse", T, "after Agent: recorded subagent"),
                          ("SubagentStart", T, ""),
                          ("PostToolBatch", T, ""),
                          ("SubagentStop", T, "after Agent"),
                          ("MessageDisplay", T, ""),
                          ("Stop", W, 'done: "done"'),
                          ("UserPromptSubmit", T, 'Agent "recorded subagent" finished'),
                          ("MessageDisplay", T, "recorded subagent"),
                          ("Stop", W, 'done: "OK"'))),
    Replay("bg_bash", steps(("UserPromptSubmit", T, "BG sleep 3"),
                            ("PreToolUse", K, "Bash: sleep 3"),
                            ("PostToolUse", T, ""),
                            ("PostToolBatch", T, ""),
                            ("Stop", W, 'done: "done" · background: 1 shell running'),
                            ("MessageDisplay", W, "background: 1 shell running"),
                            ("UserPromptSubmit", T,
                             'Background command "Background: sleep 3" completed'),
                            ("MessageDisplay", T, "Background command"),
                            ("Stop", W, 'done: "OK"'))),
    Replay("api_error", steps(("UserPromptSubmit", T, "FAIL 400"),
                              ("StopFailure", W, "API error 400: request failed"))),
    Replay("slash_expansion", steps(("UserPromptSubmit", T, "/hello"),
                                    ("UserPromptExpansion", T, "/hello"),
                                    ("Stop", W, "expanded-hello"),
                                    ("MessageDisplay", W, "expanded-hello"))),
    # /compact: no UserPromptSubmit/Stop; its SubagentStop and SessionStart(compact)
    # happen inside the compaction.
    Replay("compact", steps(("PreCompact", T, "compacting (manual)"),
                            ("SubagentStop", T, "compacting"),
                            ("SessionStart", T, "compacting"),
                            ("PostCompact", W, "compacted"))),
    Replay("model_switch", steps(times(2, "", W, "compacted"))),
    Replay("config_change", steps(("ConfigChange", W, "compacted"))),
    Replay("cwd_change", steps(("UserPromptSubmit", T, "RUN cd /home/dev/proj/sub"),
                               ("InstructionsLoaded", T, ""),
                               ("MessageDisplay", T, ""),
                               ("PreToolUse", K, "Bash: cd /home/dev/proj/sub"),
                               ("PostToolUse", T, ""),
                               ("CwdChanged", T, ""),
                               ("PostToolBatch", T, ""),
                               ("MessageDisplay", T, ""),
                               ("Stop", W, "done"))),
    Replay("add_dir", steps(("DirectoryAdded", W, "done"))),
    Replay("clear", steps(("SessionEnd", IDLE, "new conversation (/clear)"),
                          ("SessionStart", IDLE, "new conversation (/clear)"))),
    # After each exit a new claude (new pid) starts in the same pane for the next scenario.
    Replay("exit", steps(("SessionEnd", IDLE, "claude is exiting (quit at the prompt)"),
                         ("SessionStart", IDLE, "no turn yet"))),
    Replay("exit_ctrlc", steps(("SessionEnd", IDLE, "quit at the prompt"),
                               ("SessionStart", IDLE, "no turn yet"))),
    Replay("exit_ctrld", steps(("SessionEnd", IDLE, "quit at the prompt"),
                               ("SessionStart", IDLE, "no turn yet"))),
    Replay("exit_sigterm", steps(("SessionEnd", IDLE, "claude is exiting (terminated)"),
                                 ("SessionStart", IDLE, "no turn yet"))),
    Replay("exit_sighup", steps(("SessionEnd", IDLE, "terminated"))),
]


def test_every_recorded_scenario_with_events_is_replayed() -> None:
    with_events = {s["scenario"] for s in timeline() if scenario_events(s["scenario"])[1]}
    assert with_events == {r.scenario for r in REPLAYS}


@pytest.mark.parametrize("replay", REPLAYS, ids=[r.scenario for r in REPLAYS])
def test_replay_state_after_each_recorded_event(replay: Replay) -> None:
    before, own = scenario_events(replay.scenario)
    track = fold_all(before)
    assert [e.name for e in own] == [s.event or e.name for s, e in
                                     zip(replay.steps, own, strict=False)]
    assert len(own) == len(replay.steps)
    for event, step in zip(own, replay.steps, strict=True):
        track = st.fold(track, event)
        verdict = st.infer(signals(track, event.ts, claude_pid=event.claude_pid))
        where = f"{replay.scenario}: after {event.name} at {event.ts}"
        assert verdict.state == step.state, f"{where}: {verdict}"
        assert step.reason in verdict.reason, f"{where}: {verdict}"
        assert verdict.since <= event.ts + 0.01, where


# ------------------------------------------- the status-file snapshots of timeline.json


class Snap(NamedTuple):
    scenario: str
    label: str
    state: State
    reason: str


SNAPS = [
    Snap("startup", "01_idle_startup", IDLE, "no turn yet"),
    Snap("say", "02_after_say_done", W, 'done: "hello"'),
    Snap("say", "03_idle_after_idle_notification", W, 'done: "hello"'),
    Snap("run_echo", "04_after_run_echo", W, "done"),
    Snap("run_sleep", "05_tool_running", K, "Bash: sleep 6"),
    Snap("slow_stream", "06_streaming", T, 'writing: "chunk 03 of slow reply."'),
    Snap("wait_first_token", "07_waiting_for_first_token", T, "WAIT 5"),
    Snap("think", "08_thinking_block_streaming", T, "THINK 5"),
    Snap("think", "08b_after_thinking", W, "thought for 5 s"),
    Snap("write_allow", "09_permission_prompt", P, "asks to use Write: /tmp/x.txt"),
    Snap("write_allow", "10_permission_prompt_after_notification", P, "Write: /tmp/x.txt"),
    # Taken 0.06 s after the Stop hook (its screen still says "running Stop hook").
    Snap("write_allow", "11_after_permission_granted", W, "done"),
    # No hook at all after "No": only the status file going idle tells.
    Snap("write_deny", "12_after_permission_denied", W,
         "permission denied: Write: /home/dev/proj/denied.txt"),
    Snap("write_deny", "8s after deny", W, "permission denied"),
    Snap("ask_user", "13_ask_user_question", P, "asks: Pick one?"),
    Snap("interrupt_stream", "streaming", T, "writing"),
    Snap("interrupt_stream", "14_after_esc_interrupt_stream", W, "interrupted (Esc)"),
    Snap("interrupt_stream", "8s after interrupt", W, "interrupted (Esc)"),
    Snap("interrupt_tool", "15_after_esc_interrupt_tool", W, "interrupted (Esc)"),
    Snap("interrupt_tool", "8s after interrupt", W, "interrupted (Esc)"),
    Snap("agent", "16_after_agent", W, 'done: "OK"'),
    Snap("bg_bash", "after first Stop (bg task running)", W, "background: 1 shell running"),
    Snap("api_error", "17_after_api_error", W, "API error 400: request failed"),
    Snap("compact", "18_after_compact", W, "compacted"),
    # /add-dir's trust dialog fires no hook; the file says waiting / dialog open.
    Snap("add_dir", "19_add_dir_trust_dialog", P, "dialog"),
    Snap("exit_ctrlc", "21_after_one_ctrlc", IDLE, "no turn yet"),
    Snap("exit_ctrld", "21_after_one_ctrld", IDLE, "no turn yet"),
]


def test_every_status_snapshot_is_checked() -> None:
    recorded = {(s["scenario"], p["label"]) for s in timeline() for p in s["pidfile_status"]
                if p["status"] is not None}
    assert recorded == {(s.scenario, s.label) for s in SNAPS}


@pytest.mark.parametrize("snap", SNAPS, ids=[f"{s.scenario}/{s.label}" for s in SNAPS])
@pytest.mark.parametrize("with_screen", [False, True], ids=["file", "file+screen"])
def test_state_at_each_status_snapshot(snap: Snap, with_screen: bool) -> None:
    recorded = snapshot(snap.scenario, snap.label)
    now = scenario(snap.scenario)["t_send"] + recorded["t_rel"]
    track = track_at(now)
    assert track.claude_pid is not None
    screen = FIXTURES / "screens" / f"{snap.label}.txt"
    dialog = parse_dialog(screen.read_text(encoding="utf-8")) if with_screen \
        and screen.exists() else None
    verdict = st.infer(signals(track, now, status=status_file(recorded, track.claude_pid),
                               dialog=dialog))
    assert (verdict.state, snap.reason in verdict.reason) == (snap.state, True), verdict


def test_trust_dialog_reason_names_the_directory_from_the_screen() -> None:
    recorded = snapshot("add_dir", "19_add_dir_trust_dialog")
    now = scenario("add_dir")["t_send"] + recorded["t_rel"]
    track = track_at(now)
    screen = (FIXTURES / "screens" / "19_add_dir_trust_dialog.txt").read_text(encoding="utf-8")
    verdict = st.infer(signals(track, now, status=status_file(recorded, MAIN_PID),
                               dialog=parse_dialog(screen)))
    assert verdict == st.Verdict(P, "dialog: Is this a directory you created or one you trust?",
                                 recorded["statusUpdatedAt"] / 1000)
    # Without the screen the status file's own words are the reason.
    bare = st.infer(signals(track, now, status=status_file(recorded, MAIN_PID)))
    assert (bare.state, bare.reason) == (P, "dialog open")


def test_after_exit_the_dead_pane_shows_exited_with_the_status() -> None:
    recorded = snapshot("exit", "20_after_exit")
    assert recorded["status"] is None  # the status file is deleted on exit
    now = scenario("exit")["t_send"] + recorded["t_rel"]
    track = fold_all([e for e in recorded_events() if e.ts <= now and e.claude_pid == MAIN_PID])
    verdict = st.infer(Signals(now=now, track=track, claude_pid=None, pane_dead=True,
                               dead_status=0, dead_since=now - 1))
    assert verdict == st.Verdict(X, "claude exited with status 0 (quit at the prompt)", now - 1)


# ---------------------------------------------------------------- rules, one by one


def test_permission_shows_at_once_at_permission_request_with_its_since() -> None:
    request, notification = find("PermissionRequest", "write_allow"), find(
        "Notification", "write_allow")
    pre = find("PreToolUse", "write_allow")
    assert 0 < request.ts - pre.ts < 0.2  # ~0.1 s after PreToolUse
    at_request = st.infer(signals(track_at(request.ts), request.ts))
    assert (at_request.state, at_request.since) == (P, request.ts)
    # The permission_prompt Notification (6.4 s later) does not restart the clock.
    later = st.infer(signals(track_at(notification.ts), notification.ts + 1))
    assert (later.state, later.since) == (P, request.ts)


def test_waiting_since_is_the_stop_not_the_idle_notification() -> None:
    stop, idle = find("Stop", "say"), find("Notification", "say")
    assert idle.payload["notification_type"] == "idle_prompt" and idle.ts - stop.ts > 5
    verdict = st.infer(signals(track_at(idle.ts), idle.ts))
    assert (verdict.state, verdict.since) == (W, stop.ts)


def test_granted_permission_leaves_permission_when_the_status_file_goes_busy() -> None:
    # write_allow: busy at 002.337, PostToolUse only at 002.403.
    recorded = snapshot("write_allow", "11_after_permission_granted")
    busy_at = recorded["statusUpdatedAt"] / 1000
    assert find("Notification", "write_allow").ts < busy_at < find("PostToolUse",
                                                                   "write_allow").ts
    track = track_at(busy_at)
    assert track.permission is not None
    before = st.infer(signals(track, busy_at, status=status_file(
        snapshot("write_allow", "10_permission_prompt_after_notification"), MAIN_PID)))
    assert before.state == P
    verdict = st.infer(signals(track, busy_at + 0.01,
                               status=status_file(recorded, MAIN_PID)))
    assert verdict == st.Verdict(K, "Write: /tmp/x.txt", busy_at)


def test_answered_question_leaves_permission_when_the_status_file_goes_busy() -> None:
    request = find("PermissionRequest", "ask_user")
    track = track_at(find("Notification", "ask_user").ts)
    busy = StatusFile(MAIN_PID, track.session_id, "", "busy", None, None, None,
                      find("PostToolUse", "ask_user").ts - 0.05)
    verdict = st.infer(signals(track, busy.status_updated_at or 0, status=busy))
    assert verdict.state == T and "Pick one?" in verdict.reason
    assert request.ts < verdict.since


def bash_permission_track(command: str) -> tuple[Track, float]:
    """synthetic: a Bash tool that asks (the recordings only ask for Write/AskUserQuestion).

    Built from write_deny's recorded UserPromptSubmit, the recorded Bash PreToolUse
    variant, and the recorded PermissionRequest.Write variant with the tool swapped.
    """
    base = find("UserPromptSubmit", "write_deny")
    track = fold_all(scenario_events("write_deny")[0] + [base])
    tool_input = {"command": command, "description": "Run tests"}
    pre = payload("variants/PreToolUse.Bash.json", tool_input=tool_input)
    ask = payload("variants/PermissionRequest.Write.json", tool_name="Bash",
                  tool_input=tool_input)
    ask.pop("permission_suggestions", None)
    track = fold_all([event_from(base, base.ts + 0.1, pre),
                      event_from(base, base.ts + 0.2, ask)], track)
    assert track is not None
    return track, base.ts + 0.2


def test_granted_bash_leaves_permission_when_its_process_appears() -> None:
    track, asked = bash_permission_track("npm test")
    old_shell = ToolProc(4100, "sleep 300", started=asked - 60)  # a background shell
    assert st.infer(signals(track, asked + 1, tools=(old_shell,))).state == P
    runner = ToolProc(4123, "npm test", started=asked + 2)
    verdict = st.infer(signals(track, asked + 3, tools=(old_shell, runner)))
    assert verdict == st.Verdict(K, "Bash running: npm test (pid 4123)", asked + 2)


def test_bash_without_a_process_yet_is_working_with_its_command() -> None:
    pre = find("PreToolUse", "run_sleep")
    verdict = st.infer(signals(track_at(pre.ts), pre.ts))
    assert verdict == st.Verdict(K, "Bash: sleep 6", pre.ts)


def ps_table(name: str, start: float) -> ProcTable:
    """A ProcTable from a recorded ps_*.txt tree (indentation = parent)."""
    table = ProcTable()
    parents: list[tuple[int, int]] = []  # (indent, pid)
    for line in (FIXTURES / name).read_text(encoding="utf-8").splitlines():
        indent = len(line) - len(line.lstrip())
        fields = line.split()
        pid = int(fields[0])
        comm = line.split(" comm=", 1)[1].split(" cmd=", 1)[0]
        cmd = tuple(line.split(" cmd=", 1)[1].split())
        while parents and parents[-1][0] >= indent:
            parents.pop()
        ppid = parents[-1][1] if parents else 1
        parents.append((indent, pid))
        table.procs[pid] = Proc(pid, ppid, comm, cmd, start + len(table.procs) * 0.01, "sleeping")
        table.children.setdefault(ppid, []).append(pid)
    return table


def test_tool_procs_name_the_command_not_claudes_bash_wrapper() -> None:
    pre = find("PreToolUse", "run_sleep")
    table = ps_table("ps_tool_running.txt", pre.ts + 0.05)
    claude = table.procs[MAIN_PID]
    tools = st.tool_procs(table, claude)
    assert [(t.pid, t.command) for t in tools] == [(20456, "sleep 6")]
    recorded = snapshot("run_sleep", "05_tool_running")
    now = scenario("run_sleep")["t_send"] + recorded["t_rel"]
    verdict = st.infer(signals(track_at(now), now, tools=tools,
                               status=status_file(recorded, MAIN_PID)))
    assert verdict == st.Verdict(K, "Bash running: sleep 6 (pid 20456)", pre.ts)
    # After Esc the process is gone (ps_after_tool_interrupt.txt: claude alone).
    after = ps_table("ps_after_tool_interrupt.txt", pre.ts)
    assert st.tool_procs(after, after.procs[MAIN_PID]) == ()


@pytest.mark.parametrize(("cmdline", "command"), [
    # The wrapper's shape per the fixture README ("… eval '<cmd>'"); shell-quote escapes.
    ("/bin/bash -c source /home/dev/.claude/shell-snapshots/snapshot-bash-1-a.sh "
     "2>/dev/null || true && eval 'npm test' \\< /dev/null && pwd -P >| /tmp/cwd",
     "npm test"),
    ("/bin/bash -c source /x/shell-snapshots/s.sh && eval 'echo '\\''hi'\\''' < /dev/null",
     "echo 'hi'"),
    ("node server.js", "node server.js"),
])
def test_human_command_of_a_tool_process(cmdline: str, command: str) -> None:
    table = ProcTable()
    claude = Proc(10, 1, "claude", ("claude",), 1.0, "sleeping")
    tool = Proc(11, 10, "bash", tuple(cmdline.split(" ")), 2.0, "sleeping")
    for proc in (claude, tool):
        table.procs[proc.pid] = proc
        table.children.setdefault(proc.ppid, []).append(proc.pid)
    assert st.tool_procs(table, claude) == (ToolProc(11, command, 2.0),)


def test_raw_wrapper_command_line_still_matches_the_pending_bash_tool() -> None:
    # cbos.model passes ToolProc(pid, proc.command) without a start time.
    pre = find("PreToolUse", "run_sleep")
    wrapper = ToolProc(20456, "/bin/bash -c source /home/dev/.claude/shell-snapshots/s.sh "
                              "&& eval 'sleep 6' \\< /dev/null && pwd -P >| /tmp/c")
    verdict = st.infer(signals(track_at(pre.ts), pre.ts + 1, tools=(wrapper,)))
    assert verdict.reason == "Bash running: sleep 6 (pid 20456)"


def test_thinking_between_prompt_and_first_tool() -> None:
    prompt, pre = find("UserPromptSubmit", "run_sleep"), find("PreToolUse", "run_sleep")
    verdict = st.infer(signals(track_at(prompt.ts), (prompt.ts + pre.ts) / 2))
    assert verdict == st.Verdict(T, 'thinking about "RUN sleep 6"', prompt.ts)


def test_a_process_without_its_pre_tool_use_still_means_working() -> None:
    prompt = find("UserPromptSubmit", "wait_first_token")
    track = track_at(prompt.ts)
    late = ToolProc(5000, "make", started=prompt.ts + 1)
    stale = ToolProc(4999, "mcp-server", started=prompt.ts - 100)  # older: not this turn
    assert st.infer(signals(track, prompt.ts + 2, tools=(stale,))).state == T
    verdict = st.infer(signals(track, prompt.ts + 2, tools=(stale, late)))
    assert verdict == st.Verdict(K, "running: make (pid 5000)", prompt.ts + 1)


def test_background_shell_after_stop_is_not_working() -> None:
    stop = find("Stop", "bg_bash")
    shell = ToolProc(6000, "sleep 3", started=stop.ts - 0.2)  # stays under claude (README)
    verdict = st.infer(signals(track_at(stop.ts), stop.ts + 0.5, tools=(shell,)))
    assert verdict.state == W and verdict.reason.endswith("background: 1 shell running")


def test_stop_failure_is_waiting_with_the_error() -> None:
    failure = find("StopFailure", "api_error")
    verdict = st.infer(signals(track_at(failure.ts), failure.ts + 3))
    assert verdict == st.Verdict(
        W, 'API error 400: request failed · "API Error: 400 mock failure 400"', failure.ts)


def test_claude_not_alive_in_a_live_pane_is_idle() -> None:
    end = find("SessionEnd", "exit")
    track = fold_all([e for e in recorded_events() if e.claude_pid == MAIN_PID])
    verdict = st.infer(Signals(now=end.ts + 5, track=track, claude_pid=None))
    assert verdict == st.Verdict(IDLE, "claude not running in the pane · it quit at the prompt",
                                 end.ts)
    assert st.infer(Signals(now=9.0, claude_pid=None)) == st.Verdict(
        IDLE, "claude not running in the pane", 9.0)


@pytest.mark.parametrize(("status", "signal", "reason"), [
    (1, None, "claude exited with status 1"),
    (None, 15, "claude was killed by signal 15"),
    (None, None, "claude exited"),
])
def test_dead_pane_is_exited_with_its_status(status: int | None, signal: int | None,
                                             reason: str) -> None:
    verdict = st.infer(Signals(now=50.0, claude_pid=None, pane_dead=True, dead_status=status,
                               dead_signal=signal, dead_since=40.0))
    assert verdict == st.Verdict(X, reason, 40.0)


def test_no_events_since_claude_started_is_idle_unless_the_file_says_otherwise() -> None:
    quiet = Signals(now=100.0, claude_pid=MAIN_PID, claude_started=90.0)
    assert st.infer(quiet) == st.Verdict(IDLE, "no turn yet", 90.0)
    busy = StatusFile(MAIN_PID, "s", "", "busy", None, None, None, 95.0, 90.0)
    assert st.infer(replace(quiet, status=busy)).state == T
    asks = replace(busy, status="waiting", waiting_for="permission prompt")
    assert st.infer(replace(quiet, status=asks)).state == P


def test_status_file_busy_after_startup_track_is_thinking() -> None:
    start = find("SessionStart", "startup")
    track = track_at(start.ts)
    busy = StatusFile(MAIN_PID, track.session_id, "", "busy", None, None, None, start.ts + 3)
    verdict = st.infer(signals(track, start.ts + 3.1, status=busy))
    assert verdict == st.Verdict(T, "from Claude's status file: busy", start.ts + 3)


class NoHooks(NamedTuple):
    file: str  # a recorded session_pidfile_*.json
    changes: dict[str, Any]
    tools: tuple[ToolProc, ...]
    state: State
    reason: str


NO_HOOKS = [
    NoHooks("session_pidfile_busy_tool.json", {}, (), T, "from Claude's status file: busy"),
    NoHooks("session_pidfile_busy_tool.json", {},
            (ToolProc(20456, "sleep 6", 1795318967.2),), K,
            "running: sleep 6 (pid 20456) · from Claude's status file"),
    NoHooks("session_pidfile_permission.json", {}, (), P, "permission prompt"),
    NoHooks("session_pidfile_idle.json", {}, (), IDLE, "no turn yet"),
    NoHooks("session_pidfile_idle.json", {"statusUpdatedAt": 1795318990000}, (), W,
            "from Claude's status file: idle"),
    NoHooks("session_pidfile_idle.json", {"status": "shell"}, (), W, "background shell"),
]


@pytest.mark.parametrize("row", NO_HOOKS, ids=lambda r: f"{r.file}-{r.state}")
def test_hooks_missing_entirely_use_the_status_file_and_processes(
        row: NoHooks, tmp_path: Path) -> None:
    path = tmp_path / f"{MAIN_PID}.json"
    path.write_text(json.dumps(payload(row.file, **row.changes)), encoding="utf-8")
    sf = st.read_status_file(path)
    assert sf is not None
    verdict = st.infer(Signals(now=1795319100.0, claude_pid=MAIN_PID, status=sf,
                               tools=row.tools))
    assert verdict.state == row.state and row.reason in verdict.reason, verdict
    assert "no hook events" in verdict.reason or row.state == K


def test_hooks_missing_and_no_status_file_use_the_processes() -> None:
    verdict = st.infer(Signals(now=10.0, claude_pid=1, tools=(ToolProc(2, "make", 5.0),)))
    assert verdict == st.Verdict(K, "running: make (pid 2) (no hook events)", 5.0)


def test_cbos_started_mid_turn_gets_the_state_at_once() -> None:
    pre = find("PreToolUse", "interrupt_tool")
    # The whole backlog: one fold, one infer.
    assert st.infer(signals(track_at(pre.ts), pre.ts + 1)).state == K
    # Only the tail of the backlog (an events file that starts mid-turn).
    tail = fold_all([e for e in recorded_events() if pre.ts <= e.ts <= pre.ts + 0.05])
    assert tail is not None and tail.phase == Phase.TOOL
    assert st.infer(signals(tail, pre.ts + 1)).reason == "Bash: sleep 20"


def test_cbos_started_after_claude_exited_gets_exited_at_once() -> None:
    track = fold_all(recorded_events())
    verdict = st.infer(Signals(now=1795319200.0, track=track, claude_pid=None, pane_dead=True,
                               dead_status=0))
    assert verdict.state == X and verdict.reason.startswith("claude exited with status 0")


def test_track_of_an_older_claude_in_the_pane_is_ignored() -> None:
    old = fold_all([e for e in recorded_events() if e.claude_pid == MAIN_PID])
    assert old is not None and old.claude_pid == MAIN_PID
    verdict = st.infer(Signals(now=1795319078.0, track=old, claude_pid=24113,
                               claude_started=1795319077.0))
    assert verdict == st.Verdict(IDLE, "no turn yet", 1795319077.0)


def test_a_new_claude_pid_starts_a_new_track() -> None:
    start = next(e for e in recorded_events() if e.claude_pid == 24113)
    track = track_at(start.ts)
    assert (track.claude_pid, track.session_id, track.events) == (24113, start.session_id, 1)


def test_clear_follows_the_new_session_id() -> None:
    end, start = find("SessionEnd", "clear"), find("SessionStart", "clear")
    assert end.payload["reason"] == "clear" and start.payload["source"] == "clear"
    assert end.session_id != start.session_id and end.claude_pid == start.claude_pid
    track = track_at(start.ts)
    assert (track.session_id, track.phase, track.last_message) == (start.session_id,
                                                                  Phase.NONE, "")
    assert st.infer(signals(track, start.ts + 1)) == st.Verdict(
        IDLE, "new conversation (/clear)", start.ts)


def test_hook_newer_than_the_status_file_wins() -> None:
    prompt = find("UserPromptSubmit", "say")
    stale_idle = status_file(snapshot("startup", "01_idle_startup"), MAIN_PID)
    assert (stale_idle.status_updated_at or 0) < prompt.ts
    assert st.infer(signals(track_at(prompt.ts), prompt.ts, status=stale_idle)).state == T


def test_an_unrelated_event_after_a_deny_does_not_bring_the_permission_back() -> None:
    recorded = snapshot("write_deny", "12_after_permission_denied")
    denied_at = recorded["statusUpdatedAt"] / 1000
    track = track_at(denied_at)
    ambient = event_from(find("PermissionRequest", "write_deny"), denied_at + 1,
                         payload("FileChanged.json"))  # synthetic: a later external write
    verdict = st.infer(signals(st.fold(track, ambient), denied_at + 2,
                               status=status_file(recorded, MAIN_PID)))
    assert verdict == st.Verdict(W, "permission denied: Write: /home/dev/proj/denied.txt",
                                 denied_at)


def test_status_file_of_another_pid_is_ignored() -> None:
    request = find("PermissionRequest", "write_deny")
    idle = status_file(snapshot("write_deny", "12_after_permission_denied"), 4242)
    verdict = st.infer(signals(track_at(request.ts), request.ts + 2, status=idle))
    assert verdict.state == P


def test_auto_mode_needs_input_notification_is_permission() -> None:
    # synthetic: auto mode was not recorded; the message is the recorded one (README).
    pre = find("PreToolUse", "run_sleep")
    note = payload("variants/Notification.permission_prompt.json",
                   notification_type="agent_needs_input",
                   message="Auto mode can't check actions in this session and needs your "
                           "choice")
    track = st.fold(track_at(pre.ts), event_from(pre, pre.ts + 6.5, note))
    verdict = st.infer(signals(track, pre.ts + 7))
    assert verdict == st.Verdict(P, "asks to use Bash: sleep 6 (auto mode can't check it)",
                                 pre.ts + 6.5)


def test_status_file_dialog_open_mid_turn_is_permission() -> None:
    pre = find("PreToolUse", "run_sleep")
    dialog_open = StatusFile(MAIN_PID, "", "", "waiting", "dialog open", None, None,
                             pre.ts + 0.2)
    verdict = st.infer(signals(track_at(pre.ts), pre.ts + 1, status=dialog_open))
    assert verdict == st.Verdict(P, "asks to use Bash: sleep 6", pre.ts + 0.2)


def test_a_dialog_on_screen_is_permission_even_without_hook_or_file() -> None:
    stop = find("Stop", "cwd_change")
    screen = (FIXTURES / "screens" / "19_add_dir_trust_dialog.txt").read_text(encoding="utf-8")
    verdict = st.infer(signals(track_at(stop.ts), stop.ts + 2, dialog=parse_dialog(screen)))
    assert verdict.state == P and "Is this a directory you created" in verdict.reason


def test_subagent_events_do_not_end_the_main_turn() -> None:
    # synthetic: a synchronous Agent call; the recorded one was launched async.
    pre = find("PreToolUse", "agent")
    track = track_at(pre.ts)
    agent = str(find("SubagentStart", "agent").payload["agent_id"])
    inner_pre = payload("variants/PreToolUse.Bash.json", agent_id=agent)
    inner_post = payload("variants/PostToolUse.Bash.json", agent_id=agent)
    for data in (find("SubagentStart", "agent").payload, inner_pre, inner_post,
                 find("SubagentStop", "agent").payload):
        track = st.fold(track, event_from(pre, pre.ts + 0.1, data))
        verdict = st.infer(signals(track, pre.ts + 0.2))
        assert verdict == st.Verdict(K, "Agent: recorded subagent", pre.ts), data
    assert track.subagents == ()


def test_background_subagent_is_shown_after_stop() -> None:
    start = find("SubagentStart", "agent")
    stop = payload("Stop.json")
    track = st.fold(track_at(start.ts), event_from(start, start.ts + 0.1, stop))
    verdict = st.infer(signals(track, start.ts + 1))
    assert verdict.reason == 'done: "hello" · background: 1 agent running'


def test_compacting_is_thinking_until_post_compact() -> None:
    pre = find("PreCompact", "compact")
    verdict = st.infer(signals(track_at(pre.ts), pre.ts + 0.1))
    assert verdict == st.Verdict(T, "compacting (manual)", pre.ts)


class Stall(NamedTuple):
    quiet_for: float
    last_output_ago: float | None
    stall_seconds: float
    reason: str


STALLS = [
    Stall(700, None, 600, "stalled for 11 min · Bash: sleep 20"),
    Stall(700, 30, 600, "Bash: sleep 20"),  # output keeps it alive
    Stall(300, None, 600, "Bash: sleep 20"),
    Stall(90, None, 60, "stalled for 1 min · Bash: sleep 20"),
    Stall(7000, None, 0, "Bash: sleep 20"),  # 0 disables the rule
]


@pytest.mark.parametrize("row", STALLS)
def test_stall_rule(row: Stall) -> None:
    pre = find("PreToolUse", "interrupt_tool")
    track = track_at(pre.ts + 0.02)
    now = track.activity_ts + row.quiet_for
    output = None if row.last_output_ago is None else now - row.last_output_ago
    verdict = st.infer(signals(track, now, last_output=output,
                               stall_seconds=row.stall_seconds))
    assert (verdict.state, verdict.reason, verdict.since) == (K, row.reason, pre.ts)


def test_waiting_never_stalls() -> None:
    stop = find("Stop", "say")
    verdict = st.infer(signals(track_at(stop.ts), stop.ts + 99999, stall_seconds=1))
    assert verdict.reason == 'done: "hello"'


def test_a_retrying_turn_says_so_and_a_finished_one_does_not() -> None:
    retry = "retrying: Can't reach the API server (ENOTFOUND) (attempt 3/10)"
    pre = find("PreToolUse", "interrupt_tool")
    busy = st.infer(signals(track_at(pre.ts + 0.02), pre.ts + 1, retry=retry))
    plain = st.infer(signals(track_at(pre.ts + 0.02), pre.ts + 1))
    assert busy.state is plain.state is K
    assert busy.reason == f"{retry} · {plain.reason}"
    stop = find("Stop", "say")
    done = st.infer(signals(track_at(stop.ts), stop.ts + 1, retry=retry))
    assert done.reason == 'done: "hello"'  # a stale row: the turn is over


def test_claude_alive_follows_the_pid() -> None:
    assert Signals(now=0, claude_pid=3).claude_alive
    assert not Signals(now=0).claude_alive


# ---------------------------------------------------------------- the status file


def test_read_recorded_status_files() -> None:
    sf = st.read_status_file(FIXTURES / "session_pidfile_permission.json")
    assert sf == StatusFile(pid=MAIN_PID, session_id="20a073c7-b159-43a6-b4f0-cb9fd0a3dcd7",
                            cwd="/home/dev/proj", status="waiting",
                            waiting_for="permission prompt", tmux="fixtures:@0.%0",
                            proc_start="298372", status_updated_at=1795318995.764,
                            started_at=1795318957.329)
    busy = st.read_status_file(FIXTURES / "session_pidfile_busy_tool.json")
    assert busy is not None and (busy.status, busy.waiting_for) == ("busy", None)


GOOD = (FIXTURES / "session_pidfile_idle.json").read_text(encoding="utf-8")


class Odd(NamedTuple):
    name: str
    content: bytes | None  # None: a directory


ODD = [
    Odd("partial", GOOD.encode()[:120]),
    Odd("empty", b""),
    Odd("a list", b"[1, 2]"),
    Odd("no pid", json.dumps({**json.loads(GOOD), "pid": None}).encode()),
    Odd("pid as text", json.dumps({**json.loads(GOOD), "pid": "19909"}).encode()),
    Odd("pid true", json.dumps({**json.loads(GOOD), "pid": True}).encode()),
    Odd("status missing", json.dumps({k: v for k, v in json.loads(GOOD).items()
                                      if k != "status"}).encode()),
    Odd("status a number", json.dumps({**json.loads(GOOD), "status": 3}).encode()),
    Odd("sessionId missing", json.dumps({k: v for k, v in json.loads(GOOD).items()
                                         if k != "sessionId"}).encode()),
    Odd("names another pid", json.dumps({**json.loads(GOOD), "pid": 1234}).encode()),
    Odd("not utf-8", b'{"pid": 19909, "status": "\xff"}'),
    Odd("huge", b'{"pad": "' + b"x" * 70000 + b'"}'),
    Odd("deep", b"[" * 100000),
    Odd("a directory", None),
]


@pytest.mark.parametrize("row", ODD, ids=[r.name for r in ODD])
def test_odd_status_files_read_as_none(row: Odd, tmp_path: Path) -> None:
    path = tmp_path / f"{MAIN_PID}.json"
    if row.content is None:
        path.mkdir()
    else:
        path.write_bytes(row.content)
    assert st.read_status_file(path) is None


def test_missing_status_file_reads_as_none(tmp_path: Path) -> None:
    assert st.read_status_file(tmp_path / "1.json") is None


def test_status_file_milliseconds_become_seconds_and_proc_start_text(tmp_path: Path) -> None:
    data = {**json.loads(GOOD), "procStart": 298372, "statusUpdatedAt": 1500}
    path = tmp_path / "any-name.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    sf = st.read_status_file(path)
    assert sf is not None and (sf.proc_start, sf.status_updated_at) == ("298372", 1.5)


@pytest.mark.parametrize(("environ", "expected"), [
    ({"HOME": "/h"}, "/h/.claude/sessions"),
    ({"HOME": "/h", "CLAUDE_CONFIG_DIR": "/cfg"}, "/cfg/sessions"),
    ({"HOME": "/h", "CLAUDE_CONFIG_DIR": ""}, "/h/.claude/sessions"),
])
def test_status_dir(environ: dict[str, str], expected: str) -> None:
    assert st.status_dir(environ) == Path(expected)


def own_proc() -> Proc:
    return Proc(os.getpid(), os.getppid(), "python", ("python",), 0.0, "running")


def test_proc_start_ticks_reads_field_22() -> None:
    ticks = st.proc_start_ticks(os.getpid())
    assert ticks is not None and ticks.isdigit()
    assert st.proc_start_ticks(2**22 + 12345) is None  # above pid_max: no such process
    fields = " ".join(str(n) for n in range(3, 30))
    assert st.stat_start_field(f"77 (a b) c)) {fields}") == "22"
    assert st.stat_start_field("garbage") is None


def test_status_consistent_checks_pid_and_proc_start(monkeypatch: pytest.MonkeyPatch) -> None:
    me = own_proc()
    ticks = st.proc_start_ticks(me.pid)
    sf = StatusFile(me.pid, "s", "", "idle", None, None, ticks, 1.0)
    assert st.status_consistent(sf, me)
    assert not st.status_consistent(replace(sf, proc_start="1"), me)  # pid reused
    assert not st.status_consistent(replace(sf, pid=me.pid + 1), me)
    assert st.status_consistent(replace(sf, proc_start=None), me)
    monkeypatch.setattr(st, "proc_start_ticks", lambda pid: None)  # no /proc
    assert st.status_consistent(replace(sf, proc_start="1"), me)
