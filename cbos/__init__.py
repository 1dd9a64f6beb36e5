"""cbos: a tmux-native control room for many interactive Claude Code sessions."""

# The single source of the version: hatchling reads it from here (pyproject's
# [tool.hatch.version]), and reading it needs no importlib.metadata at start-up, which
# `cbos status` (run by tmux every status interval) cannot afford.
__version__ = "0.1.0"
