"""Atomic writes: a reader sees the old content or the new, never half of either.

Files are written to a temporary name in the same directory, flushed to disk, then renamed over
the target. Directories are filled under a temporary name and renamed into place; an existing
directory is first moved aside, and :func:`recover_directory` puts it back if a crash happened
between the two renames.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_ASIDE = ".replaced-"


def _fsync_path(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_bytes(path: Path, data: bytes) -> None:
    """Replace the file at ``path`` with ``data`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_path(path.parent)


def write_text(path: Path, text: str) -> None:
    """Replace the file at ``path`` with ``text`` (UTF-8) atomically."""
    write_bytes(path, text.encode("utf-8"))


def recover_directory(target: Path) -> None:
    """Put back a directory that a crash left moved aside by :func:`directory`."""
    if target.exists():
        return
    asides = sorted(target.parent.glob(f".{target.name}{_ASIDE}*"))
    if asides:
        os.rename(asides[-1], target)


def replace_directory(source: Path, target: Path) -> None:
    """Flush ``source`` to disk and rename it to ``target`` (same file system), replacing it."""
    recover_directory(target)
    for root, _, files in os.walk(source):
        for name in files:
            _fsync_path(Path(root) / name)
        _fsync_path(Path(root))
    if target.exists():
        aside = target.with_name(f".{target.name}{_ASIDE}{uuid.uuid4().hex}")
        os.rename(target, aside)
        os.rename(source, target)
        shutil.rmtree(aside)
    else:
        os.rename(source, target)
    _fsync_path(target.parent)


@contextmanager
def directory(target: Path) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces ``target`` when the block succeeds.

    If the block raises, or the process dies, ``target`` is left as it was.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield temporary
        replace_directory(temporary, target)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
