"""Finding projects: directories that hold a CLAUDE.md, for `cbos projects` and the picker."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cbos.sessions import default_slug

DEFAULT_DEPTH = 4
# Directories that never hold a project of their own and can be huge.
SKIP = frozenset({
    ".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv", "venv", ".tox", ".nox",
    ".mypy_cache", ".ruff_cache", ".pytest_cache", ".cache", ".npm", ".cargo", ".rustup",
    "site-packages", "dist", "build", "target", ".local", ".Trash", "Library",
})


@dataclass(frozen=True)
class Project:
    path: Path
    slug: str


def _is_virtualenv(entry: os.DirEntry[str]) -> bool:
    return os.path.exists(os.path.join(entry.path, "pyvenv.cfg"))


def find(roots: Iterable[Path], max_depth: int = DEFAULT_DEPTH) -> Iterator[Project]:
    """Walk each root breadth-first to ``max_depth``, yielding dirs with a CLAUDE.md.

    ``os.scandir`` gives the entry types without a stat per file; hidden directories,
    dependency trees and virtualenvs are skipped, which is what keeps a large home fast.
    Unreadable directories are passed over silently.
    """
    seen: set[tuple[int, int]] = set()
    for root in roots:
        level: list[Path] = [root]
        for depth in range(max_depth + 1):
            next_level: list[Path] = []
            for directory in level:
                try:
                    st = directory.stat()
                    if (st.st_dev, st.st_ino) in seen:
                        continue
                    seen.add((st.st_dev, st.st_ino))
                    entries = sorted(os.scandir(directory), key=lambda e: e.name)
                except OSError:
                    continue
                if any(e.name == "CLAUDE.md" and e.is_file() for e in entries):
                    yield Project(directory, default_slug(directory))
                if depth == max_depth:
                    continue
                for entry in entries:
                    if (entry.name.startswith(".") or entry.name in SKIP
                            or not entry.is_dir(follow_symlinks=False)
                            or _is_virtualenv(entry)):
                        continue
                    next_level.append(Path(entry.path))
            level = next_level
