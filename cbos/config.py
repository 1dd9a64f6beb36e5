"""Configuration: environment variables, the config files, XDG paths and defaults.

Precedence, highest first: command-line flags (applied by the CLI), the environment,
``$XDG_CONFIG_HOME/cbos/config.toml``, the older ``~/.cbos/.env``, then defaults. A bad
value stops cbos with one line naming the variable, or the file and line, never a traceback.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cbos.errors import ConfigError

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A [[hosts]] name: it is shown, typed before ":" in HOST:SLUG, and never reaches a shell.
HOST_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
# What ssh is told to connect to: user@host, a ~/.ssh/config alias, ssh://user@host:port.
# No option (a leading "-"), no space, quote, or shell or control character.
SSH_DESTINATION_RE = re.compile(r"^[A-Za-z0-9_@\[\]][A-Za-z0-9_.@:/%\[\]+=-]{0,253}$")


@dataclass(frozen=True)
class HostConfig:
    """Another machine: ``ssh`` reaches it, ``command`` is its cbos (see cbos.hosts)."""

    name: str
    ssh: str
    command: str = "cbos"


def check_host_name(name: str) -> str:
    if not HOST_NAME_RE.match(name):
        raise ValueError(f"host name {name!r} is not valid: use 1 to 32 letters, digits, "
                         "'.', '_' or '-', starting with a letter or digit")
    return name


def check_destination(ssh: str) -> str:
    if not SSH_DESTINATION_RE.match(ssh):
        raise ValueError(f"ssh destination {ssh!r} is not valid: give what you would type "
                         "after `ssh` (user@host, an alias from ~/.ssh/config, or "
                         "ssh://user@host:port), with no option, space or quote; options "
                         "belong in ~/.ssh/config")
    return ssh


def _hosts(value: Any, where: str) -> tuple[HostConfig, ...]:
    """``[[hosts]]`` tables, each checked; a mistake names the file, line and host."""
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{where}: hosts must be [[hosts]] tables with name, ssh and "
                          "command")
    found: list[HostConfig] = []
    for number, table in enumerate(value, 1):
        label = f"{where}: [[hosts]] #{number}"
        unknown = sorted(set(table) - {"name", "ssh", "command"})
        if unknown:
            raise ConfigError(f"{label}: unknown key {unknown[0]!r}; a host has name, ssh "
                              "and command")
        for key in ("name", "ssh"):
            if not isinstance(table.get(key), str):
                raise ConfigError(f"{label}: {key} is missing (a string)")
        command = table.get("command", "cbos")
        if not isinstance(command, str) or not command.strip():
            raise ConfigError(f"{label}: command must be the remote cbos command line, "
                              'e.g. "cbos" or "~/.local/bin/cbos"')
        if any(ord(c) < 32 or ord(c) == 127 for c in command):
            raise ConfigError(f"{label}: command has a control character")
        try:
            host = HostConfig(check_host_name(table["name"]), check_destination(table["ssh"]),
                              command.strip())
        except ValueError as exc:
            raise ConfigError(f"{label}: {exc}") from None
        if any(h.name == host.name for h in found):
            raise ConfigError(f"{label}: a second host named {host.name!r}; names must "
                              "differ")
        found.append(host)
    return tuple(found)


def _text(value: str) -> str:
    if not value.strip():
        raise ValueError("is empty")
    return value


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise ValueError("is not a port number; use a number from 0 to 65535") from None
    if not 0 <= port <= 65535:
        raise ValueError("is out of range; use a port number from 0 to 65535")
    return port


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError("is not a whole number") from None
    if number <= 0:
        raise ValueError("must be greater than 0")
    return number


def _non_negative_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError("is not a number") from None
    if number < 0 or number != number:
        raise ValueError("must be 0 or more")
    return number


def _log_level(value: str) -> str:
    level = value.strip().upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"is not a log level; use one of {', '.join(LOG_LEVELS)}")
    return level


def parse_env_pairs(value: str) -> dict[str, str]:
    """Parse ``CBOS_CLAUDE_ENV_VARS``: space-separated ``K=V`` pairs, shell quoting allowed."""
    try:
        words = shlex.split(value)
    except ValueError as exc:
        raise ValueError(f"cannot be split into K=V pairs ({exc})") from None
    pairs: dict[str, str] = {}
    for word in words:
        name, sep, val = word.partition("=")
        if not sep or not ENV_NAME_RE.match(name):
            raise ValueError(f"has {word!r}, which is not a K=V pair with a valid name")
        pairs[name] = val
    return pairs


def _path(value: str) -> Path:
    if not value.strip():
        raise ValueError("is empty")
    return Path(os.path.expanduser(value))


@dataclass(frozen=True)
class Setting:
    """One configurable value: its environment names, its config-file key and its parser."""

    field: str
    env: tuple[str, ...]
    parse: Callable[[str], Any]
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("claude_command", ("CBOS_CLAUDE_COMMAND",), _text, "command that starts claude"),
    Setting("claude_env", ("CBOS_CLAUDE_ENV_VARS",), parse_env_pairs,
            "K=V pairs added to claude's environment"),
    Setting("api_host", ("CBOS_API_HOST",), _text, "WebSocket bind address"),
    Setting("api_port", ("CBOS_API_PORT",), _port, "WebSocket port"),
    Setting("stream_dir", ("CBOS_STREAM_DIR", "CBOS_STREAM_STREAM_DIR"), _path,
            "directory of the pane logs"),
    Setting("events_dir", ("CBOS_EVENTS_DIR",), _path, "directory of the hook events file"),
    Setting("max_buffer_size", ("CBOS_STREAM_MAX_BUFFER_SIZE",), _positive_int,
            "bytes of output kept in memory per session"),
    Setting("log_max_bytes", ("CBOS_LOG_MAX_BYTES",), _positive_int,
            "cap of each pane log on disk before rotation"),
    Setting("log_level", ("CBOS_LOG_LEVEL",), _log_level, "level of cbos's own log"),
    Setting("tmux_socket", ("CBOS_TMUX_SOCKET",), _text, "tmux socket name (as tmux -L)"),
    Setting("history_limit", ("CBOS_HISTORY_LIMIT",), _positive_int,
            "tmux scrollback lines of new sessions"),
    Setting("stall_seconds", ("CBOS_STALL_SECONDS",), _non_negative_float,
            "seconds of silence before a working session is called stalled"),
)
_BY_KEY = {s.env[0].removeprefix("CBOS_").lower(): s for s in SETTINGS}
_BY_ENV = {name: s for s in SETTINGS for name in s.env}


@dataclass(frozen=True)
class Config:
    """Everything cbos reads from its environment, resolved once at start-up."""

    state_dir: Path
    config_dir: Path
    stream_dir: Path
    events_dir: Path
    claude_command: str = "claude"
    claude_env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    api_host: str = "127.0.0.1"
    api_port: int = 32205
    max_buffer_size: int = 100_000
    log_max_bytes: int = 20 * 1024 * 1024
    log_level: str = "INFO"
    tmux_socket: str | None = None
    history_limit: int = 50_000
    stall_seconds: float = 600.0
    hosts: tuple[HostConfig, ...] = ()  # [[hosts]] in config.toml

    def host(self, name: str) -> HostConfig | None:
        return next((h for h in self.hosts if h.name == name), None)

    @property
    def events_file(self) -> Path:
        return self.events_dir / "events.jsonl"

    @property
    def own_log(self) -> Path:
        return self.state_dir / "cbos.log"

    @property
    def token_file(self) -> Path:
        return self.state_dir / "token"

    @property
    def sessions_file(self) -> Path:
        """Where cbos remembers each session's path and Claude session id."""
        return self.state_dir / "sessions.json"

    def log_path(self, slug: str) -> Path:
        return self.stream_dir / f"{slug}.log"

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


def _xdg(environ: Mapping[str, str], name: str, fallback: str) -> Path:
    value = environ.get(name, "")
    # The XDG spec says relative values are invalid and must be ignored.
    if value and os.path.isabs(value):
        return Path(value)
    return Path(environ.get("HOME") or os.path.expanduser("~")) / fallback


def _line_of(text: str, key: str) -> int:
    """Best-effort line number of a top-level key in TOML text (tomllib gives none)."""
    pattern = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
    for number, line in enumerate(text.splitlines(), 1):
        if pattern.match(line):
            return number
    return 1


def read_toml(path: Path) -> dict[str, tuple[Any, str]]:
    """Read config.toml into ``{field: (raw value, "file:line")}`` (``hosts``: the
    checked [[hosts]] tables)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it ({exc}); fix or remove the file") from None
    import tomllib  # here: most starts (the status line's) have no file to parse

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    found: dict[str, tuple[Any, str]] = {}
    for key, value in data.items():
        where = f"{path}:{_line_of(text, key)}"
        if key == "hosts":
            found["hosts"] = (_hosts(value, f"{path}:{_line_of_table(text)}"), str(path))
            continue
        setting = _BY_KEY.get(key)
        if setting is None:
            known = ", ".join(sorted([*_BY_KEY, "[[hosts]]"]))
            raise ConfigError(f"{where}: unknown key {key!r}; known keys: {known}")
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ConfigError(f"{where}: {key} must be a string or a number")
        found[setting.field] = (str(value), where)
    return found


def _line_of_table(text: str) -> int:
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip().startswith("[[hosts]]"):
            return number
    return 1


def read_dotenv(path: Path) -> dict[str, tuple[str, str]]:
    """Read the older ``~/.cbos/.env`` (``KEY=VALUE`` lines) into ``{field: (raw, where)}``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it ({exc}); fix or remove the file") from None
    found: dict[str, tuple[str, str]] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}:{number}"
        name, sep, value = line.removeprefix("export ").partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name:
            raise ConfigError(f"{where}: expected KEY=VALUE, got {raw.strip()!r}")
        setting = _BY_ENV.get(name)
        if setting is None:
            raise ConfigError(f"{where}: unknown key {name!r}; cbos keys start with CBOS_, "
                              "see `man cbos` for the list")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        found[setting.field] = (value, where)
    return found


def load(environ: Mapping[str, str] | None = None) -> Config:
    """Resolve the configuration from ``environ`` (default ``os.environ``) and the files."""
    env = os.environ if environ is None else environ
    home = Path(env.get("HOME") or os.path.expanduser("~"))
    state_dir = _xdg(env, "XDG_STATE_HOME", ".local/state") / "cbos"
    config_dir = _xdg(env, "XDG_CONFIG_HOME", ".config") / "cbos"

    raw: dict[str, tuple[Any, str]] = {}
    raw.update(read_dotenv(home / ".cbos" / ".env"))
    raw.update(read_toml(config_dir / "config.toml"))
    hosts: tuple[HostConfig, ...] = raw.pop("hosts", ((), ""))[0]
    for setting in SETTINGS:
        # The first name is current; later ones are older spellings still honoured.
        for name in setting.env:
            if name in env:
                raw[setting.field] = (env[name], name)
                break

    values: dict[str, Any] = {}
    for setting in SETTINGS:
        if setting.field not in raw:
            continue
        text, where = raw[setting.field]
        try:
            values[setting.field] = setting.parse(text)
        except ValueError as exc:
            raise ConfigError(f"{where}: {setting.env[0]}={text!r} {exc}") from None

    values["hosts"] = hosts
    values.setdefault("stream_dir", state_dir / "logs")
    values.setdefault("events_dir", state_dir)
    return Config(state_dir=state_dir, config_dir=config_dir, **values)


def ensure_dirs(config: Config) -> None:
    """Create cbos's directories private to the user (0700)."""
    for directory in (config.state_dir, config.stream_dir, config.events_dir):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)


def touch_private(path: Path) -> None:
    """Create ``path`` as an empty 0600 file if missing (appenders then keep the mode)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.close(fd)
