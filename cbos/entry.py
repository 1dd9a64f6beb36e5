"""The `cbos` command's entry point: `cbos status` first, everything else through the CLI.

tmux runs `cbos status` every status interval, so that one command must not pay for
argparse, logging and the rest of the CLI's imports (~10 ms of a 60 ms budget).
"""

import sys


def status_words(words: list[str]) -> tuple[bool, str | None]:
    """(is this `cbos [-L NAME] status`?, the socket name given)."""
    if words == ["status"]:
        return True, None
    if len(words) == 3 and words[0] in ("-L", "--socket-name") and words[2] == "status":
        return True, words[1]
    return False, None


def main() -> int:
    words = sys.argv[1:]
    fast, socket = status_words(words)
    if fast:
        from cbos.errors import CbosError

        try:
            from cbos import config as config_mod
            from cbos import statusline

            config = config_mod.load()
            if socket:
                config = config.replace(tmux_socket=socket)
            text = statusline.line(config)
        except CbosError as exc:
            print(f"cbos: {exc}", file=sys.stderr)
            return exc.exit_code
        if text:
            print(text)
        return 0
    from cbos.cli import main as cli_main

    return cli_main(words)
