"""`cbos mcp` driven by the MCP SDK's own stdio client: every tool, every safety rule,
and `cbos mcp install/uninstall/status` on Claude's configuration files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from cbos import config as config_mod
from cbos import mcp as cbos_mcp
from cbos import sessions
from cbos.tmux import Tmux
from tests.sshd import SshWorld
from tests.support import Cli, wait_until

T = TypeVar("T")


@pytest.fixture(autouse=True)
def prompt_log(quiet_fake: Path) -> Path:
    return quiet_fake


class Server:
    """One `cbos mcp` process and a client session on it, for the length of a test."""

    def __init__(self, session: ClientSession) -> None:
        self.session = session

    async def call(self, tool: str, **arguments: Any) -> Any:
        result = await self.session.call_tool(tool, arguments)
        text = result.content[0].text if result.content else ""  # type: ignore[union-attr]
        assert not result.is_error, f"{tool} failed: {text}"
        return json.loads(text)

    async def error(self, tool: str, **arguments: Any) -> str:
        result = await self.session.call_tool(tool, arguments)
        assert result.is_error, f"{tool} should have failed: {result.content}"
        text: str = result.content[0].text  # type: ignore[union-attr]
        assert "\n" not in text and text  # one line, like the CLI's
        return text


def drive(body: Callable[[Server], Awaitable[T]], *args: str,
          env: dict[str, str] | None = None) -> T:
    """Start `cbos mcp ARGS` over stdio with the SDK's client and run ``body``."""
    async def main() -> T:
        params = StdioServerParameters(command=sys.executable,
                                       args=["-m", "cbos", "mcp", *args],
                                       env=env if env is not None else dict(os.environ))
        async with stdio_client(params) as (read, write), \
                ClientSession(read, write) as session:
            await session.initialize()
            return await body(Server(session))
    return anyio.run(main)


def log_lines() -> list[dict[str, Any]]:
    path = config_mod.load().state_dir / cbos_mcp.LOG_NAME
    return [json.loads(line) for line in path.read_text().splitlines()]


def argv_of(tmux: Tmux, slug: str) -> list[str]:
    session = sessions.find(tmux, config_mod.load(), slug)
    assert session.claude is not None
    return Path(f"/proc/{session.claude.pid}/cmdline").read_text().split("\0")


def project(tmp_path: Path, name: str) -> str:
    path = tmp_path / name
    path.mkdir(exist_ok=True)
    return str(path)


# -- every tool --------------------------------------------------------------------------------


def test_tools_are_listed_with_descriptions(tmux: Tmux) -> None:
    async def body(server: Server) -> None:
        listed = (await server.session.list_tools()).tools
        assert [t.name for t in listed] == list(cbos_mcp.TOOLS)
        for tool in listed:
            assert tool.description and len(tool.description) > 40, tool.name
        delegate = next(t for t in listed if t.name == "delegate")
        schema = json.dumps(delegate.input_schema)
        assert '"read-only"' in schema and '"full"' in schema  # presets are an enum
        send = next(t for t in listed if t.name == "send")
        assert send.input_schema["required"] == ["session", "text"]
        assert await server.call("list_sessions") == {"sessions": [], "unreachable": {}}
    drive(body)


def test_every_session_tool_on_the_fake(fake_claude: Path, tmux: Tmux,
                                        tmp_path: Path) -> None:
    where = project(tmp_path, "one")

    async def body(server: Server) -> None:
        made = await server.call("create_session", path=where, slug="ONE",
                                 prompt="SAY hi", group="crew",
                                 system_prompt="You are ONE.")
        assert made == {"slug": "ONE", "preset": "edit", "prompt_sent": True}
        argv = argv_of(tmux, "ONE")
        assert argv[argv.index("--permission-mode") + 1] == "acceptEdits"
        assert argv[argv.index("--append-system-prompt") + 1] == "You are ONE."
        reached = await server.call("wait", session="ONE", state="waiting", timeout=30)
        assert reached["state"] == "waiting"
        listed = (await server.call("list_sessions", group="crew"))["sessions"]
        assert [v["slug"] for v in listed] == ["ONE"] and listed[0]["started_here"]
        assert listed[0]["group"] == "crew"
        reply = await server.call("chat", session="ONE", text="SAY second", timeout=60)
        assert reply["reply"] == "second" and reply["cost_usd"] > 0
        said = await server.call("history", session="ONE")
        assert [m["text"] for m in said["messages"]] == ["SAY hi", "hi", "SAY second",
                                                         "second"]
        assert (await server.call("send", session="ONE", text="WAIT 30"))["sent"]
        await server.call("wait", session="ONE", state="thinking", timeout=30)
        screen = await server.call("get_buffer", session="ONE")
        assert "WAIT 30" in screen["screen"]
        assert (await server.call("interrupt", session="ONE"))["interrupted"]
        await server.call("wait", session="ONE", state="waiting,idle", timeout=30)
        assert (await server.call("delete_session", session="ONE"))["deleted"]
        assert await server.call("list_sessions") == {"sessions": [], "unreachable": {}}
        bad = await server.error("send", session="ONE", text="x")
        assert "no session named 'ONE'" in bad
        await server.error("wait", session="NOPE", state="sleepy")

    drive(body)
    tools = [(line["tool"], line["target"], line["outcome"][:5]) for line in log_lines()]
    assert ("create_session", "ONE", "ok") in tools
    assert ("send", "ONE", "error") in tools
    assert tools[0][0] == "start"


def test_delegate_tool_returns_the_result_json(fake_claude: Path, tmux: Tmux,
                                               tmp_path: Path) -> None:
    async def body(server: Server) -> None:
        done = await server.call("delegate", path=project(tmp_path, "d"), task="SAY ok",
                                 slug="DEL", preset="read-only", max_turns=3)
        assert done["status"] == "done" and done["reply"] == "ok" and done["slug"] == "DEL"
        assert set(done) == {"slug", "session_id", "status", "reply", "cost_usd", "turns",
                             "duration_s", "violations"}
        denied = await server.call("delegate", path=project(tmp_path, "e"),
                                   task="WRITE out.txt", slug="DEL2", preset="read-only")
        assert denied["status"] == "denied"
        assert not (tmp_path / "e" / "out.txt").exists()
    drive(body)
    assert [line["outcome"] for line in log_lines() if line["tool"] == "delegate"] == [
        "ok (done)", "ok (denied)"]


# -- safety -------------------------------------------------------------------------------------


def test_a_session_never_drives_itself(fake_claude: Path, tmux: Tmux, tmp_path: Path,
                                       cli: Cli) -> None:
    assert cli("new", project(tmp_path, "me"), "--slug", "ME").code == 0

    async def body(server: Server) -> None:
        for tool, args in (("send", {"text": "x"}), ("chat", {"text": "x"}),
                           ("interrupt", {}), ("delete_session", {}),
                           ("answer", {"choice": "no"}), ("get_buffer", {}),
                           ("history", {}), ("wait", {})):
            message = await server.error(tool, session="ME", **args)
            assert "never drives itself" in message, tool
        listed = (await server.call("list_sessions"))["sessions"]
        assert listed[0]["caller"] is True
        await server.error("create_session", path=project(tmp_path, "x"), slug="ME")

    drive(body, env={**os.environ, "CBOS_SESSION": "ME"})
    refused = [line for line in log_lines() if line["tool"] == "send"]
    assert refused[0]["caller"] == "ME" and "never drives itself" in refused[0]["outcome"]
    assert cli("ls").code == 0 and "ME" in cli("ls").out  # still alive


def test_the_preset_ceiling(fake_claude: Path, tmux: Tmux, tmp_path: Path) -> None:
    async def body(server: Server) -> None:
        message = await server.error("create_session", path=project(tmp_path, "a"),
                                     preset="full")
        assert "ceiling 'review'" in message
        message = await server.error("delegate", path=project(tmp_path, "a"), task="SAY x",
                                     preset="edit")
        assert "ceiling 'review'" in message
        made = await server.call("create_session", path=project(tmp_path, "b"), slug="LOW")
        assert made["preset"] == "review"  # the default, lowered to the ceiling
        argv = argv_of(tmux, "LOW")
        assert argv[argv.index("--permission-mode") + 1] == "default"
    drive(body, "--max-preset", "review")


def test_the_budget_holds_for_what_the_server_starts(fake_claude: Path, tmux: Tmux,
                                                     tmp_path: Path) -> None:
    async def body(server: Server) -> None:
        first = await server.call("delegate", path=project(tmp_path, "a"), task="STEPS 12",
                                  slug="B1", preset="full")
        assert first["status"] == "over_budget" and first["turns"] < 12
        message = await server.error("create_session", path=project(tmp_path, "b"))
        assert "budget of $0.002 is spent" in message
        message = await server.error("delegate", path=project(tmp_path, "c"), task="SAY x")
        assert "budget" in message
        message = await server.error("send", session="B1", text="SAY more")
        assert "budget" in message
    drive(body, "--max-preset", "full", "--budget", "0.002")


def _open_write_dialog(server: Server, tmp_path: Path, slug: str) -> Awaitable[Any]:
    async def go() -> Any:
        await server.call("create_session", path=project(tmp_path, slug.lower()), slug=slug,
                          preset="read-only")
        await server.call("send", session=slug, text="WRITE f.txt")
        return await server.call("wait", session=slug, state="permission", timeout=30)
    return go()


def test_approving_needs_allow_approve_and_no_is_always_allowed(
        fake_claude: Path, tmux: Tmux, tmp_path: Path) -> None:
    async def body(server: Server) -> None:
        await _open_write_dialog(server, tmp_path, "ASK")
        for choice in ("yes", "1", "2"):
            message = await server.error("answer", session="ASK", choice=choice)
            assert "not allowed by this server" in message
        answered = await server.call("answer", session="ASK", choice="no")
        assert answered["choice"] == "no"
        await server.call("wait", session="ASK", state="waiting,idle", timeout=30)
        assert not (tmp_path / "ask" / "f.txt").exists()
    drive(body)


def test_allow_approve_lets_yes_through(fake_claude: Path, tmux: Tmux,
                                        tmp_path: Path) -> None:
    async def body(server: Server) -> None:
        await _open_write_dialog(server, tmp_path, "YES")
        await server.call("answer", session="YES", choice="yes")
        wait_until(lambda: (tmp_path / "yes" / "f.txt").exists(), timeout=20)
    drive(body, "--allow-approve")


def test_without_the_extra_one_line_names_it(tmp_path: Path) -> None:
    blocker = tmp_path / "block" / "mcp"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('not installed')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "block")}
    done = subprocess.run([sys.executable, "-m", "cbos", "mcp"], env=env, input="",
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == f"cbos: {cbos_mcp.MISSING_EXTRA}\n"
    assert "cbos[mcp]" in done.stderr


# -- install -----------------------------------------------------------------------------------


def test_install_merges_backs_up_and_removes_exactly(cli: Cli, private_home: Path) -> None:
    path = private_home / ".claude.json"
    original = {"numStartups": 3, "mcpServers": {"other": {"command": "x"}},
                "projects": {"/a": {"allowedTools": []}}}
    path.write_text(json.dumps(original))
    result = cli("mcp", "install", "--budget", "5", "--max-preset", "review")
    assert result.code == 0, result.err
    assert "registered the cbos MCP server" in result.out
    data = json.loads(path.read_text())
    entry = data["mcpServers"]["cbos"]
    assert Path(entry["command"]).is_absolute() and Path(entry["command"]).name == "cbos"
    assert entry["args"] == ["mcp", "--max-preset", "review", "--budget", "5"]
    assert data["mcpServers"]["other"] == {"command": "x"} and data["numStartups"] == 3
    assert json.loads((private_home / ".claude.json.cbos-backup").read_text()) == original
    assert "already registered" in cli("mcp", "install", "--budget", "5", "--max-preset",
                                       "review").out
    status = json.loads(cli("mcp", "status", "--json").out)
    assert status[0]["registered"] and status[0]["command_exists"]
    assert not status[1]["registered"]

    result = cli("mcp", "uninstall")
    assert result.code == 0 and "removed the cbos MCP server" in result.out
    assert json.loads(path.read_text()) == original
    assert "no cbos MCP server to remove" in cli("mcp", "uninstall").out
    assert cli("mcp", "status").code == 1


def test_install_leaves_a_malformed_file_untouched(cli: Cli, private_home: Path) -> None:
    path = private_home / ".claude.json"
    path.write_text('{"numStartups": 3,')
    result = cli("mcp", "install")
    assert result.code == 1 and "not valid JSON" in result.err and "untouched" in result.err
    assert path.read_text() == '{"numStartups": 3,'
    path.write_text('{"mcpServers": []}')
    result = cli("mcp", "install")
    assert result.code == 1 and "\"mcpServers\" is not a JSON object" in result.err
    assert path.read_text() == '{"mcpServers": []}'


def test_project_scope_writes_mcp_json(cli: Cli, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    where = Path(project(tmp_path, "repo"))
    monkeypatch.chdir(where)
    assert cli("mcp", "install", "--scope", "project").code == 0
    data = json.loads((where / ".mcp.json").read_text())
    assert data["mcpServers"]["cbos"]["args"] == ["mcp", "--max-preset", "edit"]
    assert not (where / ".mcp.json.cbos-backup").exists()  # there was nothing to back up
    assert cli("mcp", "uninstall", "--scope", "project").code == 0
    assert json.loads((where / ".mcp.json").read_text()) == {"mcpServers": {}}


def test_the_caller_comes_from_cbos_session_else_from_the_process_tree() -> None:
    claudes = {4100: "AUTH", 4200: "DOCS"}
    assert cbos_mcp.caller_of({"CBOS_SESSION": "DOCS"}, claudes, [4100]) == "DOCS"
    assert cbos_mcp.caller_of({}, claudes, [5000, 4100, 1]) == "AUTH"
    assert cbos_mcp.caller_of({"CBOS_SESSION": "bad name;"}, claudes, [4200]) == "DOCS"
    assert cbos_mcp.caller_of({}, claudes, [5000]) is None


def test_delegations_fan_out_in_parallel_and_each_can_continue(
        fake_claude: Path, tmux: Tmux, tmp_path: Path) -> None:
    async def body(server: Server) -> list[Any]:
        results: dict[str, Any] = {}

        async def one(name: str) -> None:
            results[name] = await server.call(
                "delegate", path=project(tmp_path, name.lower()), task=f"SAY from {name}",
                slug=name, preset="read-only", max_turns=3, group="fan")
        async with anyio.create_task_group() as group:
            for name in ("F1", "F2", "F3"):
                group.start_soon(one, name)
        assert {k: (v["status"], v["reply"]) for k, v in results.items()} == {
            "F1": ("done", "from F1"), "F2": ("done", "from F2"), "F3": ("done", "from F3")}
        listed = (await server.call("list_sessions", group="fan"))["sessions"]
        assert sorted(v["slug"] for v in listed) == ["F1", "F2", "F3"]
        return [await server.call("chat", session=name, text="SAY again", timeout=60)
                for name in ("F1", "F2", "F3")]

    replies = drive(body)
    assert [r["reply"] for r in replies] == ["again"] * 3
    from cbos import delegation
    records = delegation.load_records(config_mod.load())
    assert sorted(records) == ["F1", "F2", "F3"]  # none lost to a parallel write
    assert all(r.preset == "read-only" for r in records.values())


def test_a_first_prompts_cost_counts_against_the_budget(fake_claude: Path, tmux: Tmux,
                                                        tmp_path: Path) -> None:
    async def body(server: Server) -> None:
        await server.call("create_session", path=project(tmp_path, "a"), slug="SPEND",
                          prompt="SAY spent")
        await server.call("wait", session="SPEND", state="waiting", timeout=30)
        message = await server.error("create_session", path=project(tmp_path, "b"))
        assert "budget of $0.0005 is spent" in message
    drive(body, "--budget", "0.0005")


# -- sessions on other machines (HOST:SLUG), through a real sshd --------------------------------


async def _until(check: Callable[[], Awaitable[bool]], what: str,
                 timeout: float = 60) -> None:
    """Retry ``check`` until it holds (the remote side answers in its own time)."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await anyio.sleep(0.2)


def test_remote_sessions_by_host_slug_under_the_same_rules(
        world: SshWorld, fake_claude: Path, tmux: Tmux, tmp_path: Path) -> None:
    world.add("box1")
    world.add("box2", start=False)  # configured, but nothing answers there
    world.configure(["box1", "box2"])
    far = world.new_session("box1", "FAR")
    near = project(tmp_path, "near")

    async def body(server: Server) -> None:
        async def screen_has(name: str, text: str) -> bool:
            return text in (await server.call("get_buffer", session=name))["screen"]

        listed = await server.call("list_sessions")
        assert [(s["host"], s["slug"]) for s in listed["sessions"]] == [("box1", "box1:FAR")]
        assert set(listed["unreachable"]) == {"box2"}
        await _until(lambda: screen_has("box1:FAR", "❯"), "the remote composer")
        # The caller is this machine's FAR; box1:FAR is another session (full names).
        assert "never drives itself" in await server.error("send", session="FAR", text="x")
        await server.call("send", session="box1:FAR", text="WRITE f.txt")
        await server.call("wait", session="box1:FAR", state="permission", timeout=60)
        for choice in ("yes", "1"):
            refused = await server.error("answer", session="box1:FAR", choice=choice)
            assert "not allowed by this server" in refused
        assert (await server.call("answer", session="box1:FAR", choice="no"))["choice"] == "no"
        await server.call("wait", session="box1:FAR", state="waiting,idle", timeout=60)
        assert not (far / "f.txt").exists()
        chat = await server.call("chat", session="box1:FAR", text="SAY over ssh", timeout=60)
        assert chat["reply"] == "over ssh"
        await _until(lambda: screen_has("box1:FAR", "over ssh"), "the remote reply")
        said = await server.call("history", session="box1:FAR")
        assert "SAY over ssh" in [m["text"] for m in said["messages"]]
        assert "no session named 'NOPE' on box1" in await server.error(
            "send", session="box1:NOPE", text="hi")
        assert "no host named 'box9'" in await server.error("interrupt", session="box9:X")
        assert (await server.call("interrupt", session="box1:FAR"))["interrupted"]

        made = await server.call("create_session", path=str(far), slug="NEW", host="box1")
        assert made["slug"] == "box1:NEW"
        assert "this machine's sessions only" in await server.error(
            "create_session", path=str(far), host="box1", prompt="SAY x")
        slugs = {s["slug"]: s for s in (await server.call("list_sessions"))["sessions"]}
        assert slugs["box1:NEW"]["started_here"] and not slugs["box1:FAR"]["started_here"]
        for name in ("box1:NEW", "box1:FAR"):
            assert (await server.call("delete_session", session=name))["deleted"]
        local = await server.call("create_session", path=near, slug="NEAR")
        assert local["slug"] == "NEAR"  # this machine's sessions still work beside them
        rest = (await server.call("list_sessions"))["sessions"]
        assert [(s["host"], s["slug"]) for s in rest] == [(None, "NEAR")]

    drive(body, env={**os.environ, "CBOS_SESSION": "FAR"})
    names = subprocess.run(["tmux", "-L", world.remote_env("box1")["CBOS_TMUX_SOCKET"],
                            "list-sessions", "-F", "#{session_name}"],
                           capture_output=True, text=True).stdout
    assert "FAR" not in names and "NEW" not in names
