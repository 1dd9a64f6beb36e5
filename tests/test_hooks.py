"""cbos.hooks on real files: the hook script run as Claude runs it, settings merging, and the
events tail with real inotify. No mocks."""

from __future__ import annotations

import json
import os
import select
import shlex
import shutil
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from cbos import hooks
from cbos.config import Config, ensure_dirs
from cbos.errors import CbosError
from cbos.events import Events, HookEvent, parse_line, read_recent
from tests.conftest import FIXTURES
from tests.support import wait_until

PAYLOAD_FILES = sorted(
    p for p in [*FIXTURES.glob("*.json"), *FIXTURES.glob("variants/*.json")]
    if isinstance(data := json.loads(p.read_text()), dict) and "hook_event_name" in data
)
CLAUDE_ENV = {"CBOS_SESSION": "AUTH-1_x", "TMUX_PANE": "%3", "CLAUDE_PID": "19909"}


class Run(NamedTuple):
    code: int
    out: bytes
    err: bytes
    seconds: float


def run_hook(command: str, stdin: bytes, env: Mapping[str, str] | None = None,
             *, via_socket: bool = True, timeout: float = 30.0) -> Run:
    """Run ``command`` as Claude does: ``/bin/sh -c COMMAND``, the payload on a Unix socket."""
    full_env = {**os.environ, **(CLAUDE_ENV if env is None else env)}
    started = time.monotonic()
    if not via_socket:
        proc = subprocess.run(["/bin/sh", "-c", command], input=stdin, capture_output=True,
                              env=full_env, timeout=timeout, check=False)
        return Run(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)
    ours, theirs = socket.socketpair()
    with ours:
        with theirs:
            proc = subprocess.Popen(["/bin/sh", "-c", command], stdin=theirs,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    env=full_env)

        def feed() -> None:
            try:
                ours.sendall(stdin)
                ours.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the hook stopped reading; its exit status tells

        sender = threading.Thread(target=feed, daemon=True)
        sender.start()
        out, err = proc.communicate(timeout=timeout)
        sender.join(timeout)
    return Run(proc.returncode, out, err, time.monotonic() - started)


def lines_of(path: Path) -> list[bytes]:
    data = path.read_bytes() if path.exists() else b""
    assert data == b"" or data.endswith(b"\n"), "the last line has no newline"
    return data.split(b"\n")[:-1]


def compact(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


@pytest.fixture
def command(config: Config) -> str:
    hooks.ensure_script(config)
    return hooks.hook_command(config)


# -- the hook script ---------------------------------------------------------------------


def test_fixture_payloads_are_there() -> None:
    assert len(PAYLOAD_FILES) >= 40  # 25 events + 26 variants, recorded from Claude Code


@pytest.mark.parametrize("fixture", PAYLOAD_FILES, ids=lambda p: p.stem)
def test_script_appends_each_recorded_payload(config: Config, command: str,
                                              fixture: Path) -> None:
    raw = fixture.read_bytes()  # pretty-printed, many lines: must become one line
    before = time.time()
    run = run_hook(command, raw)
    after = time.time()
    assert (run.code, run.out, run.err) == (0, b"", b"")
    [line] = lines_of(config.events_file)
    record = json.loads(line)
    assert list(record) == ["ts", "cbos_session", "tmux_pane", "claude_pid", "payload"]
    assert record["payload"] == json.loads(raw)
    assert list(record["payload"]) == list(json.loads(raw))
    assert before - 0.05 <= record["ts"] <= after + 0.05
    event = parse_line(line)
    assert event is not None
    assert (event.name, event.slug, event.pane, event.claude_pid) == (
        json.loads(raw)["hook_event_name"], "AUTH-1_x", "%3", 19909)
    assert event.session_id == json.loads(raw)["session_id"]


def test_compact_payload_is_copied_verbatim(config: Config, command: str) -> None:
    """What Claude sends (compact JSON, odd characters included) lands byte for byte."""
    payload = compact({"session_id": "s", "hook_event_name": "PreToolUse", "tool_input": {
        "command": "printf '%s\\n' \"$HOME\" `id` \\ * ; exit 2", "text": "é ✻ \u2028 \\u0000"}})
    run = run_hook(command, payload + b"\n")
    assert run.code == 0
    [line] = lines_of(config.events_file)
    head, _, rest = line.partition(b', "payload": ')
    assert rest == payload + b"}"
    assert head.startswith(b'{"ts": ')
    assert head.endswith(b'"cbos_session": "AUTH-1_x", "tmux_pane": "%3", '
                         b'"claude_pid": "19909"')


def test_literal_newlines_and_carriage_returns_are_dropped(config: Config,
                                                          command: str) -> None:
    payload = b'{\r\n "session_id": "s",\n\n "hook_event_name": "Stop"\r\n}\r\n'
    assert run_hook(command, payload).code == 0
    [line] = lines_of(config.events_file)
    assert line.endswith(b'"payload": { "session_id": "s", "hook_event_name": "Stop"}}')


class EnvCase(NamedTuple):
    env: dict[str, str]
    expect: tuple[str, str, str]  # cbos_session, tmux_pane, claude_pid as recorded


ENV_CASES = {
    "none (claude started by hand, outside tmux)": EnvCase({}, ("", "", "")),
    "all valid": EnvCase({"CBOS_SESSION": "a-B_9", "TMUX_PANE": "%12", "CLAUDE_PID": "7"},
                         ("a-B_9", "%12", "7")),
    "quote and backslash": EnvCase(
        {"CBOS_SESSION": 'a"b', "TMUX_PANE": "%1\\", "CLAUDE_PID": '1"'}, ("", "", "")),
    "spaces, unicode, control": EnvCase(
        {"CBOS_SESSION": "a b", "TMUX_PANE": "%\t1", "CLAUDE_PID": "\uff11\uff12"}, ("", "", "")),
    "wrong shapes": EnvCase(
        {"CBOS_SESSION": "a/b", "TMUX_PANE": "3", "CLAUDE_PID": "-1"}, ("", "", "")),
    "bare percent, empty": EnvCase(
        {"CBOS_SESSION": "", "TMUX_PANE": "%", "CLAUDE_PID": ""}, ("", "", "")),
    "glob characters": EnvCase(
        {"CBOS_SESSION": "*", "TMUX_PANE": "%[0-9]", "CLAUDE_PID": "?"}, ("", "", "")),
}


@pytest.mark.parametrize("case", ENV_CASES.values(), ids=ENV_CASES.keys())
def test_environment_values_are_checked_not_escaped(config: Config, command: str,
                                                    case: EnvCase) -> None:
    payload = compact({"session_id": "s", "hook_event_name": "Stop"})
    assert run_hook(command, payload, case.env).code == 0
    [line] = lines_of(config.events_file)
    record = json.loads(line)
    assert (record["cbos_session"], record["tmux_pane"], record["claude_pid"]) == case.expect


class Broken(NamedTuple):
    name: str
    setup: str  # what to do to the events path before the run


BROKEN = ["events dir missing", "events dir is a file", "events file is a directory",
          "events file is a FIFO", "script missing", "events dir read-only"]


@pytest.mark.parametrize("case", BROKEN)
@pytest.mark.parametrize("stdin", [b'{"hook_event_name": "Stop", "session_id": "s"}',
                                   b"x" * 300_000], ids=["payload", "300KB"])
def test_script_is_silent_and_exits_0_when_it_cannot_record(
        config: Config, tmp_path: Path, case: str, stdin: bytes) -> None:
    hooks.ensure_script(config)
    base = tmp_path / "events"
    events = base / "events.jsonl"
    if case == "events dir missing":
        base = base / "nowhere"
        events = base / "events.jsonl"
    elif case == "events dir is a file":
        base.write_text("")
    elif case == "events file is a directory":
        events.mkdir(parents=True)
    elif case == "events file is a FIFO":
        base.mkdir()
        os.mkfifo(events)
    elif case == "script missing":
        base.mkdir()
        hooks.script_path(config).unlink()
    else:
        base.mkdir(mode=0o500)
    command = hooks.hook_command(config.replace(events_dir=base))
    if case == "events dir read-only" and os.geteuid() == 0:
        # Root writes anywhere through CAP_DAC_OVERRIDE: drop it (and its reading twin)
        # for the hook, which then meets the mode bits as any user does (CI runs as root).
        command = (f"{shutil.which('setpriv')} --bounding-set=-dac_override,-dac_read_search"
                   f" -- /bin/sh -c {shlex.quote(command)}")
    run = run_hook(command, stdin, timeout=20)
    assert (run.code, run.out, run.err) == (0, b"", b"")
    assert run.seconds < 10  # a FIFO in the way must not block it
    if case == "events file is a directory":
        assert os.listdir(events) == []
    elif case == "events file is a FIFO":
        assert stat.S_ISFIFO(os.stat(events).st_mode)
    elif case == "script missing":
        assert not events.exists()
    elif base.is_dir():
        assert os.listdir(base) == []


@pytest.mark.parametrize("stdin", [b"", b"\n", b"garbage", b"\xff\xfe\x00binary",
                                   b"[1, 2]", b"{unterminated", b"x" * 200_000],
                         ids=["empty", "newline", "garbage", "binary", "list",
                              "unterminated", "200KB"])
def test_script_survives_empty_or_garbage_stdin(config: Config, command: str,
                                                stdin: bytes) -> None:
    run = run_hook(command, stdin)
    assert (run.code, run.out, run.err) == (0, b"", b"")
    for line in lines_of(config.events_file):
        assert parse_line(line) is None  # a reader skips whatever was recorded
    with Events(config) as events:
        assert events.backlog() == []


def test_script_exits_0_when_stdin_is_closed(config: Config, command: str) -> None:
    proc = subprocess.run(["/bin/sh", "-c", command], stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=20, check=False,
                          env={**os.environ, **CLAUDE_ENV})
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")


def test_files_are_created_private_whatever_the_umask(config: Config, command: str) -> None:
    config.events_file.unlink()
    old = os.umask(0o022)
    try:
        assert run_hook(command, compact({"hook_event_name": "Stop"})).code == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(config.events_file).st_mode) == 0o600
    clock = config.events_file.with_name("events.jsonl.clock")
    assert stat.S_IMODE(os.stat(clock).st_mode) == 0o600


CLOCK_CASES = {
    "no clock file": None,
    "garbage": "garbage\n",
    "half written": "{boot} 17",
    "another boot": "00000000-0000-0000-0000-000000000000 100000 {up} ok\n",
    "older than a minute, wrong offset": "{boot} 100000 {old} ok\n",
    "from the future": "{boot} 100000 {future} ok\n",
    "leading zeros": "{boot} 0100000 {up} ok\n",
    "huge numbers": "{boot} 99999999999999999999999 {up} ok\n",
    "an offset no date gives": "{boot} 0 {up} ok\n",
    "right now (the cache is used)": "{boot} {offset} {up} ok\n",
}


@pytest.mark.parametrize("content", CLOCK_CASES.values(), ids=CLOCK_CASES.keys())
def test_timestamps_are_right_whatever_the_clock_cache_holds(
        config: Config, command: str, content: str | None) -> None:
    clock = config.events_file.with_name("events.jsonl.clock")
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    up = int(float(Path("/proc/uptime").read_text().split()[0]))
    uptime_cs = round(float(Path("/proc/uptime").read_text().split()[0]) * 100)
    offset = round(time.time() * 100) - uptime_cs
    if content is not None:
        clock.write_text(content.format(boot=boot, up=up, old=max(0, up - 120),
                                        future=up + 1000, offset=offset))
    written = clock.read_text() if content is not None else None
    payload = compact({"session_id": "s", "hook_event_name": "Stop"})
    caches = []
    for _ in range(2):  # the first run may calibrate; the second uses the cache
        before = time.time()
        assert run_hook(command, payload).code == 0
        after = time.time()
        ts = json.loads(lines_of(config.events_file)[-1])["ts"]
        assert before - 0.05 <= ts <= after + 0.05
        caches.append(clock.read_text())
    assert caches[0] == caches[1]  # no `date` the second time
    fields = caches[0].split()
    assert fields[0] == boot and fields[3] == "ok"
    if "{offset}" in (content or ""):
        assert caches[0] == written


def test_timestamps_follow_the_file_order(config: Config, command: str) -> None:
    for n in range(5):
        run_hook(command, compact({"session_id": "s", "hook_event_name": "Stop", "n": n}))
    records = [json.loads(line) for line in lines_of(config.events_file)]
    assert [r["payload"]["n"] for r in records] == list(range(5))
    stamps = [r["ts"] for r in records]
    assert stamps == sorted(stamps)


def test_concurrent_large_appends_never_tear(config: Config, command: str) -> None:
    """20 hooks at once, 1 MB payloads each, plus small ones: every line whole."""
    writers = 20
    payloads = {
        n: compact({"session_id": f"s{n}", "hook_event_name": "PostToolUse",
                    "tool_response": {"stdout": chr(ord("a") + n) * 1_000_000}})
        for n in range(writers)
    }
    payloads.update({100 + n: compact({"session_id": f"small{n}", "hook_event_name": "Stop"})
                     for n in range(20)})
    results: dict[int, Run] = {}

    def one(n: int) -> None:
        results[n] = run_hook(command, payloads[n], {**CLAUDE_ENV, "CLAUDE_PID": str(n)})

    threads = [threading.Thread(target=one, args=(n,)) for n in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert all(results[n].code == 0 for n in payloads)
    lines = lines_of(config.events_file)
    assert len(lines) == len(payloads)
    seen = set()
    for line in lines:
        event = parse_line(line)
        assert event is not None, f"torn line: {line[:80]!r}...{line[-80:]!r}"
        n = event.claude_pid
        assert n is not None
        assert compact(event.payload) == payloads[n]
        seen.add(n)
    assert seen == set(payloads)


def test_the_hook_writes_with_one_write_call(config: Config, command: str,
                                            tmp_path: Path) -> None:
    """strace shows a single write(2) of the whole line to the events file."""
    strace = "/usr/bin/strace"
    if not os.access(strace, os.X_OK):
        pytest.skip("strace is not installed")
    trace = tmp_path / "trace"
    payload = compact({"session_id": "s", "hook_event_name": "PostToolUse",
                       "tool_response": "z" * 3_000_000})
    run = run_hook(f"{strace} -f -qq -e trace=openat,write -e signal=none -o {trace} "
                   f"/bin/sh -c {json.dumps(command)}", payload)
    assert run.code == 0
    [line] = lines_of(config.events_file)
    writers = set()  # processes that opened the events file for writing
    writes = []
    for row in trace.read_text().splitlines():
        pid, call = row.split(None, 1)
        if call.startswith("openat(") and f'"{config.events_file}", O_WRONLY' in call:
            writers.add(pid)
        elif call.startswith("write("):
            writes.append((pid, call))
    assert len(writers) == 1
    to_events = [call for pid, call in writes if pid in writers]
    assert len(to_events) == 1
    assert to_events[0].endswith(f"= {len(line) + 1}")


# -- the script file, the command ---------------------------------------------------------


def test_ensure_script_installs_and_refreshes_the_script(config: Config) -> None:
    path = hooks.ensure_script(config)
    assert path == config.state_dir / "cbos-hook.sh"
    packaged = (Path(hooks.__file__).parent / "hook.sh").read_bytes()
    assert path.read_bytes() == packaged
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    assert stat.S_IMODE(config.state_dir.stat().st_mode) == 0o700
    path.write_text("# an older version\n")
    path.chmod(0o700)
    hooks.ensure_script(config)
    assert path.read_bytes() == packaged
    assert stat.S_IMODE(path.stat().st_mode) == 0o755


def test_the_command_quotes_odd_paths(tmp_path: Path) -> None:
    odd = tmp_path / "it's a $dir `x`"
    config = Config(state_dir=odd / "state", config_dir=odd / "config",
                    stream_dir=odd / "logs", events_dir=odd / "ev ents")
    hooks.ensure_script(config)
    command = hooks.hook_command(config)
    assert hooks.is_cbos_command(command)
    assert run_hook(command, compact({"hook_event_name": "Stop", "session_id": "s"})).code == 0
    [line] = lines_of(config.events_file)
    assert parse_line(line) is not None


@pytest.mark.parametrize("command", [
    "/usr/bin/notify-send done",
    "CBOS_EVENTS_FILE=/x command . /s/other-hook.sh >/dev/null 2>&1; exit 0",
    "CBOS_EVENTS_FILE=/x command . /s/cbos-hook.sh; rm -rf ~",
    "cat /s/cbos-hook.sh",
    "echo 'unbalanced",
    "",
    None,
])
def test_foreign_commands_are_not_cbos(command: str | None) -> None:
    assert not hooks.is_cbos_command(command)


# -- Claude's settings ----------------------------------------------------------------------


USER_SETTINGS: dict[str, Any] = {
    "model": "opus",
    "permissions": {"allow": ["Bash(npm test)"], "deny": []},
    "hooks": {
        "PreToolUse": [
            {"matcher": "Bash", "hooks": [{"type": "command", "command": "audit.sh",
                                           "timeout": 5}]},
        ],
        "Stop": [{"hooks": [{"type": "command", "command": "notify-send done"}]}],
        "MessageDisplay": [{"hooks": [{"type": "command", "command": "say-it"}]}],
    },
    "statusLine": {"type": "command", "command": "status.sh"},
    "env": {"A": "1"},
}


def write_settings(path: Path, data: Any, mode: int = 0o644) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = (json.dumps(data, indent=4) + "\n").encode()
    path.write_bytes(raw)
    path.chmod(mode)
    return raw


def ordered(data: Any) -> str:
    """JSON text with key order kept: equal iff same content in the same order."""
    return json.dumps(data)


def cbos_entries(data: Mapping[str, Any], event: str) -> list[dict[str, Any]]:
    return [entry for group in data.get("hooks", {}).get(event, [])
            for entry in group.get("hooks", []) if hooks.is_cbos_command(entry.get("command"))]


@pytest.fixture
def settings(private_home: Path) -> Path:
    return private_home / ".claude" / "settings.json"


def test_install_merges_and_keeps_everything_else(config: Config, settings: Path) -> None:
    write_settings(settings, USER_SETTINGS)
    message = hooks.install(config)
    assert str(settings) in message
    data = json.loads(settings.read_text())
    assert list(data) == list(USER_SETTINGS)
    for key in USER_SETTINGS:
        if key != "hooks":
            assert ordered(data[key]) == ordered(USER_SETTINGS[key])
    # The user's own groups come first, untouched; cbos's is appended.
    for event, groups in USER_SETTINGS["hooks"].items():
        assert ordered(data["hooks"][event][:len(groups)]) == ordered(groups)
    assert list(data["hooks"])[:3] == list(USER_SETTINGS["hooks"])
    command = hooks.hook_command(config)
    for event in hooks.HOOK_EVENTS:
        cbos_group = data["hooks"][event][-1]
        assert cbos_group["hooks"] == [{"type": "command", "command": command}]
        assert ("matcher" in cbos_group) == (event in hooks.MATCHER_EVENTS)
        assert cbos_group.get("matcher", "") == ""
        assert len(cbos_entries(data, event)) == 1
    assert "MessageDisplay" not in hooks.HOOK_EVENTS
    assert cbos_entries(data, "MessageDisplay") == []
    assert stat.S_IMODE(settings.stat().st_mode) == 0o644


def test_install_is_idempotent(config: Config, settings: Path) -> None:
    write_settings(settings, USER_SETTINGS)
    hooks.install(config)
    once = settings.read_bytes()
    stamp = settings.stat().st_mtime_ns
    backup = settings.with_name("settings.json.cbos-backup").read_bytes()
    message = hooks.install(config)
    assert "already" in message
    assert settings.read_bytes() == once
    assert settings.stat().st_mtime_ns == stamp
    assert settings.with_name("settings.json.cbos-backup").read_bytes() == backup


def test_install_writes_a_backup_of_the_file_it_changes(config: Config,
                                                        settings: Path) -> None:
    raw = write_settings(settings, USER_SETTINGS, mode=0o640)
    message = hooks.install(config)
    backup = settings.with_name("settings.json.cbos-backup")
    assert str(backup) in message
    assert backup.read_bytes() == raw
    assert stat.S_IMODE(backup.stat().st_mode) == 0o640
    assert stat.S_IMODE(settings.stat().st_mode) == 0o640
    leftovers = [p.name for p in settings.parent.iterdir()
                 if p.name not in ("settings.json", "settings.json.cbos-backup")]
    assert leftovers == []  # no temp file left behind


def test_install_creates_a_missing_settings_file(config: Config, settings: Path) -> None:
    hooks.install(config)
    data = json.loads(settings.read_text())
    assert list(data) == ["hooks"]
    assert list(data["hooks"]) == list(hooks.HOOK_EVENTS)
    assert not settings.with_name("settings.json.cbos-backup").exists()
    assert stat.S_IMODE(settings.stat().st_mode) == 0o600


def test_uninstall_removes_exactly_cbos_entries(config: Config, settings: Path) -> None:
    original = json.loads(json.dumps(USER_SETTINGS))
    # A user group that holds a user command and, by hand, cbos's entry too.
    original["hooks"]["SubagentStop"] = [{"matcher": "", "hooks": [
        {"type": "command", "command": "mine.sh"}]}]
    write_settings(settings, original)
    hooks.install(config)
    data = json.loads(settings.read_text())
    data["hooks"]["SubagentStop"][0]["hooks"].append(
        {"type": "command", "command": hooks.hook_command(config)})
    write_settings(settings, data)
    message = hooks.uninstall(config)
    assert "removed" in message
    assert ordered(json.loads(settings.read_text())) == ordered(original)
    assert settings.with_name("settings.json.cbos-backup").read_bytes() == (
        (json.dumps(data, indent=4) + "\n").encode())
    again = settings.read_bytes()
    assert "no cbos hooks" in hooks.uninstall(config)
    assert settings.read_bytes() == again


def test_uninstall_drops_what_only_cbos_filled(config: Config, settings: Path) -> None:
    write_settings(settings, {"model": "opus"})
    hooks.install(config)
    hooks.uninstall(config)
    assert json.loads(settings.read_text()) == {"model": "opus"}
    # What cbos cannot tell apart: an empty list or object the user had before install is
    # emptied "because of cbos" on uninstall, and goes too.
    write_settings(settings, {"hooks": {"Stop": [], "Notification": [{"hooks": []}]}})
    hooks.install(config)
    hooks.uninstall(config)
    assert json.loads(settings.read_text()) == {"hooks": {"Notification": [{"hooks": []}]}}


def test_uninstall_without_a_settings_file(config: Config, settings: Path) -> None:
    assert "does not exist" in hooks.uninstall(config)
    assert not settings.exists()


BAD_SETTINGS = {
    "not JSON": b'{"model": "opus",,}\n',
    "JSON with comments": b'{\n  // mine\n  "model": "opus"\n}\n',
    "a list": b"[1, 2]\n",
    "hooks is a list": b'{"hooks": []}\n',
    "hooks is null": b'{"hooks": null}\n',
    "an event is an object": b'{"hooks": {"Stop": {"hooks": []}}}\n',
    "not UTF-8": b'{"model": "\xff"}\n',
    "NaN": b'{"x": NaN}\n',
}


@pytest.mark.parametrize("raw", BAD_SETTINGS.values(), ids=BAD_SETTINGS.keys())
def test_settings_cbos_cannot_merge_are_left_untouched(config: Config, settings: Path,
                                                       raw: bytes) -> None:
    settings.parent.mkdir(parents=True)
    settings.write_bytes(raw)
    for action in (hooks.install, hooks.uninstall):
        if action is hooks.uninstall and raw.startswith(b'{"hooks": {"Stop"'):
            assert "no cbos hooks" in action(config)  # nothing of cbos's to remove
            continue
        with pytest.raises(CbosError) as error:
            action(config)
        message = str(error.value)
        assert str(settings) in message
        assert "\n" not in message
        assert "untouched" in message
        assert settings.read_bytes() == raw
    assert not settings.with_name("settings.json.cbos-backup").exists()
    state = hooks.status(config)
    assert not hooks.installed_globally(config)
    assert state.events == ()
    assert (state.error is not None) == (b'"Stop": {' not in raw)


def test_a_settings_file_changed_meanwhile_is_not_overwritten(config: Config,
                                                              settings: Path) -> None:
    write_settings(settings, {"model": "opus"})
    loaded = hooks._load_settings(settings)
    write_settings(settings, {"model": "sonnet"})  # Claude's /model, in between
    with pytest.raises(hooks._Changed):
        hooks._save_settings(loaded, {"model": "opus", "hooks": {}})
    assert json.loads(settings.read_text()) == {"model": "sonnet"}
    assert not settings.with_name("settings.json.cbos-backup").exists()
    hooks.install(config)
    assert json.loads(settings.read_text())["model"] == "sonnet"


def test_claude_config_dir_is_honoured(config: Config, private_home: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "claude-config"
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(other))
    assert hooks.settings_path() == other / "settings.json"
    hooks.install(config)
    assert cbos_entries(json.loads((other / "settings.json").read_text()), "Stop")
    assert not (private_home / ".claude").exists()
    assert hooks.status(config).settings_path == other / "settings.json"
    assert hooks.installed_globally(config)
    monkeypatch.delenv("CLAUDE_CONFIG_DIR")
    assert not hooks.installed_globally(config)


def test_a_symlinked_settings_file_stays_a_symlink(config: Config, settings: Path,
                                                   tmp_path: Path) -> None:
    real = tmp_path / "dotfiles" / "claude-settings.json"
    raw = write_settings(real, USER_SETTINGS)
    settings.parent.mkdir(parents=True)
    settings.symlink_to(real)
    hooks.install(config)
    assert settings.is_symlink()
    assert cbos_entries(json.loads(real.read_text()), "Stop")
    assert settings.with_name("settings.json.cbos-backup").read_bytes() == raw


def test_status_says_where_and_what(config: Config, settings: Path) -> None:
    before = hooks.status(config)
    assert before.settings_path == settings
    assert not before.settings_exists
    assert before.events == ()
    assert before.missing == hooks.HOOK_EVENTS
    assert not before.installed
    assert not hooks.installed_globally(config)
    hooks.install(config)
    after = hooks.status(config)
    assert after.settings_exists and after.script_exists
    assert after.script_path == config.state_dir / "cbos-hook.sh"
    assert after.events == hooks.HOOK_EVENTS
    assert after.missing == ()
    assert after.installed
    assert hooks.installed_globally(config)
    assert str(settings) in after.describe()
    hooks.script_path(config).unlink()
    assert not hooks.status(config).script_exists
    assert not hooks.installed_globally(config)


def test_a_moved_state_dir_is_seen_as_stale_and_replaced(config: Config, settings: Path,
                                                         tmp_path: Path) -> None:
    write_settings(settings, USER_SETTINGS)
    hooks.install(config)
    moved = config.replace(state_dir=tmp_path / "state2", events_dir=tmp_path / "state2")
    state = hooks.status(moved)
    assert state.events == ()
    assert set(state.stale) == set(hooks.HOOK_EVENTS)
    assert not hooks.installed_globally(moved)
    hooks.install(moved)
    data = json.loads(settings.read_text())
    for event in hooks.HOOK_EVENTS:
        assert [e["command"] for e in cbos_entries(data, event)] == [
            hooks.hook_command(moved)]
    assert hooks.status(moved).stale == ()
    hooks.uninstall(config)  # any cbos entry goes, whichever dir it names
    assert ordered(json.loads(settings.read_text())) == ordered(USER_SETTINGS)


def test_the_installed_command_records_events(config: Config, settings: Path) -> None:
    hooks.install(config)
    data = json.loads(settings.read_text())
    command = data["hooks"]["PreToolUse"][-1]["hooks"][0]["command"]
    payload = (FIXTURES / "PreToolUse.json").read_bytes()
    assert run_hook(command, payload).code == 0
    [event] = read_recent(config)
    assert event.name == "PreToolUse"
    assert event.payload == json.loads(payload)


def test_settings_for_session_holds_only_cbos_hooks(config: Config, settings: Path) -> None:
    path = hooks.settings_for_session(config)
    assert path.parent == config.state_dir
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(path.read_text())
    assert data == {"hooks": hooks.hooks_block(config)}
    assert list(data["hooks"]) == list(hooks.HOOK_EVENTS)
    assert hooks.script_path(config).is_file()
    assert not settings.exists()  # the user's settings are not touched
    stamp = path.stat().st_mtime_ns
    assert hooks.settings_for_session(config) == path
    assert path.stat().st_mtime_ns == stamp  # unchanged content is not rewritten
    command = data["hooks"]["Stop"][0]["hooks"][0]["command"]
    assert run_hook(command, (FIXTURES / "Stop.json").read_bytes()).code == 0
    assert [e.name for e in read_recent(config)] == ["Stop"]


# -- reading the events file ---------------------------------------------------------------


def line(name: str = "Stop", n: int = 0, pane: str = "%1", **payload: Any) -> bytes:
    record = {"ts": 1000.0 + n, "cbos_session": "S", "tmux_pane": pane, "claude_pid": "42",
              "payload": {"session_id": "sid", "hook_event_name": name, "n": n, **payload}}
    return json.dumps(record).encode() + b"\n"


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def ns(events: list[HookEvent]) -> list[int]:
    return [int(e.payload["n"]) for e in events]


def readable(events: Events) -> bool:
    return bool(select.select([events], [], [], 0)[0])


class Collector:
    def __init__(self, events: Events) -> None:
        self.events = events
        self.got: list[HookEvent] = []

    def poll(self) -> list[HookEvent]:
        self.got += self.events.read()
        while self.events.pending:
            self.got += self.events.read()
        return self.got

    def wait_for(self, count: int) -> list[int]:
        wait_until(lambda: len(self.poll()) >= count, message=f"{count} events")
        return ns(self.got)


@pytest.fixture
def tail(config: Config) -> Iterator[Events]:
    ensure_dirs(config)
    with Events(config) as events:
        yield events


def test_appended_events_wake_the_fd_and_are_read(config: Config, command: str) -> None:
    tail = Events(config)
    assert not readable(tail)
    assert tail.read() == []
    run_hook(command, (FIXTURES / "UserPromptSubmit.json").read_bytes())
    wait_until(lambda: readable(tail), message="inotify wake-up")
    [event] = tail.read()
    assert (event.name, event.slug, event.pane, event.claude_pid) == (
        "UserPromptSubmit", "AUTH-1_x", "%3", 19909)
    assert not readable(tail)
    assert tail.read() == []
    run_hook(command, (FIXTURES / "Stop.json").read_bytes())
    wait_until(lambda: readable(tail), message="inotify wake-up")
    assert [e.name for e in tail.read()] == ["Stop"]
    tail.close()


def test_a_partial_line_waits_for_its_newline(config: Config, tail: Events) -> None:
    whole = line(n=1)
    append(config.events_file, line(n=0) + whole[:25])
    wait_until(lambda: readable(tail), message="wake-up")
    assert ns(tail.read()) == [0]
    append(config.events_file, whole[25:-1])
    wait_until(lambda: readable(tail), message="wake-up")
    assert tail.read() == []
    append(config.events_file, b"\n")
    wait_until(lambda: readable(tail), message="wake-up")
    assert ns(tail.read()) == [1]
    assert tail.skipped == 0


def test_garbage_is_skipped_and_counted(config: Config, tail: Events) -> None:
    junk = [b"not json", b'{"ts": 1, "payload": "text"}', b"[1]", b"",
            b'{"ts": "x", "payload": {"hook_event_name": "Stop"}}', b"\xff\xfe",
            b'{"payload": {"hook_event_name": "Stop"}}', b'{"ts": true, "payload": {}}',
            b"[" * 100_000]
    append(config.events_file, line(n=0) + b"\n".join(junk) + b"\n" + line(n=1))
    collector = Collector(tail)
    assert collector.wait_for(2) == [0, 1]
    assert tail.skipped == len(junk)


def test_truncation_starts_over(config: Config, tail: Events) -> None:
    append(config.events_file, line(n=0) + line(n=1))
    collector = Collector(tail)
    assert collector.wait_for(2) == [0, 1]
    os.truncate(config.events_file, 0)
    append(config.events_file, line(n=2))
    assert collector.wait_for(3) == [0, 1, 2]


def test_a_replaced_file_is_drained_then_the_new_one_read(config: Config, tail: Events,
                                                          tmp_path: Path) -> None:
    append(config.events_file, line(n=0))
    collector = Collector(tail)
    assert collector.wait_for(1) == [0]
    append(config.events_file, line(n=1))  # not read yet when the file is replaced
    fresh = tmp_path / "fresh"
    fresh.write_bytes(line(n=2))
    os.replace(fresh, config.events_file)
    assert collector.wait_for(3) == [0, 1, 2]
    config.events_file.unlink()
    append(config.events_file, line(n=3))
    assert collector.wait_for(4) == [0, 1, 2, 3]


def test_rotation_bounds_the_file_and_loses_nothing(config: Config, command: str) -> None:
    with Events(config, max_bytes=4000) as tail:
        collector = Collector(tail)
        for n in range(30):
            run_hook(command, compact({"session_id": "s", "hook_event_name": "Stop", "n": n,
                                       "pad": "p" * 300}))
            if n % 7 == 0:
                collector.poll()
        assert collector.wait_for(30) == list(range(30))
        rotated = config.events_file.with_name("events.jsonl.1")
        assert rotated.exists()
        assert config.events_file.stat().st_size <= 4000 + 1000
        assert tail.skipped == 0
        assert [e.name for e in collector.got] == ["Stop"] * 30


def test_a_write_under_way_to_the_rotated_file_is_still_read(config: Config) -> None:
    hooks.ensure_script(config)
    with Events(config, max_bytes=100) as tail:
        collector = Collector(tail)
        writer = os.open(config.events_file, os.O_WRONLY | os.O_APPEND)  # a hook mid-way
        try:
            append(config.events_file, line(n=0))
            assert collector.wait_for(1) == [0]  # read past max_bytes: rotated
            assert config.events_file.with_name("events.jsonl.1").exists()
            os.write(writer, line(n=1))  # lands in the old inode
        finally:
            os.close(writer)
        append(config.events_file, line(n=2))
        assert collector.wait_for(3) == [0, 1, 2]


def test_two_tails_rotate_once(config: Config) -> None:
    ensure_dirs(config)
    with Events(config, max_bytes=2000) as one, Events(config, max_bytes=2000) as two:
        a, b = Collector(one), Collector(two)
        for n in range(20):
            append(config.events_file, line(n=n, pad="q" * 200))
            a.poll()
            b.poll()
        assert a.wait_for(20) == list(range(20))
        assert b.wait_for(20) == list(range(20))
    recent = read_recent(config, 1 << 20)
    assert ns(recent) == list(range(20))[-len(recent):]
    assert len(recent) >= 8  # what two files of ~2 KB hold: no rotation threw one away


def test_backlog_has_what_was_written_before_the_tail(config: Config, command: str) -> None:
    ensure_dirs(config)
    rotated = config.events_file.with_name("events.jsonl.1")
    rotated.write_bytes(b"torn start\n" + line(n=0) + line(n=1))
    for n in (2, 3):
        run_hook(command, compact({"session_id": "s", "hook_event_name": "Stop", "n": n}))
    with Events(config) as tail:
        backlog = tail.backlog()
        assert ns(backlog) == [0, 1, 2, 3]
        assert tail.backlog() == []  # once
        collector = Collector(tail)
        run_hook(command, compact({"session_id": "s", "hook_event_name": "Stop", "n": 4}))
        assert collector.wait_for(1) == [4]  # no duplicate of the backlog


def test_backlog_is_bounded_and_starts_on_a_whole_line(config: Config) -> None:
    ensure_dirs(config)
    rotated = config.events_file.with_name("events.jsonl.1")
    rotated.write_bytes(b"".join(line(n=n) for n in range(100)))
    config.events_file.write_bytes(b"".join(line(n=n) for n in range(100, 110)))
    size = len(line(n=100))
    with Events(config) as tail:
        assert ns(tail.backlog(max_bytes=5 * size + 3)) == [105, 106, 107, 108, 109]
    with Events(config) as tail:
        assert ns(tail.backlog(max_bytes=15 * size)) == list(range(95, 110))
        assert tail.skipped == 0
    assert ns(read_recent(config, 15 * size)) == list(range(95, 110))
    assert ns(read_recent(config, 1 << 20)) == list(range(110))


def test_a_line_being_written_at_start_up_is_read_whole(config: Config) -> None:
    ensure_dirs(config)
    whole = line(n=1)
    config.events_file.write_bytes(line(n=0) + whole[:30])
    with Events(config) as tail:
        assert ns(tail.backlog()) == [0]
        append(config.events_file, whole[30:])
        assert Collector(tail).wait_for(1) == [1]
        assert tail.skipped == 0


def test_backlog_with_only_the_rotated_file(config: Config) -> None:
    ensure_dirs(config)
    config.events_file.with_name("events.jsonl.1").write_bytes(line(n=0))
    with Events(config) as tail:
        assert ns(tail.backlog()) == [0]
        append(config.events_file, line(n=1))
        assert Collector(tail).wait_for(1) == [1]


def test_a_missing_events_dir_and_file_appear_later(config: Config) -> None:
    assert not config.events_dir.exists()
    with Events(config) as tail:
        assert tail.backlog() == []
        assert tail.read() == []
        append(config.events_file, line(n=0))
        assert Collector(tail).wait_for(1) == [0]


def test_read_budget_sets_pending(config: Config) -> None:
    ensure_dirs(config)
    with Events(config, read_budget=1000) as tail:
        append(config.events_file, b"".join(line(n=n) for n in range(50)))
        wait_until(lambda: readable(tail), message="wake-up")
        first = tail.read()
        assert tail.pending
        assert 0 < len(first) < 50
        rest = Collector(tail)
        rest.poll()
        assert ns(first) + ns(rest.got) == list(range(50))
        assert not tail.pending


def test_read_recent_without_files(config: Config) -> None:
    assert read_recent(config) == []


def test_the_events_dir_removed_and_made_again(config: Config) -> None:
    ensure_dirs(config)
    with Events(config) as tail:
        append(config.events_file, line(n=0))
        collector = Collector(tail)
        assert collector.wait_for(1) == [0]
        for child in config.events_dir.iterdir():
            if child.is_file():
                child.unlink()
        for child in sorted(config.events_dir.rglob("*"), reverse=True):
            child.rmdir()
        config.events_dir.rmdir()
        wait_until(lambda: (collector.poll(), not tail.watching)[1], message="watch gone")
        config.events_dir.mkdir()
        append(config.events_file, line(n=1))
        wait_until(lambda: (collector.poll(), len(collector.got) == 2)[1],
                   message="read on a timer finds the new file")
        assert tail.watching
        assert ns(collector.got) == [0, 1]
        tail.read()
        append(config.events_file, line(n=2))
        wait_until(lambda: readable(tail), message="wake-ups work again")
        assert ns(tail.read()) == [2]
