"""Benchmarks: scripts that print figures and ratios against a baseline run in the same
process. Run one with ``python -m bench.NAME``."""

import compileall
from pathlib import Path


def compile_cbos() -> None:
    """Compile cbos's bytecode, as installing its wheel does.

    A start-up benchmark run from an editable install under PYTHONDONTWRITEBYTECODE=1
    (set on these machines) would otherwise re-compile every cbos module on every start
    while the floor's libraries load from their installed .pyc files.
    """
    compileall.compile_dir(Path(__file__).resolve().parents[1] / "cbos", quiet=1)
