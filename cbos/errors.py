"""The one error family cbos raises on purpose.

Every message is a single line that says what is wrong and what to do; the CLI prints it
as ``cbos: MESSAGE`` and exits with ``exit_code``, never with a traceback.
"""


class CbosError(Exception):
    """Something cbos could not do; the message is meant for a person."""

    exit_code = 1


class UsageError(CbosError):
    """The input was wrong (an argument, a name, a value): fix it and run again."""

    exit_code = 2


class ConfigError(UsageError):
    """A configuration value or file is wrong; the message names the variable or file:line."""


class TmuxError(CbosError):
    """tmux is missing, too old, not running, or refused a command."""


class NotFoundError(UsageError):
    """A named session (or pane) does not exist."""


class RefusedError(CbosError):
    """The action would be unsafe now (dead pane, copy-mode, an open dialog)."""
