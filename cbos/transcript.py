"""Claude Code's transcripts: the conversation, and what it cost, as Claude wrote it down.

A transcript is ``<claude config dir>/projects/<project>/<session id>.jsonl``, one JSON
object per line, appended as the conversation goes: ``user`` lines (prompts, and tool
results going back to the model), ``assistant`` lines (text, tool calls, thinking; each with
``message.usage`` and ``message.model``), and bookkeeping lines cbos ignores. Subagents
write their own files under ``<session id>/subagents/``.

Claude splits one API response into several assistant lines (one per content block) that
repeat the same ``message.id`` and usage, so usage is counted once per message id.

Everything here is pure or reads files; nothing needs tmux. :func:`usage_for` is what the
TUI and ``cbos ls --json`` call: tokens and cost from the transcript, memory and CPU from
the process table.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cbos.procs import ProcTable

SESSION_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
CHUNK = 1 << 20
TOOL_RESULT_CHARS = 2000  # a tool result in `history --full` (file reads can be megabytes)


# -- prices ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Price:
    """USD per million tokens. ``long`` applies to a request whose prompt (input plus cache
    reads and writes) is over ``long_over`` tokens: every token of that request."""

    input: float
    output: float
    cache_write: float  # 5-minute cache writes (what Claude Code uses)
    cache_read: float
    long_over: int | None = None
    long: Price | None = None


# Anthropic's list prices for the current model of each family, from the model overview
# pages (platform.claude.com/docs/en/models/{opus-5-5,sonnet-5-5,haiku-5-5}/overview,
# checked for Claude Code 2.1.328's default model claude-opus-5-5). Older models of a
# family are priced as its current one: an estimate, as Claude Code's own cost display is.
# A model whose name holds none of these families gets no cost (null), never a guess.
PRICES: Mapping[str, Price] = {
    "opus": Price(input=4.00, output=20.00, cache_write=5.00, cache_read=0.20),
    "sonnet": Price(input=2.00, output=10.00, cache_write=2.50, cache_read=0.20),
    "haiku": Price(input=0.10, output=0.50, cache_write=0.125, cache_read=0.01,
                   long_over=100_000,
                   long=Price(input=0.50, output=2.50, cache_write=0.625, cache_read=0.05)),
}


def price_of(model: str) -> Price | None:
    name = model.lower()
    return next((price for family, price in PRICES.items() if family in name), None)


@dataclass(frozen=True)
class Tokens:
    input: int = 0
    output: int = 0
    cache_write: int = 0
    cache_read: int = 0

    def __add__(self, other: Tokens) -> Tokens:
        return Tokens(self.input + other.input, self.output + other.output,
                      self.cache_write + other.cache_write, self.cache_read + other.cache_read)

    def __sub__(self, other: Tokens) -> Tokens:
        return Tokens(self.input - other.input, self.output - other.output,
                      self.cache_write - other.cache_write, self.cache_read - other.cache_read)

    @property
    def total(self) -> int:
        return self.input + self.output + self.cache_write + self.cache_read

    @property
    def prompt(self) -> int:
        return self.input + self.cache_write + self.cache_read


def cost_of(model: str, tokens: Tokens) -> float | None:
    """USD for one API response; None when the model's family has no price."""
    price = price_of(model)
    if price is None:
        return None
    if price.long is not None and price.long_over is not None and tokens.prompt > price.long_over:
        price = price.long
    return (tokens.input * price.input + tokens.output * price.output
            + tokens.cache_write * price.cache_write
            + tokens.cache_read * price.cache_read) / 1_000_000


@dataclass(frozen=True)
class Usage:
    """Usage summed over a transcript (or part of one)."""

    tokens: Tokens = Tokens()
    cost_usd: float | None = 0.0  # None: some message's model has no price
    model: str | None = None  # the model of the newest message
    messages: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "input_tokens": self.tokens.input, "output_tokens": self.tokens.output,
            "cache_creation_input_tokens": self.tokens.cache_write,
            "cache_read_input_tokens": self.tokens.cache_read,
            "total_tokens": self.tokens.total,
            "cost_usd": None if self.cost_usd is None else round(self.cost_usd, 6),
            "model": self.model, "messages": self.messages,
        }


@dataclass
class UsageSum:
    """Running sum of assistant usage; a message id seen again replaces its last count."""

    tokens: Tokens = Tokens()
    cost: float = 0.0
    unpriced: int = 0  # messages with tokens whose model has no price
    model: str | None = None
    messages: int = 0
    _last: tuple[str, Tokens, float | None] | None = None

    def add(self, message_id: str, model: str, tokens: Tokens) -> None:
        # The repeats of one message are consecutive among assistant lines (one line per
        # content block), so remembering the last id is enough to count each message once.
        if self._last is not None and message_id and self._last[0] == message_id:
            _, old_tokens, old_cost = self._last
            self.tokens -= old_tokens
            if old_cost is None:
                self.unpriced -= 1
            else:
                self.cost -= old_cost
            self.messages -= 1
        cost = cost_of(model, tokens) if tokens.total else 0.0
        self.tokens += tokens
        if cost is None:
            self.unpriced += 1
        else:
            self.cost += cost
        self.messages += 1
        if model and not model.startswith("<"):  # "<synthetic>": Claude's own error lines
            self.model = model
        self._last = (message_id, tokens, cost)

    def result(self) -> Usage:
        return Usage(self.tokens, None if self.unpriced else self.cost, self.model,
                     self.messages)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def assistant_usage(entry: Mapping[str, Any]) -> tuple[str, str, Tokens] | None:
    """(message id, model, tokens) of an assistant line; None for any other line."""
    if entry.get("type") != "assistant":
        return None
    message = entry.get("message")
    if not isinstance(message, Mapping):
        return None
    usage = message.get("usage")
    if not isinstance(usage, Mapping):
        return None
    tokens = Tokens(_int(usage.get("input_tokens")), _int(usage.get("output_tokens")),
                    _int(usage.get("cache_creation_input_tokens")),
                    _int(usage.get("cache_read_input_tokens")))
    message_id = message.get("id")
    model = message.get("model")
    return (message_id if isinstance(message_id, str) else "",
            model if isinstance(model, str) else "", tokens)


def _parse(line: bytes) -> Mapping[str, Any] | None:
    try:
        entry = json.loads(line)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    return entry if isinstance(entry, dict) else None


def sum_usage(lines: Iterable[bytes], into: UsageSum | None = None) -> UsageSum:
    """Add the usage of the assistant lines among ``lines``.

    Only lines that mention ``"usage"`` are parsed: tool results (file contents, command
    output) are most of a transcript's bytes and are skipped without decoding them.
    """
    total = into if into is not None else UsageSum()
    for line in lines:
        if b'"usage"' not in line or b'"assistant"' not in line:
            continue
        entry = _parse(line)
        found = assistant_usage(entry) if entry is not None else None
        if found is not None:
            total.add(*found)
    return total


# -- reading transcripts cheaply -----------------------------------------------------------


@dataclass
class _File:
    ident: tuple[int, int]
    size: int
    mtime_ns: int
    offset: int  # just past the last whole line read
    total: UsageSum = field(default_factory=UsageSum)


class UsageCache:
    """Usage per transcript, kept by (path, size, mtime): a file that grew is read from
    where the last read stopped, one that shrank or was replaced is read again. Thread-safe.
    """

    def __init__(self, max_files: int = 1024) -> None:
        self.max_files = max_files
        self._files: dict[Path, _File] = {}
        self._lock = threading.Lock()
        self.bytes_read = 0  # for tests and benchmarks: what the cache did not save

    def usage(self, path: Path) -> Usage | None:
        """The usage of one transcript file; None when it cannot be read."""
        with self._lock:
            try:
                with open(path, "rb") as handle:
                    st = os.fstat(handle.fileno())
                    ident = (st.st_dev, st.st_ino)
                    known = self._files.get(path)
                    if known is not None and known.ident == ident and \
                            (known.size, known.mtime_ns) == (st.st_size, st.st_mtime_ns):
                        return known.total.result()
                    if known is None or known.ident != ident or st.st_size < known.offset:
                        known = _File(ident, 0, 0, 0)
                    self._read(handle, known)
                    known.size, known.mtime_ns = st.st_size, st.st_mtime_ns
            except OSError:
                self._files.pop(path, None)
                return None
            if path not in self._files and len(self._files) >= self.max_files:
                self._files.pop(next(iter(self._files)))
            self._files[path] = known
            return known.total.result()

    def _read(self, handle: Any, known: _File) -> None:
        handle.seek(known.offset)
        rest = b""
        while True:
            chunk = handle.read(CHUNK)
            if not chunk:
                break
            self.bytes_read += len(chunk)
            data = rest + chunk
            cut = data.rfind(b"\n")
            if cut < 0:
                rest = data
                continue
            sum_usage(data[:cut].split(b"\n"), known.total)
            known.offset += cut + 1  # data starts at the old offset
            rest = data[cut + 1:]
        # A last line without its newline is still being written: read it next time.

    def session_usage(self, path: Path) -> Usage | None:
        """A conversation's usage: its transcript plus its subagents' transcripts."""
        main = self.usage(path)
        if main is None:
            return None
        subagents = path.with_suffix("") / "subagents"
        try:
            extra = sorted(p for p in subagents.iterdir() if p.suffix == ".jsonl")
        except OSError:
            extra = []
        for sub in extra:
            found = self.usage(sub)
            if found is not None:
                main = Usage(main.tokens + found.tokens,
                             None if main.cost_usd is None or found.cost_usd is None
                             else main.cost_usd + found.cost_usd,
                             main.model, main.messages + found.messages)
        return main


CACHE = UsageCache()


# -- finding a transcript ------------------------------------------------------------------


def claude_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Claude's config dir (``$CLAUDE_CONFIG_DIR`` or ``~/.claude``)."""
    env = os.environ if environ is None else environ
    configured = env.get("CLAUDE_CONFIG_DIR", "")
    if configured:
        return Path(os.path.expanduser(configured))
    return Path(env.get("HOME") or os.path.expanduser("~")) / ".claude"


_FOUND: dict[str, Path] = {}


def find(session_id: str, hint: str | Path | None = None, home: Path | None = None,
         ) -> Path | None:
    """The transcript of ``session_id``: ``hint`` (a hook payload's transcript_path) when it
    names that session's file and exists, else a search of Claude's project folders by id
    (session ids are UUIDs: the file name alone identifies it, whatever the folder's name).
    """
    if not SESSION_ID_RE.match(session_id or ""):
        return None
    name = f"{session_id}.jsonl"
    if hint:
        path = Path(hint)
        if path.name == name and path.is_file():
            _FOUND[session_id] = path
            return path
    known = _FOUND.get(session_id)
    if known is not None and known.is_file():
        return known
    projects = (home if home is not None else claude_dir()) / "projects"
    try:
        folders = [entry.path for entry in os.scandir(projects) if entry.is_dir()]
    except OSError:
        return None
    for folder in folders:
        candidate = Path(folder) / name
        if candidate.is_file():
            _FOUND[session_id] = candidate
            return candidate
    return None


def usage_for(session_id: str | None, pid: int | None, procs: ProcTable | None,
              transcript_path: str | Path | None = None) -> dict[str, Any]:
    """A session's usage so far, for ``cbos ls`` and :meth:`cbos.api.Session.usage`.

    Tokens and cost come from the transcript of the session's current Claude conversation
    (read incrementally: cheap to call on every refresh); memory (RSS bytes) and CPU
    seconds from the claude process tree in ``procs``. Unknown figures are None.
    """
    usage: dict[str, Any] = dict.fromkeys(
        ("input_tokens", "output_tokens", "cache_creation_input_tokens",
         "cache_read_input_tokens", "total_tokens", "cost_usd", "model", "messages"))
    if session_id:
        path = find(session_id, transcript_path)
        found = CACHE.session_usage(path) if path is not None else None
        if found is not None:
            usage.update(found.to_json())
    rss: int | None = None
    cpu: float | None = None
    if procs is not None and pid is not None and pid in procs.procs:
        rss, cpu = procs.tree_usage(pid)
        cpu = round(cpu, 2)
    usage["rss_bytes"], usage["cpu_seconds"] = rss, cpu
    return usage


# -- the conversation ------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """One thing said in the conversation, as ``cbos history`` shows it."""

    role: str  # "user" or "assistant"
    kind: str  # prompt, text, tool_use, tool_result, thinking, meta
    text: str
    timestamp: str = ""  # ISO 8601, as the transcript has it

    def to_json(self) -> dict[str, str]:
        return {"role": self.role, "kind": self.kind, "text": self.text,
                "timestamp": self.timestamp}


# User lines that Claude Code writes itself rather than the person: background-task and
# slash-command plumbing, reminders, the interrupt markers, compaction summaries.
_META_PREFIXES = ("<task-notification>", "<command-", "<local-command-", "<system-reminder>",
                  "<bash-", "<user-memory-input>", "Caveat: ", "[Request interrupted by user")


def entries(path: Path, offset: int = 0) -> Iterator[Mapping[str, Any]]:
    """The transcript's JSON objects from byte ``offset`` on; bad lines are skipped."""
    with open(path, "rb") as handle:
        handle.seek(offset)
        for line in handle:
            if line.endswith(b"\n"):  # a last line without newline is still being written
                entry = _parse(line)
                if entry is not None:
                    yield entry


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, Mapping):
                if part.get("type") == "text" and isinstance(part.get("text"), str):
                    parts.append(part["text"])
                elif part.get("type") == "image":
                    parts.append("[image]")
        return "\n".join(parts)
    return ""


def _tool_summary(part: Mapping[str, Any]) -> str:
    name = part.get("name")
    tool_input = part.get("input")
    if not isinstance(tool_input, Mapping):
        tool_input = {}
    for key in ("command", "file_path", "path", "pattern", "url", "query", "prompt",
                "description"):
        value = tool_input.get(key)
        if isinstance(value, str) and value.strip():
            return f"{name if isinstance(name, str) else 'tool'}: {value.strip()}"
    return name if isinstance(name, str) and name else "tool"


def _user_messages(entry: Mapping[str, Any], content: Any, stamp: str) -> Iterator[Message]:
    meta = bool(entry.get("isMeta") or entry.get("isCompactSummary")
                or entry.get("isSidechain"))
    if isinstance(content, str):
        kind = "meta" if meta or content.lstrip().startswith(_META_PREFIXES) else "prompt"
        yield Message("user", kind, content, stamp)
        return
    if not isinstance(content, list):
        return
    texts: list[str] = []
    for part in content:
        if not isinstance(part, Mapping):
            continue
        if part.get("type") == "tool_result":
            result = _clip(_text_of(part.get("content")), TOOL_RESULT_CHARS)
            yield Message("user", "tool_result", result, stamp)
        elif part.get("type") in ("text", "image"):
            texts.append(_text_of([part]))
    if texts:
        text = "\n".join(texts)
        kind = "meta" if meta or text.lstrip().startswith(_META_PREFIXES) else "prompt"
        yield Message("user", kind, text, stamp)


def _assistant_messages(entry: Mapping[str, Any], content: Any, stamp: str,
                        ) -> Iterator[Message]:
    meta = bool(entry.get("isSidechain") or entry.get("isApiErrorMessage"))
    if isinstance(content, str):
        yield Message("assistant", "meta" if meta else "text", content, stamp)
        return
    if not isinstance(content, list):
        return
    for part in content:
        if not isinstance(part, Mapping):
            continue
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str):
            yield Message("assistant", "meta" if meta else "text", part["text"], stamp)
        elif kind == "tool_use":
            yield Message("assistant", "tool_use", _tool_summary(part), stamp)
        elif kind in ("thinking", "redacted_thinking"):
            thought = part.get("thinking")
            yield Message("assistant", "thinking",
                          thought if isinstance(thought, str) else "", stamp)


def messages(items: Iterable[Mapping[str, Any]], full: bool = False) -> list[Message]:
    """The conversation in order. Without ``full``: the person's prompts and Claude's text
    only (consecutive text of one turn joined); with it, also tool calls, tool results,
    thinking, and the lines Claude Code writes itself (``<task-notification>``, ...)."""
    out: list[Message] = []
    for entry in items:
        if not isinstance(entry, Mapping):  # a JSON line that is not an object
            continue
        kind = entry.get("type")
        message = entry.get("message")
        if kind not in ("user", "assistant") or not isinstance(message, Mapping):
            continue
        stamp = entry.get("timestamp")
        stamp = stamp if isinstance(stamp, str) else ""
        content = message.get("content")
        found = (_user_messages(entry, content, stamp) if kind == "user"
                 else _assistant_messages(entry, content, stamp))
        for item in found:
            if not full and item.kind not in ("prompt", "text"):
                continue
            if not item.text.strip() and item.kind in ("prompt", "text"):
                continue
            last = out[-1] if out else None
            if not full and last is not None and last.kind == item.kind == "text":
                out[-1] = Message("assistant", "text", f"{last.text}\n\n{item.text}",
                                  last.timestamp)
                continue
            out.append(item)
    return out


def turn_usage(items: Iterable[Mapping[str, Any]]) -> tuple[Usage | None, str]:
    """Usage and final text of the first prompt's turn among ``items`` (the transcript read
    from where it ended before the prompt was sent): everything Claude answered after that
    prompt, up to the next prompt. (None, "") when no prompt is there."""
    total: UsageSum | None = None
    reply = ""
    for entry in items:
        if entry.get("type") == "user":
            prompt = [m for m in messages([entry]) if m.kind == "prompt"]
            if prompt:
                if total is not None:
                    break  # the next turn
                total = UsageSum()
            continue
        if total is None:
            continue
        found = assistant_usage(entry)
        if found is not None:
            total.add(*found)
        texts = [m.text for m in messages([entry]) if m.kind == "text"]
        if texts:
            reply = texts[-1]
    return (total.result() if total is not None else None), reply


# -- past conversations ------------------------------------------------------------------------


def project_folder(path: Path, home: Path | None = None) -> Path:
    """Where Claude keeps a directory's conversations: ``projects/<path, every character
    but [A-Za-z0-9] as "-">``."""
    name = re.sub(r"[^A-Za-z0-9]", "-", str(path.resolve()))
    return (home if home is not None else claude_dir()) / "projects" / name


@dataclass(frozen=True)
class Conversation:
    """One stored conversation, as ``cbos conversations`` lists it."""

    session_id: str
    started: str  # ISO 8601, its first line's timestamp
    last_activity: str  # its last line's timestamp
    messages: int  # prompts and replies (as ``cbos history`` shows them)
    first_prompt: str
    path: Path

    def to_json(self) -> dict[str, Any]:
        return {"id": self.session_id, "started": self.started,
                "last_activity": self.last_activity, "messages": self.messages,
                "first_prompt": self.first_prompt, "transcript_path": str(self.path)}


def conversation(path: Path) -> Conversation | None:
    """A transcript file's summary; None when it holds no conversation (or can't be read)."""
    stamps: list[str] = []

    def noted(items: Iterator[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
        for entry in items:
            stamp = entry.get("timestamp")
            if isinstance(stamp, str) and stamp:
                stamps.append(stamp)
            yield entry

    try:
        said = messages(noted(entries(path)))
    except OSError:
        return None
    if not said or not stamps:
        return None
    first = next((m.text for m in said if m.kind == "prompt"), "")
    return Conversation(path.stem, min(stamps), max(stamps), len(said),
                        first.strip().splitlines()[0] if first.strip() else "", path)


def conversations(directory: Path, home: Path | None = None) -> list[Conversation]:
    """Claude's stored conversations for ``directory``, the most recent first."""
    folder = project_folder(directory, home)
    try:
        files = [p for p in folder.iterdir()
                 if p.suffix == ".jsonl" and SESSION_ID_RE.match(p.stem)]
    except OSError:
        return []
    found = [c for c in map(conversation, files) if c is not None]
    return sorted(found, key=lambda c: c.last_activity, reverse=True)
