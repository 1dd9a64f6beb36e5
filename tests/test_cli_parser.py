"""The parser is built for the words at hand: each group's COMMANDS says what it adds."""

from __future__ import annotations

import argparse

import pytest

from cbos import cli
from cbos.cli.context import Parser


def subcommands(parser: argparse.ArgumentParser) -> list[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices)
    return []


@pytest.mark.parametrize("group", cli.GROUPS, ids=lambda g: g.__name__)
def test_each_groups_commands_are_what_it_registers(group: object) -> None:
    parser = Parser(prog="cbos")
    sub = parser.add_subparsers(parser_class=Parser)
    group.register(sub)  # type: ignore[attr-defined]
    assert list(sub.choices) == list(group.COMMANDS)  # type: ignore[attr-defined]


def test_a_command_builds_only_its_group_and_parses_as_the_whole_parser_does() -> None:
    every = subcommands(cli.build_parser())
    assert every == [c for group in cli.GROUPS for c in group.COMMANDS]
    assert len(set(every)) == len(every)
    words = ["--port", "9000", "ls", "--json"]
    narrow = cli.parser_for(words)
    assert subcommands(narrow) == list(cli.sessions.COMMANDS)
    mine, whole = narrow.parse_args(words), cli.build_parser().parse_args(words)
    assert vars(mine) == vars(whole)


def test_help_and_typos_get_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert subcommands(cli.parser_for(["--help"])) == subcommands(cli.build_parser())
    assert subcommands(cli.parser_for(["lss"])) == subcommands(cli.build_parser())
    assert cli.main(["lss"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'lss'" in err and "'hosts'" in err and "'chat'" in err


def test_no_command_is_the_tui_and_needs_no_subcommand() -> None:
    parser = cli.parser_for(["-L", "mysock", "--ws"])
    assert subcommands(parser) == []
    args = parser.parse_args(["-L", "mysock", "--ws"])
    assert args.handler is cli.serve.run_tui and args.socket_name == "mysock" and args.ws
