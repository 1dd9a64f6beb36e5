"""Configuration: names, precedence, files, and one-line errors with exit status 2."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

from cbos import config
from cbos.cli import main
from cbos.errors import ConfigError


def test_defaults_follow_xdg(private_home: Path) -> None:
    cfg = config.load()
    assert cfg.claude_command == "claude"
    assert cfg.api_host == "127.0.0.1"
    assert cfg.api_port == 32205
    assert cfg.max_buffer_size == 100_000
    assert cfg.log_level == "INFO"
    assert cfg.tmux_socket is None
    assert cfg.state_dir == private_home / ".local/state/cbos"
    assert cfg.stream_dir == cfg.state_dir / "logs"
    assert cfg.events_file == cfg.state_dir / "events.jsonl"


def test_environment_names(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CBOS_CLAUDE_COMMAND", "claude --model opus")
    monkeypatch.setenv("CBOS_CLAUDE_ENV_VARS", "MAX_THINKING_TOKENS=32000 A='b c'")
    monkeypatch.setenv("CBOS_API_HOST", "::1")
    monkeypatch.setenv("CBOS_API_PORT", "4000")
    monkeypatch.setenv("CBOS_STREAM_DIR", str(tmp_path / "s"))
    monkeypatch.setenv("CBOS_EVENTS_DIR", str(tmp_path / "e"))
    monkeypatch.setenv("CBOS_STREAM_MAX_BUFFER_SIZE", "5000")
    monkeypatch.setenv("CBOS_LOG_LEVEL", "debug")
    monkeypatch.setenv("CBOS_TMUX_SOCKET", "work")
    cfg = config.load()
    assert cfg.claude_command == "claude --model opus"
    assert dict(cfg.claude_env) == {"MAX_THINKING_TOKENS": "32000", "A": "b c"}
    assert (cfg.api_host, cfg.api_port) == ("::1", 4000)
    assert cfg.stream_dir == tmp_path / "s"
    assert cfg.events_file == tmp_path / "e" / "events.jsonl"
    assert cfg.max_buffer_size == 5000
    assert cfg.log_level == "DEBUG"
    assert cfg.tmux_socket == "work"


def test_older_stream_dir_name_is_accepted(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    monkeypatch.setenv("CBOS_STREAM_STREAM_DIR", str(tmp_path / "old"))
    assert config.load().stream_dir == tmp_path / "old"
    monkeypatch.setenv("CBOS_STREAM_DIR", str(tmp_path / "new"))
    assert config.load().stream_dir == tmp_path / "new"


def test_files_and_precedence(private_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dotenv = private_home / ".cbos" / ".env"
    dotenv.parent.mkdir()
    dotenv.write_text("# old style\nCBOS_API_PORT=1111\nexport CBOS_API_HOST='::1'\n"
                      "CBOS_LOG_LEVEL=ERROR\n")
    toml = private_home / ".config" / "cbos" / "config.toml"
    toml.parent.mkdir(parents=True)
    toml.write_text('api_port = 2222\nclaude_command = "my-claude"\n')
    cfg = config.load()
    assert cfg.api_port == 2222  # toml beats .env
    assert cfg.api_host == "::1"  # .env still applies where toml is silent
    assert cfg.claude_command == "my-claude"
    assert cfg.log_level == "ERROR"
    monkeypatch.setenv("CBOS_API_PORT", "3333")
    assert config.load().api_port == 3333  # environment beats both files


class Bad(NamedTuple):
    env: dict[str, str]
    toml: str | None
    dotenv: str | None
    expect: str


BAD = [
    Bad({"CBOS_API_PORT": "http"}, None, None, "CBOS_API_PORT: CBOS_API_PORT='http' is not a port"),
    Bad({"CBOS_API_PORT": "70000"}, None, None, "out of range"),
    Bad({"CBOS_STREAM_MAX_BUFFER_SIZE": "-1"}, None, None, "greater than 0"),
    Bad({"CBOS_LOG_LEVEL": "LOUD"}, None, None, "not a log level"),
    Bad({"CBOS_CLAUDE_ENV_VARS": "NOEQUALS"}, None, None, "not a K=V pair"),
    Bad({}, "api_port = 1\nnonsense = 3\n", None, "config.toml:2: unknown key 'nonsense'"),
    Bad({}, "api_port = [\n", None, "config.toml: not valid TOML"),
    Bad({}, 'api_port = "x"\n', None, "config.toml:1: CBOS_API_PORT='x' is not a port"),
    Bad({}, None, "CBOS_API_PORT=1\nCBOS_NOPE=2\n", ".env:2: unknown key 'CBOS_NOPE'"),
    Bad({}, None, "just words\n", ".env:1: expected KEY=VALUE"),
]


@pytest.mark.parametrize("case", BAD, ids=[b.expect[:30] for b in BAD])
def test_bad_values_are_one_clear_line(case: Bad, private_home: Path,
                                       monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    if case.toml is not None:
        path = private_home / ".config" / "cbos" / "config.toml"
        path.parent.mkdir(parents=True)
        path.write_text(case.toml)
    if case.dotenv is not None:
        path = private_home / ".cbos" / ".env"
        path.parent.mkdir()
        path.write_text(case.dotenv)
    with pytest.raises(ConfigError) as info:
        config.load()
    assert case.expect in str(info.value)
    assert main(["ls"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cbos: ")
    assert case.expect in err


def test_bad_value_from_the_real_command_has_no_traceback(private_home: Path) -> None:
    env = {**os.environ, "CBOS_API_PORT": "nope"}
    proc = subprocess.run([sys.executable, "-m", "cbos", "ls"], env=env,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("cbos: CBOS_API_PORT")


def test_relative_xdg_values_are_ignored(monkeypatch: pytest.MonkeyPatch,
                                         private_home: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", "relative/dir")
    assert config.load().state_dir == private_home / ".local/state/cbos"


def test_directories_0700_and_files_0600(config: config.Config) -> None:
    config_mod = config
    from cbos import config as mod

    mod.ensure_dirs(config_mod)
    for directory in (config_mod.state_dir, config_mod.stream_dir):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    log = config_mod.log_path("AUTH")
    mod.touch_private(log)
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


@pytest.mark.parametrize(("words", "ours", "claudes"), [
    (["new", ".", "--", "--model", "x"], ["new", "."], ["--model", "x"]),
    (["--port", "9000", "new", ".", "--", "--model", "x"],
     ["--port", "9000", "new", "."], ["--model", "x"]),
    (["-L", "sock", "--host", "127.0.0.2", "--allow-origin", "http://a", "new", "--slug", "S",
      "--", "-p"], ["-L", "sock", "--host", "127.0.0.2", "--allow-origin", "http://a", "new",
                    "--slug", "S"], ["-p"]),
    (["--port=9000", "new", ".", "--", "x"], ["--port=9000", "new", "."], ["x"]),
    (["send", "A", "--", "-x"], ["send", "A", "--", "-x"], []),
])
def test_words_after_a_double_dash_go_to_claude_whatever_options_come_first(
        words: list[str], ours: list[str], claudes: list[str]) -> None:
    from cbos.cli import build_parser, split_claude_args

    parser = build_parser()
    assert split_claude_args(parser, words) == (ours, claudes)
    if claudes:
        parser.parse_args(ours)  # what is left is cbos's own and parses
