"""The protocol's message set (shared/protocol.md, v1 and v2): parse, check and build.

Pure functions and no I/O: the WebSocket server, the stdio server (``cbos serve --stdio``)
and the host client (:mod:`cbos.hosts`) all read and write messages through here, so a
message means the same thing whichever transport carried it.

Requests (client to server) are checked by :func:`parse_request`, which answers a
normalised dict or raises :class:`BadRequest` with words a person can act on. Events
(server to client) are read by :func:`parse_event` and :func:`view_from_json` on the host
client's side, where the other end is another cbos but still not trusted blindly.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from typing import Any

from cbos import logs
from cbos import state as st
from cbos.dialog import Dialog, Option
from cbos.errors import UsageError
from cbos.model import SessionView
from cbos.sessions import check_text

MAX_MESSAGE = 1 << 20  # bytes of one incoming message; more is refused
PIECE = 64 << 10  # raw bytes per stream message: escaped, it stays under clients' 1 MiB
MAX_NAMES = 1000
WAITING = (st.State.WAITING, st.State.PERMISSION)
CONTEXT_PREFIXES = ("done: ", "from Claude's status file: ")
# `answer`'s choice: an option number, or one of the words `cbos answer` takes.
CHOICE_RE = re.compile(r"^(?:[0-9]{1,3}|yes|y|no|n|esc|escape|cancel)$", re.IGNORECASE)

KINDS = frozenset({"subscribe", "unsubscribe", "send", "send_input", "interrupt", "get_buffer",
                   "list_sessions", "create_session", "delete_session", "answer",
                   "get_screen"})
EVENTS = frozenset({"sessions", "available_streams", "subscribed", "unsubscribed", "stream",
                    "buffer", "screen", "send_result", "interrupt_result", "answer_result",
                    "session_created", "session_deleted", "session_update",
                    "session_waiting", "error"})


# -- requests ------------------------------------------------------------------------------


class BadRequest(Exception):
    """A message that cannot be served; ``request`` carries the id to echo, if known."""

    def __init__(self, message: str, request: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.request = request or {}


def _string(value: Any, what: str, request: Mapping[str, Any], limit: int = 256) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"{what} must be a string", request)
    if len(value) > limit:
        raise BadRequest(f"{what} is longer than {limit} characters", request)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"{what} is not valid Unicode (a lone surrogate)", request) from None
    return value


def _name(message: Mapping[str, Any], request: Mapping[str, Any], required: bool = True
          ) -> str | None:
    """The session a message names: ``session`` and ``slug`` are interchangeable."""
    session, slug = message.get("session"), message.get("slug")
    if session is not None and slug is not None and session != slug:
        raise BadRequest(f'"session" ({session!r}) and "slug" ({slug!r}) disagree; '
                         "give one of them", request)
    value = session if session is not None else slug
    if value is None:
        if required:
            raise BadRequest(f'{request["type"]} needs "session" (or "slug"): the session '
                             "name", request)
        return None
    name = _string(value, '"session"', request)
    if not name:
        raise BadRequest('"session" is empty; give a session name', request)
    return name


def _names(message: Mapping[str, Any], request: Mapping[str, Any]) -> list[str]:
    value = message.get("sessions")
    if not isinstance(value, list) or not value:
        raise BadRequest(f'{request["type"]} needs "sessions": a list of session names, '
                         'or ["*"] for all', request)
    if len(value) > MAX_NAMES:
        raise BadRequest(f'"sessions" has more than {MAX_NAMES} names', request)
    names = [_string(v, "each of \"sessions\"", request) for v in value]
    return list(dict.fromkeys(n for n in names if n))


def _since(message: Mapping[str, Any], request: Mapping[str, Any]) -> dict[str, int]:
    value = message.get("since")
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_NAMES:
        raise BadRequest('"since" must be an object mapping session names to byte offsets',
                         request)
    since: dict[str, int] = {}
    for key, offset in value.items():
        name = _string(key, 'a name in "since"', request)
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise BadRequest(f'"since" for {name!r} must be a byte offset (a whole number, '
                             "0 or more)", request)
        since[name] = offset
    return since


def _text(message: Mapping[str, Any], kind: str, request: Mapping[str, Any]) -> str:
    value = message.get("text")
    if not isinstance(value, str):
        raise BadRequest(f'{kind} needs "text": the string to type', request)
    _string(value, '"text"', request, limit=MAX_MESSAGE)
    try:
        return check_text(value)
    except UsageError as exc:
        raise BadRequest(str(exc), request) from None


def _choice(message: Mapping[str, Any], request: Mapping[str, Any]) -> str:
    value = message.get("choice")
    if not isinstance(value, str) or not CHOICE_RE.match(value.strip()):
        raise BadRequest('answer needs "choice": an option number, or yes, no or esc',
                         request)
    return value.strip().lower()


def _path(message: Mapping[str, Any], request: Mapping[str, Any]) -> str:
    path = message.get("path")
    if not isinstance(path, str) or not path:
        raise BadRequest('create_session needs "path": the project directory, an '
                         "absolute path", request)
    path = _string(path, '"path"', request, limit=4096)
    if "\x00" in path:
        raise BadRequest("path has a NUL character", request)
    if not os.path.isabs(os.path.expanduser(path)):
        raise BadRequest(f"path {path!r} is relative; give an absolute path", request)
    return path


def parse_request(text: str | bytes) -> dict[str, Any]:
    """One client message as a normalised command, or :class:`BadRequest` saying why not.

    Runs on a connection's own thread: the loop thread only sees well-formed commands.
    """
    try:
        message = json.loads(text)
    except RecursionError:
        raise BadRequest("the message is nested too deeply; send a flat JSON object") from None
    except ValueError as exc:
        raise BadRequest(f"the message is not valid JSON ({exc}); send one JSON object per "
                         "message") from None
    if not isinstance(message, dict):
        raise BadRequest('the message must be a JSON object with a "type"')
    request: dict[str, Any] = {"type": "?"}
    if "id" in message:
        ident = message["id"]
        if isinstance(ident, float) and not math.isfinite(ident):
            raise BadRequest('"id" must be a finite number')
        if not (ident is None or isinstance(ident, str | int | float | bool)):
            raise BadRequest('"id" must be a string, a number, a boolean or null')
        if isinstance(ident, str):
            _string(ident, '"id"', {})
        request["id"] = ident
    kind = message.get("type")
    if not isinstance(kind, str):
        raise BadRequest('the message has no "type" string; e.g. {"type": "list_sessions"}',
                         request)
    if kind not in KINDS:
        shown = kind if len(kind) <= 40 else kind[:40] + "…"
        raise BadRequest(f"unknown message type {shown!r}; known types: "
                         f"{', '.join(sorted(KINDS))}", request)
    request["type"] = "send" if kind == "send_input" else kind
    if kind in ("subscribe", "unsubscribe"):
        request["sessions"] = _names(message, request)
        if kind == "subscribe":
            request["since"] = _since(message, request)
    elif kind in ("send", "send_input"):
        request["slug"] = _name(message, request)
        request["text"] = _text(message, kind, request)
    elif kind in ("interrupt", "get_buffer", "delete_session", "get_screen"):
        request["slug"] = _name(message, request)
    elif kind == "answer":
        request["slug"] = _name(message, request)
        request["choice"] = _choice(message, request)
        # (v2+) the question the client saw: refused if the dialog on screen asks another
        question = message.get("question")
        if question is not None:
            request["question"] = _string(question, '"question"', request, limit=16_384)
    elif kind == "create_session":
        request["path"] = _path(message, request)
        request["slug"] = _name(message, request, required=False)
    return request


# -- building messages ---------------------------------------------------------------------


def dump(message: Mapping[str, Any]) -> str:
    """One message as compact JSON text: a frame, or a line (JSON escapes newlines)."""
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


def reply(request: Mapping[str, Any], message: dict[str, Any]) -> str:
    if "id" in request:
        message["id"] = request["id"]
    return dump(message)


def error(request: Mapping[str, Any], text: str) -> str:
    return reply(request, {"type": "error", "message": text})


def stream(slug: str, data: str, ts: float, offset: int, gap: bool) -> str:
    message: dict[str, Any] = {"type": "stream", "session": slug, "data": data,
                               "ts": round(ts, 3), "offset": offset}
    if gap:
        message["gap"] = True  # (v1+) bytes before this chunk were lost
    return dump(message)


def _boundary(raw: bytes, at: int) -> int:
    """``at`` moved back to the start of a UTF-8 character (at most 3 bytes)."""
    for cut in range(at, max(0, at - 3) - 1, -1):
        if cut == 0 or cut >= len(raw) or not 0x80 <= raw[cut] <= 0xBF:
            return cut if cut else at
    return at


def stream_messages(chunk: logs.Chunk, piece: int = PIECE) -> list[str]:
    """A chunk as ``stream`` messages of at most ``piece`` raw bytes, cut between characters."""
    raw = chunk.raw
    if len(raw) <= piece:
        return [stream(chunk.slug, chunk.data, chunk.ts, chunk.offset, chunk.gap)]
    texts: list[str] = []
    start, offset = 0, chunk.offset - len(raw)
    while start < len(raw):
        end = _boundary(raw, min(len(raw), start + piece))
        part = raw[start:end]
        offset += len(part)
        texts.append(stream(chunk.slug, part.decode("utf-8", "replace"), chunk.ts, offset,
                            chunk.gap and start == 0))
        start = end
    return texts


def waiting_context(view: SessionView, last_message: str = "") -> str:
    """What a session waits on: Claude's last words, or the permission it asks for."""
    if view.state is st.State.WAITING and last_message.strip():
        return last_message.strip()[:16_384]
    first = view.reason.split(" · ")[0]
    for prefix in CONTEXT_PREFIXES:
        if first.startswith(prefix):
            first = first[len(prefix):]
            if len(first) >= 2 and first[0] == first[-1] == '"':
                first = first[1:-1]
    return first or view.reason


# -- reading events (the host client's side) -----------------------------------------------


class BadEvent(Exception):
    """A message from a server that does not follow the protocol."""


def parse_event(text: str | bytes) -> dict[str, Any]:
    """One server message as a dict with a known ``type``, or :class:`BadEvent`."""
    try:
        message = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise BadEvent(f"not a JSON message ({exc})") from None
    if not isinstance(message, dict) or message.get("type") not in EVENTS:
        raise BadEvent(f"not a protocol message: {str(text)[:80]!r}")
    return message


def _field(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = data.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise BadEvent(f"a session's {key!r} is missing or of the wrong type")
    return value


def dialog_from_json(data: Any) -> Dialog | None:
    if not isinstance(data, dict):
        return None
    options = []
    for item in data.get("options") or ():
        if isinstance(item, dict) and isinstance(item.get("number"), int) \
                and isinstance(item.get("label"), str):
            options.append(Option(item["number"], item["label"]))
    kind = data.get("kind")
    selected = data.get("selected")
    return Dialog(kind=kind if isinstance(kind, str) else "permission",  # type: ignore[arg-type]
                  question=str(data.get("question") or ""), options=tuple(options),
                  selected=selected if isinstance(selected, int) else None,
                  cut=bool(data.get("cut")))


def view_from_json(data: Any, host: str) -> SessionView:
    """A SESSION object from ``host`` as a view on this board, named ``HOST:SLUG``."""
    if not isinstance(data, dict):
        raise BadEvent("a session is not a JSON object")
    try:
        state = st.State(_field(data, "state", str))
    except ValueError:
        raise BadEvent(f"a session's state {data.get('state')!r} is unknown") from None
    pid = data.get("pid")
    session_id = data.get("claude_session_id")
    usage = data.get("usage")
    slug = _field(data, "slug", str)
    if ":" in slug:
        raise BadEvent(f"a session's slug {slug!r} names a host; a host's own sessions are "
                       "bare")
    return SessionView(
        slug=f"{host}:{slug}", path=_field(data, "path", str), state=state,
        reason=_field(data, "reason", str), since=float(_field(data, "since", (int, float))),
        pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
        claude_session_id=session_id if isinstance(session_id, str) else None,
        tmux=str(data.get("tmux") or ""), pane_id=str(data.get("pane_id") or ""),
        adopted=bool(data.get("adopted")), dialog=dialog_from_json(data.get("dialog")),
        usage=usage if isinstance(usage, dict) else {}, host=host)


def request(kind: str, ident: int | str | None = None, **fields: Any) -> str:
    """A client message (the host client's requests), checked as a server would."""
    message: dict[str, Any] = {"type": kind, **fields}
    if ident is not None:
        message["id"] = ident
    text = dump(message)
    parse_request(text)  # never send what a server must refuse
    return text
