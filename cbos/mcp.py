"""`cbos mcp`: a stdio MCP server that lets a Claude session drive other sessions.

Built on the official MCP Python SDK (``pip install 'cbos[mcp]'``). The tools mirror the
WebSocket protocol's names and arguments (``session`` is a slug); results are JSON text;
a failure is a tool error carrying the one-line message the CLI would print.

Safety, because this lets one program drive Claude (:class:`Guard` decides, purely):

- the caller (``CBOS_SESSION``, else the cbos session whose claude is an ancestor of this
  process) is never a target: a session never drives itself;
- sessions are created with at most ``max_preset`` (default ``edit``), and everything
  the server starts shares ``budget`` USD: creating and delegating stop once it is spent,
  and a ``chat`` or ``delegate`` into a session it started is interrupted at the budget;
- answering "yes" (any option but "no") to a permission dialog needs ``allow_approve``;
  "no" and Esc are always allowed;
- every call is logged to ``<state>/mcp.log`` (JSON lines: caller, tool, target, outcome).

A session on another machine is named ``HOST:SLUG`` (a ``[[hosts]]`` entry): those calls go
through that host's own cbos (:class:`cbos.hosts.Remote`, text inside protocol messages),
under the same rules; ``list_sessions`` spans every host.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cbos import api, delegation, hosts, registry, sessions, transcript
from cbos import config as config_mod
from cbos import model as model_mod
from cbos.core import Core
from cbos.dialog import Dialog, answer_keys, parse_dialog
from cbos.errors import CbosError, RefusedError, UsageError
from cbos.procs import ProcTable
from cbos.tmux import Tmux

PresetName = Literal["read-only", "plan", "review", "edit", "full"]
OnPermission = Literal["deny", "wait"]
SERVER_NAME = "cbos"
TOOLS = ("list_sessions", "create_session", "send", "chat", "wait", "answer", "get_buffer",
         "history", "interrupt", "delete_session", "delegate")
LOG_NAME = "mcp.log"
_SGR = re.compile(r"\x1b\[[0-9;:]*m")
MISSING_EXTRA = ("the MCP server needs the MCP SDK: pip install 'cbos[mcp]' (the mcp "
                 "extra)")


# -- the rules (pure) ---------------------------------------------------------------------------


@dataclass
class Guard:
    """What this server may do, and what it has started and spent so far."""

    caller: str | None
    max_preset: str = delegation.DEFAULT_PRESET
    budget: float | None = None
    allow_approve: bool = False
    started: dict[str, float] = field(default_factory=dict)  # slug -> its cost, last seen
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        delegation.preset(self.max_preset)
        if self.budget is not None and not self.budget > 0:
            raise UsageError("--budget must be more than 0 (USD)")

    def target(self, slug: str) -> str:
        """``slug`` (or ``HOST:SLUG``, compared whole), when it is not the caller."""
        sessions.validate_slug(slug.rpartition(":")[2])
        if self.caller is not None and slug == self.caller:
            raise RefusedError(f"{slug} is the session calling this tool; a session never "
                               "drives itself: name another session")
        return slug

    def preset(self, name: str | None) -> str:
        """The preset to create with: the asked one within the ceiling, or the default
        (``edit``) lowered to the ceiling."""
        if name is None:
            top = delegation.preset(self.max_preset)
            default = delegation.preset(delegation.DEFAULT_PRESET)
            return default.name if default.rank <= top.rank else top.name
        return delegation.check_ceiling(name, self.max_preset).name

    def spent(self) -> float:
        with self.lock:
            return sum(self.started.values())

    def remaining(self) -> float | None:
        return None if self.budget is None else max(self.budget - self.spent(), 0.0)

    def need_budget(self, what: str) -> None:
        left = self.remaining()
        if left is not None and left <= 0:
            raise RefusedError(f"this server's budget of ${self.budget:g} is spent "
                               f"(${self.spent():.4f}); {what} refused. The person sets it "
                               "with `cbos mcp install --budget USD`")

    def note_cost(self, slug: str, cost: float | None) -> None:
        with self.lock:
            if slug in self.started and cost is not None:
                self.started[slug] = max(self.started[slug], cost)

    def approve(self, dialog: Dialog, choice: str) -> None:
        """Refuse an answer that grants a permission, unless approving is allowed."""
        if self.allow_approve or dialog.kind == "question":
            return
        word = choice.strip().lower()
        if word in ("no", "n", "esc", "escape", "cancel"):
            return
        if answer_keys(dialog, choice) == answer_keys(dialog, "no"):
            return
        raise RefusedError("answering yes to another session's permission dialog is not "
                           "allowed by this server (answer no or esc, or the person "
                           "registers it with `cbos mcp install --allow-approve`)")


def caller_of(environ: Mapping[str, str], pane_claudes: Mapping[int, str],
              ancestors: list[int]) -> str | None:
    """The calling session: ``CBOS_SESSION`` (cbos sets it for the sessions it starts),
    else the session whose claude is one of this process's ancestors."""
    named = environ.get("CBOS_SESSION", "")
    if named and sessions.SLUG_RE.match(named):
        return named
    return next((pane_claudes[pid] for pid in ancestors if pid in pane_claudes), None)


def _ancestors() -> list[int]:
    table = ProcTable.snapshot()
    found = []
    pid = os.getppid()
    while pid > 1 and pid not in found:
        found.append(pid)
        proc = table.procs.get(pid)
        if proc is None:
            break
        pid = proc.ppid
    return found


# -- the tools' work (no SDK here: tested and reused as plain functions) ----------------------


class Tools:
    """One method per MCP tool; each returns JSON-able data or raises CbosError."""

    def __init__(self, config: config_mod.Config, guard: Guard,
                 tmux: Tmux | None = None) -> None:
        self.config = config
        self.guard = guard
        self.tmux = tmux if tmux is not None else Tmux(config.tmux_socket)
        self.log_path = config.state_dir / LOG_NAME
        self._log_lock = threading.Lock()

    def core(self) -> Core:
        return Core(self.config, self.tmux).load()

    # -- bookkeeping --------------------------------------------------------------------

    def log(self, tool: str, target: str, outcome: str) -> None:
        line = json.dumps({"ts": round(time.time(), 3), "caller": self.guard.caller,
                           "tool": tool, "target": target, "outcome": outcome},
                          ensure_ascii=False) + "\n"
        with self._log_lock:
            config_mod.ensure_dirs(self.config)
            fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode("utf-8"))
            finally:
                os.close(fd)

    def _refresh_spent(self, core: Core) -> None:
        for view in core.snapshot().sessions:
            if view.slug in self.guard.started:
                usage = transcript.usage_for(view.claude_session_id, view.pid, None)
                cost = usage.get("cost_usd")
                self.guard.note_cost(view.slug, cost if isinstance(cost, float | int) else None)

    def _check_budget(self, what: str) -> None:
        """Refused once what this server started has spent the budget (costs read now:
        a session given a prompt at creation spends without a tool call)."""
        if self.guard.budget is not None:
            self._refresh_spent(self.core())
        self.guard.need_budget(what)

    # -- tools --------------------------------------------------------------------------

    def list_sessions(self, group: str | None = None) -> dict[str, Any]:
        """This machine's sessions and every reachable host's; the others named with why."""
        found = self._local_sessions(group)
        unreachable: dict[str, str] = {}
        if self.config.hosts and group is None:
            views, unreachable = hosts.gather(self.config)
            for view in views:
                self.guard.note_cost(view.slug, _cost(view))
                found.append({**view.to_json(), "host": view.host, "group": None,
                              "caller": False, "started_here": view.slug in self.guard.started})
        return {"sessions": found, "unreachable": unreachable}

    def _local_sessions(self, group: str | None) -> list[dict[str, Any]]:
        from cbos import model

        core = self.core()
        views = core.snapshot().sessions
        if group is not None:
            members = set(api.group_members(self.config, core, delegation.check_group(group)))
            views = tuple(v for v in views if v.slug in members)
        procs = core.board.procs
        groups = registry.groups(self.config)
        return [{**model.with_usage(
                    v, transcript.usage_for(v.claude_session_id, v.pid, procs)).to_json(),
                 "host": None, "group": groups.get(v.slug),
                 "caller": v.slug == self.guard.caller,
                 "started_here": v.slug in self.guard.started} for v in views]

    def create_session(self, path: str, slug: str | None = None,
                       preset: PresetName | None = None,
                       prompt: str | None = None, system_prompt: str | None = None,
                       group: str | None = None, host: str | None = None
                       ) -> dict[str, Any]:
        if host is not None:
            return self._create_remote(host, path, slug, preset, prompt, system_prompt, group)
        chosen = self.guard.preset(preset)
        self._check_budget("starting a session")
        if slug is not None:
            self.guard.target(slug)
        if prompt is not None:
            sessions.check_text(prompt)
        args = [*delegation.claude_args(chosen), *delegation.system_prompt_args(system_prompt)]
        env = delegation.group_env(None, group)
        core = Core(self.config, self.tmux)
        session = core.create(Path(os.path.expanduser(path)), slug, args, env)
        with self.guard.lock:
            self.guard.started[session.slug] = 0.0
        problem = api.wait_composer(self.tmux, {session.slug: session.pane.pane_id},
                                    api.READY_TIMEOUT)
        if problem:
            raise CbosError(f"{session.slug} started, but {problem[session.slug]}")
        if prompt:
            self.core().send(session.slug, prompt)
        return {"slug": session.slug, "preset": chosen, "prompt_sent": bool(prompt)}

    def _create_remote(self, host_name: str, path: str, slug: str | None,
                       preset: str | None, prompt: str | None, system_prompt: str | None,
                       group: str | None) -> dict[str, Any]:
        """A session on a host, through its cbos: Claude's default permission mode there
        (every edit and command asks), so it is refused under a read-only or plan ceiling."""
        host = self.config.host(host_name)
        if host is None:
            hosts.address(self.config, f"{host_name}:x")  # raises the clear error
            raise UsageError(f"no host named {host_name!r}")
        if preset is not None or prompt is not None or system_prompt is not None \
                or group is not None:
            raise UsageError("preset, prompt, system_prompt and group apply to this machine's "
                             f"sessions only; on {host.name} a session starts in Claude's "
                             "default mode: create it, then use send or chat")
        if delegation.preset(self.guard.max_preset).rank < delegation.preset("review").rank:
            raise RefusedError(f"this server's ceiling is {self.guard.max_preset}; a session "
                               f"on {host.name} starts in Claude's default mode, above it")
        if not (path.startswith("/") or path.startswith("~")):
            raise UsageError(f"give the project directory on {host.name} as an absolute "
                             "path (or ~/...)")
        self._check_budget("starting a session")
        fields: dict[str, Any] = {"path": path}
        if slug is not None:
            self.guard.target(f"{host.name}:{slug}")  # the full name, as everywhere
            fields["slug"] = slug
        with hosts.Remote(self.config, host) as remote:
            reply = remote.ask("create_session", **fields)
        name = f"{host.name}:{reply['session']['slug']}"
        with self.guard.lock:
            self.guard.started[name] = 0.0
        return {"slug": name, "preset": "default", "prompt_sent": False}

    def _remote(self, session: str) -> tuple[hosts.Remote, model_mod.SessionView] | None:
        """For ``HOST:SLUG``: an open connection to that host and the session's view
        (the caller closes it); None for a session on this machine."""
        where = hosts.address(self.config, session)
        self.guard.target(where.name)
        if where.host is None:
            return None
        remote = hosts.Remote(self.config, where.host)
        view = next((v for v in remote.views if v.slug == where.name), None)
        if view is None:
            remote.close()
            raise UsageError(f"no session named {where.slug!r} on {where.host.name}; "
                             "list_sessions lists them")
        self.guard.note_cost(view.slug, _cost(view))
        return remote, view

    def send(self, session: str, text: str) -> dict[str, Any]:
        sessions.check_text(text)
        far = self._remote(session)
        if far is not None:
            remote, view = far
            with remote:
                if session in self.guard.started:
                    self.guard.need_budget(f"sending to {session}")
                remote.ask("send", session=view.bare, text=text)
            return {"session": session, "sent": True}
        core = self.core()
        if session in self.guard.started:
            self._refresh_spent(core)
            self.guard.need_budget(f"sending to {session}")
        core.send(session, text)
        return {"session": session, "sent": True}

    def chat(self, session: str, text: str, timeout: float = 600.0) -> dict[str, Any]:
        far = self._remote(session)
        if far is not None:
            return self._chat_remote(*far, text, timeout)
        self.guard.target(session)
        if session not in self.guard.started:
            found = api.chat(self.config, self.tmux, session, text, timeout)
            return {**found.to_json(),
                    "cost_usd": found.usage.cost_usd if found.usage is not None else None}
        # A session this server started: the turn runs under what is left of the budget.
        self._refresh_spent(self.core())
        self.guard.need_budget(f"chatting with {session}")
        left = self.guard.remaining()
        spent_there = self.guard.started.get(session, 0.0)
        limits = delegation.Limits(
            max_cost=None if left is None else spent_there + left, timeout=timeout,
            on_permission="wait")
        record = delegation.load_records(self.config).get(session) or delegation.Record(
            self.guard.preset(None), limits, "")
        result = api.run_turn(self.config, self.tmux, session, text,
                              delegation.Record(record.preset, limits, record.path,
                                                record.session_id))
        self.guard.note_cost(session, result.cost_usd)
        if not result.ok:
            raise CbosError(f"{session}: {result.status}: {'; '.join(result.violations)}")
        return {"slug": session, "reply": result.reply, "duration_s": result.duration_s,
                "session_id": result.session_id, "cost_usd": result.cost_usd}

    def _chat_remote(self, remote: hosts.Remote, view: model_mod.SessionView, text: str,
                     timeout: float) -> dict[str, Any]:
        """Send, then the turn's end (the host's session_waiting); a session this server
        started is interrupted once its cost passes what is left of the budget."""
        name = view.slug
        started = time.monotonic()
        with remote:
            mine = name in self.guard.started
            if mine:
                self.guard.need_budget(f"chatting with {name}")
            left = self.guard.remaining()
            cap = None if left is None or not mine else self.guard.started[name] + left
            def watch(message: dict[str, Any]) -> None:
                if cap is None or message.get("type") != "session_update":
                    return
                fresh = _view_of(message, remote.host.name)
                cost = _cost(fresh) if fresh is not None and fresh.slug == name else None
                if cost is not None:
                    self.guard.note_cost(name, cost)
                    if cost >= cap:
                        remote.ask("interrupt", session=view.bare)
                        raise RefusedError(f"{name}: interrupted at this server's budget "
                                           f"of ${self.guard.budget:g}")

            reply = remote.chat(name, view.bare, text, timeout, watch)
        return {"slug": name, "reply": reply,
                "duration_s": round(time.monotonic() - started, 3)}

    def wait(self, session: str, state: str = "waiting,permission",
             timeout: float = 600.0) -> dict[str, Any]:
        from cbos import waiting

        far = self._remote(session)
        if far is not None:
            return self._wait_remote(*far, _wanted(state), timeout)
        self.guard.target(session)
        wanted = _wanted(state)
        # A fresh Core: wait_for reads the events backlog itself, once.
        reached = waiting.wait_for(Core(self.config, self.tmux), session, wanted, timeout)
        if reached is None:
            raise api.WaitTimeout(f"{session} did not reach {','.join(sorted(wanted))} "
                                  f"within {timeout:g}s")
        return {"session": session, "state": reached.state.value, "reason": reached.reason}

    def _wait_remote(self, remote: hosts.Remote, view: model_mod.SessionView,
                     wanted: set[str], timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with remote:
            while view.state.value not in wanted:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise api.WaitTimeout(f"{view.slug} did not reach "
                                          f"{','.join(sorted(wanted))} within {timeout:g}s")
                message = remote.events(left)
                if message is None:
                    continue
                if message.get("type") in ("session_update", "session_created"):
                    fresh = _view_of(message, remote.host.name)
                    if fresh is not None and fresh.slug == view.slug:
                        view = fresh
                elif message.get("type") == "session_deleted" \
                        and message.get("slug") == view.bare:
                    raise CbosError(f"{view.slug} ended")
        return {"session": view.slug, "state": view.state.value, "reason": view.reason}

    def answer(self, session: str, choice: str) -> dict[str, Any]:
        far = self._remote(session)
        if far is not None:
            remote, view = far
            with remote:
                # The screen, as for a local session: the host's list may not have read the
                # dialog yet when its state already says permission.
                screen = _SGR.sub("", str(remote.ask("get_screen", session=view.bare)["data"]))
                dialog = parse_dialog(screen)
                if dialog is None:
                    raise RefusedError(f"{session} shows no dialog to answer; see get_buffer")
                self.guard.approve(dialog, choice)
                # the question checked here: the host refuses if another one is up by now
                remote.ask("answer", session=view.bare, choice=choice,
                           question=dialog.question)
            return {"session": session, "answered": dialog.question, "choice": choice}
        self.guard.target(session)
        core = self.core()
        pane = core.session(session).pane.pane_id
        dialog = core._dialog_on_screen(pane)
        if dialog is None:
            raise RefusedError(f"{session} shows no dialog to answer; see get_buffer")
        self.guard.approve(dialog, choice)
        answered = core.answer(session, choice)
        return {"session": session, "answered": answered.question, "choice": choice}

    def get_buffer(self, session: str, lines: int | None = None) -> dict[str, Any]:
        far = self._remote(session)
        if far is not None:
            remote, view = far
            with remote:
                screen = _SGR.sub("", str(remote.ask("get_screen", session=view.bare)["data"]))
            if lines is not None:
                screen = "\n".join(screen.rstrip("\n").splitlines()[-lines:]) + "\n"
            return {"session": session, "screen": screen}
        self.guard.target(session)
        pane = self.core().session(session).pane.pane_id
        return {"session": session,
                "screen": self.tmux.capture(pane, colours=False, lines=lines)}

    def history(self, session: str, full: bool = False) -> dict[str, Any]:
        far = self._remote(session)
        if far is not None:
            remote, view = far
            remote.close()  # the session exists; the host's own `history` reads it
            words = ["history", "--json", *(["--full"] if full else []), view.bare]
            found: dict[str, Any] = json.loads(hosts.run_remote(self.config, remote.host,
                                                                words))
            return found
        self.guard.target(session)
        return api.history(self.config, self.tmux, session, full).to_json()

    def interrupt(self, session: str) -> dict[str, Any]:
        far = self._remote(session)
        if far is not None:
            remote, view = far
            with remote:
                remote.ask("interrupt", session=view.bare)
            return {"session": session, "interrupted": True}
        self.guard.target(session)
        self.core().interrupt(session)
        return {"session": session, "interrupted": True}

    def delete_session(self, session: str) -> dict[str, Any]:
        far = self._remote(session)
        if far is not None:
            remote, view = far
            with remote:
                remote.ask("delete_session", session=view.bare)
            return {"session": session, "deleted": True}
        self.guard.target(session)
        core = self.core()
        if session in self.guard.started:
            self._refresh_spent(core)  # its cost still counts once it is gone
        core.kill(session)
        return {"session": session, "deleted": True}

    def delegate(self, path: str, task: str, slug: str | None = None,
                 preset: PresetName | None = None, model: str | None = None,
                 max_cost: float | None = None, max_turns: int | None = None,
                 timeout: float = delegation.DEFAULT_TIMEOUT, context: str | None = None,
                 on_permission: OnPermission = "deny", group: str | None = None,
                 ) -> dict[str, Any]:
        chosen = self.guard.preset(preset)
        if slug is not None:
            self.guard.target(slug)
        self._check_budget("delegating")
        left = self.guard.remaining()
        cap = max_cost if left is None else min(max_cost or left, left)
        limits = delegation.Limits(cap, max_turns, timeout, on_permission)
        result = api.delegate(self.config, self.tmux, Path(os.path.expanduser(path)), task,
                              slug=slug, preset_name=chosen, model=model, limits=limits,
                              context=context, group=group)
        with self.guard.lock:
            self.guard.started[result.slug] = result.cost_usd or 0.0
        return result.to_json()


def _wanted(state: str) -> set[str]:
    wanted = {part.strip() for part in state.split(",") if part.strip()}
    try:
        api._states(wanted)
    except ValueError:
        raise UsageError(f"unknown state in {state!r}; use waiting, permission, "
                         "thinking, working, idle or exited (comma-separated)") from None
    return wanted


def _cost(view: model_mod.SessionView | None) -> float | None:
    cost = view.usage.get("cost_usd") if view is not None else None
    return float(cost) if isinstance(cost, int | float) and not isinstance(cost, bool) \
        else None


def _view_of(message: Mapping[str, Any], host: str) -> model_mod.SessionView | None:
    from cbos import protocol

    try:
        return protocol.view_from_json(message.get("session"), host)
    except protocol.BadEvent:
        return None


# -- the server ----------------------------------------------------------------------------------

DESCRIPTIONS: Mapping[str, str] = {
    "list_sessions": "List the Claude Code sessions cbos runs on this machine and on every "
    "configured host: {sessions: [...], unreachable: {host: why}}; each has slug (HOST:SLUG "
    "on another machine), host, state (waiting, permission, thinking, working, idle, "
    "exited), the reason for it, path, tokens and cost. Optionally only one group (this "
    "machine's). Use it first to find a session's name; every tool taking a session "
    "accepts HOST:SLUG.",
    "create_session": "Start a new interactive Claude Code session in a directory, under a "
    "safety preset (read-only, plan, review, edit, full; capped by this server), optionally "
    "with a first prompt, an appended system prompt and a group label. Returns its slug. "
    "path: an existing directory; slug: optional name (letters, digits, _ -); preset "
    "defaults to edit or this server's ceiling. host: start it on that configured machine "
    "instead (path is a directory there; it starts in Claude's default mode, so no preset, "
    "prompt, system_prompt or group). For a task you want an answer to, prefer delegate.",
    "send": "Type a prompt into a session and press Enter, without waiting (fire and "
    "forget). Refused while the session shows a dialog. Use chat to get the reply.",
    "chat": "Send a prompt to an existing session and wait for the reply of the turn it "
    "started (up to timeout seconds). Refused when the session is busy or shows a dialog.",
    "wait": "Block until a session reaches one of the given states (comma-separated, "
    "default waiting,permission) or the timeout passes.",
    "answer": "Answer the permission or question dialog a session shows: an option "
    "number, yes, no or esc. Approving (yes) may be refused by this server; no and esc "
    "are always allowed.",
    "get_buffer": "The session's current screen as text (optionally only the last lines): "
    "what a person attached to it would see.",
    "history": "The session's conversation from Claude's transcript: prompts and replies "
    "(full: also tool calls, results and thinking).",
    "interrupt": "Press Ctrl+C in a session to stop its current turn (the session stays).",
    "delete_session": "End a session (its tmux session; the log and the conversation stay).",
    "delegate": "Run a task in a NEW session under a preset and limits, follow it to the "
    "end and return {slug, session_id, status, reply, cost_usd, turns, duration_s, "
    "violations}. status is done, over_budget, max_turns, denied, needs_permission, "
    "timeout or failed. Dialogs the preset does not cover are answered no (or left with "
    "on_permission=wait). max_cost is USD for the whole conversation, max_turns counts "
    "tool-using model messages, timeout is seconds; context is background appended to the "
    "session's system prompt. Call it several times in parallel to fan work out; continue "
    "a delegated session with chat.",
}


def build_server(tools: Tools) -> Any:
    """The SDK server with the fixed tool names; failures become is_error results."""
    try:
        from mcp.server.mcpserver import MCPServer
        from mcp.types import CallToolResult, TextContent
    except ImportError:
        raise CbosError(MISSING_EXTRA) from None

    server = MCPServer(SERVER_NAME, instructions=(
        "cbos runs many interactive Claude Code sessions in tmux. These tools list, start, "
        "prompt, follow and stop them. Prefer delegate for a task with an answer; chat for "
        "a follow-up; list_sessions to find slugs. You cannot target your own session."))

    def wrap(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def call(**kwargs: Any) -> Any:
            target = str(kwargs.get("session") or kwargs.get("slug") or kwargs.get("path")
                         or "")
            try:
                result = method(**kwargs)
            except CbosError as exc:
                tools.log(name, target, f"error: {exc}")
                return CallToolResult(content=[TextContent(type="text", text=str(exc))],
                                      is_error=True)
            except ValueError as exc:  # a bad argument the checks above did not word
                tools.log(name, target, f"error: {exc}")
                return CallToolResult(content=[TextContent(type="text", text=str(exc))],
                                      is_error=True)
            status = result.get("status") if isinstance(result, dict) else None
            tools.log(name, target, f"ok{f' ({status})' if status else ''}")
            text = json.dumps(result, ensure_ascii=False, indent=1)
            return CallToolResult(content=[TextContent(type="text", text=text)])

        call.__signature__ = _signature(method)  # type: ignore[attr-defined]
        call.__annotations__ = dict(method.__annotations__)
        call.__name__ = name
        return call

    for name in TOOLS:
        method = getattr(tools, name)
        server.add_tool(wrap(name, method), name=name, description=DESCRIPTIONS[name])
    return server


def _signature(method: Callable[..., Any]) -> Any:
    import inspect
    import typing

    sig = inspect.signature(method)
    hints = typing.get_type_hints(method)
    params = [p.replace(annotation=hints.get(p.name, p.annotation))
              for p in sig.parameters.values()]
    return sig.replace(parameters=params, return_annotation=inspect.Signature.empty)


def serve(config: config_mod.Config, max_preset: str, budget: float | None,
          allow_approve: bool) -> None:
    """Run the server on stdin/stdout until the client closes it."""
    tmux = Tmux(config.tmux_socket)
    try:
        core = Core(config, tmux).load()
        claudes = {s.claude.pid: s.slug for s in core.board.sessions.values()
                   if s.claude is not None}
    except CbosError:
        claudes = {}
    caller = caller_of(os.environ, claudes, _ancestors())
    guard = Guard(caller, max_preset, budget, allow_approve)
    tools = Tools(config, guard, tmux)
    server = build_server(tools)
    tools.log("start", caller or "", f"max_preset={max_preset} budget={budget} "
              f"allow_approve={allow_approve}")
    server.run("stdio")


# -- registering with Claude Code ---------------------------------------------------------------

SCOPES = ("user", "project")


def config_file(scope: str, project: Path | None = None,
                environ: Mapping[str, str] | None = None) -> Path:
    """``~/.claude.json`` (``$CLAUDE_CONFIG_DIR/.claude.json``) for the user scope, the
    project's ``.mcp.json`` for the project scope."""
    if scope == "project":
        return (project if project is not None else Path.cwd()).resolve() / ".mcp.json"
    env = os.environ if environ is None else environ
    configured = env.get("CLAUDE_CONFIG_DIR", "")
    if configured:
        return Path(os.path.expanduser(configured)) / ".claude.json"
    return Path(env.get("HOME") or os.path.expanduser("~")) / ".claude.json"


def cbos_command() -> str:
    """The absolute path of the installed ``cbos`` (beside this interpreter, else on
    PATH): Claude starts the server without cbos's PATH."""
    import shutil
    import sys

    beside = Path(sys.executable).parent / "cbos"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside.absolute())
    found = shutil.which("cbos")
    if found is None:
        raise CbosError("cannot find the installed `cbos` command (not beside "
                        f"{sys.executable}, not on PATH); install cbos with pip first")
    return str(Path(found).absolute())


def server_entry(command: str, max_preset: str, budget: float | None,
                 allow_approve: bool) -> dict[str, Any]:
    delegation.preset(max_preset)
    args = ["mcp", "--max-preset", max_preset]
    if budget is not None:
        args += ["--budget", f"{budget:g}"]
    if allow_approve:
        args.append("--allow-approve")
    return {"type": "stdio", "command": command, "args": args, "env": {}}


def _servers(data: dict[str, Any], path: Path) -> dict[str, Any]:
    servers = data.setdefault("mcpServers", {})
    if not isinstance(servers, dict):
        raise CbosError(f"{path}: \"mcpServers\" is not a JSON object; cbos left the file "
                        "untouched: fix it, then try again")
    return servers


def install(scope: str, entry: dict[str, Any], project: Path | None = None) -> str:
    """Add (or update) the ``cbos`` server in Claude Code's configuration."""
    from cbos import hooks

    try:
        import mcp.server.mcpserver  # noqa: F401  (the server must be able to run)
    except ImportError:
        raise CbosError(MISSING_EXTRA) from None
    path = config_file(scope, project)

    def change(data: dict[str, Any]) -> dict[str, Any] | None:
        servers = _servers(data, path)
        if servers.get(SERVER_NAME) == entry:
            return None
        servers[SERVER_NAME] = entry
        return data

    written, backup = hooks.edit_json(path, change)
    if not written:
        return f"the cbos MCP server is already registered in {path}"
    kept = f"; previous file saved as {backup}" if backup else ""
    note = (" (Claude asks about a project's servers when it starts)"
            if scope == "project" else "")
    return (f"registered the cbos MCP server ({' '.join(entry['args'])}) in {path}{kept}"
            f"{note}; Claude sees its tools as mcp__cbos__<tool>")


def uninstall(scope: str, project: Path | None = None) -> str:
    """Remove exactly the ``cbos`` server entry (an emptied ``mcpServers`` goes too only
    in a project's ``.mcp.json``, which holds nothing else of Claude's)."""
    from cbos import hooks

    path = config_file(scope, project)

    def change(data: dict[str, Any]) -> dict[str, Any] | None:
        servers = data.get("mcpServers")
        if not isinstance(servers, dict) or SERVER_NAME not in servers:
            return None
        del servers[SERVER_NAME]
        return data

    if hooks.json_object(path) is None:
        return f"no cbos MCP server to remove: {path} does not exist"
    written, backup = hooks.edit_json(path, change)
    if not written:
        return f"no cbos MCP server to remove in {path}"
    return f"removed the cbos MCP server from {path}; previous file saved as {backup}"


def status(project: Path | None = None) -> list[dict[str, Any]]:
    """Where the server is registered, per scope, and whether its command still runs."""
    from cbos import hooks

    found = []
    for scope in SCOPES:
        path = config_file(scope, project)
        entry: Any = None
        error = None
        try:
            data = hooks.json_object(path)
            servers = (data or {}).get("mcpServers")
            entry = servers.get(SERVER_NAME) if isinstance(servers, dict) else None
        except CbosError as exc:
            error = str(exc)
        command = entry.get("command") if isinstance(entry, dict) else None
        found.append({"scope": scope, "file": str(path), "registered": entry is not None,
                      "command": command,
                      "args": entry.get("args") if isinstance(entry, dict) else None,
                      "command_exists": bool(command) and Path(str(command)).is_file(),
                      "error": error})
    return found
