"""cbos.waiting: `cbos wait` and the wake-ups it shares with chat, on real files."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from cbos import events
from cbos.config import Config, ensure_dirs
from cbos.tmux import Tmux
from tests.support import Cli


def test_wait_reads_the_events_backlog_once(
        cli: Cli, tmux: Tmux, config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    ensure_dirs(config)
    record = {"ts": 1.0, "cbos_session": "X", "tmux_pane": "%1", "claude_pid": "1",
              "payload": {"hook_event_name": "Stop", "session_id": "s"}}
    config.events_file.write_text(json.dumps(record) + "\n")
    reads: list[Any] = []
    real: Callable[..., Any] = events._tail_lines

    def counted(*args: Any) -> Any:
        reads.append(args)
        return real(*args)

    monkeypatch.setattr(events, "_tail_lines", counted)
    result = cli("wait", "NOPE", "--timeout", "0")
    assert result.code != 0 and "no session named 'NOPE'" in result.err
    assert len(reads) == 1, "the events backlog was read more than once"
