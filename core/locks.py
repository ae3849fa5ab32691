"""Locks: one writer per artifact across processes and threads, and a readers-writer lock.

:func:`exclusive` guards an artifact directory that is being written (a knowledge base, an index,
an export, a training run): one writer at a time, across processes (a ``filelock`` lock file
``.<name>.lock`` beside the artifact, released by the kernel if the holder dies) and across the
threads of one process. It is reentrant within a thread. A second writer waits, saying who holds
the lock, or fails at once inside :func:`waiting` ``(False)`` (the CLI's ``--no-wait``).

:class:`ReadWriteLock` lets many searches of one index run together and a writer run alone.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import LockedError

log = logging.getLogger(__name__)

_WAIT: ContextVar[bool] = ContextVar("ragloom_wait_for_locks", default=True)


@contextmanager
def waiting(wait: bool) -> Iterator[None]:
    """Within the block, a writer that finds an artifact locked waits (True) or raises
    :class:`LockedError` at once (False)."""
    token = _WAIT.set(wait)
    try:
        yield
    finally:
        _WAIT.reset(token)


def lock_file(target: Path) -> Path:
    """The lock file of the artifact at ``target``: ``.<name>.lock`` beside it."""
    return target.parent / f".{target.name}.lock"


@dataclass
class _Holding:
    """This process's hold on one artifact: a thread lock, its depth, the file lock."""

    thread_lock: threading.RLock = field(default_factory=threading.RLock)
    depth: int = 0
    file_lock: Any = None


_holdings: dict[str, _Holding] = {}
_holdings_guard = threading.Lock()


@contextmanager
def exclusive(target: Path) -> Iterator[None]:
    """Hold the write lock of the artifact at ``target`` for the block (see the module
    docstring)."""
    key = os.path.abspath(target)
    with _holdings_guard:
        holding = _holdings.setdefault(key, _Holding())
    if not holding.thread_lock.acquire(blocking=False):
        _refuse_or_announce(Path(key), "another thread of this process")
        holding.thread_lock.acquire()
    try:
        if holding.depth == 0:
            holding.file_lock = _acquire_file_lock(Path(key))
        holding.depth += 1
        try:
            yield
        finally:
            holding.depth -= 1
            if holding.depth == 0:
                holding.file_lock.release()
                holding.file_lock = None
    finally:
        holding.thread_lock.release()


def _acquire_file_lock(target: Path) -> Any:
    from filelock import FileLock, Timeout

    path = lock_file(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path, thread_local=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        _refuse_or_announce(target, _holder(path))
        lock.acquire()
    _record_holder(path)
    return lock


def _refuse_or_announce(target: Path, holder: str) -> None:
    if not _WAIT.get():
        raise LockedError(
            f"{target} is being written by {holder}. Wait for it to finish, or run again "
            f"without --no-wait to wait for it."
        )
    log.warning("waiting for %s: it is being written by %s", target, holder)


def _record_holder(path: Path) -> None:
    """Write who holds the lock into the lock file, for a waiting writer's message."""
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join(["ragloom", *sys.argv[1:]]) if sys.argv else "python",
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(holder))
    except OSError:
        pass  # the message of a waiting writer is then less precise; the lock still holds


def _holder(path: Path) -> str:
    """Who holds the lock at ``path``, as recorded by :func:`_record_holder`."""
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
        return (
            f"another process (pid {holder['pid']} on {holder['host']}, `{holder['command']}`, "
            f"since {holder['since']})"
        )
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


class ReadWriteLock:
    """Readers share the lock; a writer waits for them and excludes everyone (writers first)."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0

    @contextmanager
    def reading(self) -> Iterator[None]:
        with self._condition:
            while self._writer or self._waiting_writers:
                self._condition.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._condition:
                self._readers -= 1
                if not self._readers:
                    self._condition.notify_all()

    @contextmanager
    def writing(self) -> Iterator[None]:
        with self._condition:
            self._waiting_writers += 1
            while self._writer or self._readers:
                self._condition.wait()
            self._waiting_writers -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._condition:
                self._writer = False
                self._condition.notify_all()
