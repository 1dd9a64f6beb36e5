"""cbos.watch on real files and real inotify: one file followed by its path."""

from __future__ import annotations

import os
import select
from collections.abc import Iterator
from pathlib import Path

import pytest

from cbos.watch import Follow, Piece, Seen, Watch
from tests.support import wait_until


@pytest.fixture
def watch() -> Iterator[Watch]:
    with Watch() as w:
        yield w


def readable(watch: Watch) -> bool:
    return bool(select.select([watch], [], [], 0)[0])


def follow_all(follow: Follow, watch: Watch) -> list[Piece]:
    """What one owner's wake-up does: note inode events, check the path, read."""
    for change in watch.changes():
        if isinstance(change.key, tuple):
            follow.note(change, change.key[1])
    follow.check_path()
    pieces, _, _ = follow.read(1 << 20)
    return pieces


def data(pieces: list[Piece]) -> bytes:
    return b"".join(p.data for p in pieces)


def test_a_file_is_followed_across_truncation_rotation_and_recreation(
        tmp_path: Path, watch: Watch) -> None:
    path = tmp_path / "f.log"
    path.write_bytes(b"before\n")
    assert watch.directory(tmp_path, "dir") is not None
    follow = Follow(path, watch, "f")
    assert follow.open(at_end=True) is not None
    with open(path, "ab") as f:
        f.write(b"one\n")
    wait_until(lambda: readable(watch), message="a write wakes the watch")
    assert data(follow_all(follow, watch)) == b"one\n"

    path.write_bytes(b"")  # truncated: read again from 0
    with open(path, "ab") as f:
        f.write(b"two\n")
    pieces = follow_all(follow, watch)
    assert [p.truncated for p in pieces][:1] == [True] and data(pieces) == b"two\n"

    with open(path, "ab") as writer:  # rotated: a writer still holds the old inode
        os.rename(path, tmp_path / "f.log.1")
        path.write_bytes(b"new file\n")
        writer.write(b"late\n")
        writer.flush()
        # One writer's bytes stay in order: the new file waits for the old one to be done.
        assert data(follow_all(follow, watch)) == b"late\n"
    seen: list[Piece] = []
    wait_until(lambda: seen.extend(follow_all(follow, watch)) or
               data(seen) == b"new file\n", message="the writer's close ends the old inode")
    assert [p.ended for p in seen][:1] == [True] and len(follow.inodes) == 1
    # The old inode's watch went with it: that is not the directory going away.
    assert not [c for c in watch.changes() if c.gone]

    path.unlink()  # re-created
    assert follow.check_path() is Seen.GONE
    path.write_bytes(b"again\n")
    wait_until(lambda: b"again\n" in data(follow_all(follow, watch)),
               message="the re-created file is read from its start")
    follow.close()
