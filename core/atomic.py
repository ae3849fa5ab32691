"""Atomic writes: a reader sees the old content or the new, never half of either.

Files are written to a temporary name in the same directory, flushed to disk, then renamed over
the target. Directories are filled under a temporary name (``.<name>.tmp-*``) and renamed into
place while the writer holds the target's lock (:func:`ragloom.locks.exclusive`); an existing
directory is first moved aside (``.<name>.replaced-<time>``), and :func:`recover_directory` puts
the newest aside back if a crash happened between the two renames. A directory is only ever
replaced when :func:`ragloom.artifacts.claim` recognizes it as ragloom's own of the same kind.
What a dead writer left (temporary directories, asides) is reclaimed by the next writer.

Everything is created with the permissions the umask allows, as ``open`` and ``mkdir`` would.
A write that fails for lack of space or a file-size limit raises :class:`WriteError`.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from . import locks
from .artifacts import Kind, absolute, claim
from .errors import WriteError

_ASIDE = ".replaced-"
_STAGING = ".tmp-"
NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)

_umask_guard = threading.Lock()


def current_umask() -> int:
    """The process's umask (read from /proc where it can be, without changing it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    with _umask_guard:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _permit(path: Path, directory: bool) -> None:
    """Give ``path`` the permissions a plain ``open``/``mkdir`` would under the umask
    (``tempfile`` creates 0600 files and 0700 directories)."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


def _fsync_path(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def raise_if_out_of_space(error: BaseException, target: Path) -> None:
    """Raise ``error`` as a :class:`WriteError` about ``target`` when it is a full disk, a quota
    or a file-size limit; return otherwise (the caller re-raises ``error`` unchanged)."""
    if isinstance(error, OSError) and _out_of_space(error):
        reason = error.strerror or str(error)
    elif isinstance(error, RuntimeError) and _native_write_failure(error, target):
        reason = str(error).strip().splitlines()[-1]
    else:
        return
    try:
        free = f"; {byte_size(shutil.disk_usage(_existing_parent(target)).free)} free there"
    except OSError:
        free = ""
    raise WriteError(
        f"could not write {target}: {reason}{free}. The disk is full or a size limit is set "
        f"(quota, `ulimit -f`). Nothing was replaced; free some space (or choose another output "
        f"path) and run the command again: it resumes or starts over cleanly."
    ) from None


def _out_of_space(error: OSError) -> bool:
    """Whether ``error`` is a full disk, a quota or a size limit (pyarrow's IO errors carry the
    errno only in their text)."""
    if error.errno in NO_SPACE:
        return True
    return error.errno is None and any(os.strerror(code) in str(error) for code in NO_SPACE)


def _native_write_failure(error: RuntimeError, target: Path) -> bool:
    """Whether a native writer's RuntimeError (faiss, torch) is a failed write for want of
    space: it says so, and the disk is nearly full or a file-size limit is set."""
    import resource

    if "writ" not in str(error).lower():
        return False
    limited = resource.getrlimit(resource.RLIMIT_FSIZE)[0] != resource.RLIM_INFINITY
    try:
        nearly_full = shutil.disk_usage(_existing_parent(target)).free < 64 * 2**20
    except OSError:
        nearly_full = False
    return limited or nearly_full


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def ensure_free_space(directory: Path, needed: int, what: str) -> None:
    """Refuse to start a write of ``needed`` bytes into ``directory`` without room for it."""
    free = shutil.disk_usage(_existing_parent(directory)).free
    if needed > free:
        raise WriteError(
            f"{what} needs {byte_size(needed)} but it has {byte_size(free)} free there. Free "
            f"some space or choose an output path on another disk."
        )


def byte_size(count: float) -> str:
    """``count`` bytes for a person: ``512 B``, ``3.4 MiB``, ``1.20 GiB``."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= scale:
            return f"{count / scale:.{2 if unit == 'GiB' else 1}f} {unit}"
    return f"{int(count)} B"


def reserve(path: Path, size: int) -> None:
    """Allocate ``size`` bytes for the file at ``path`` now, so that a full disk is an error
    here rather than a SIGBUS when a memory map writes into a hole later."""
    descriptor = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(descriptor, 0, size)
    except OSError as error:
        raise_if_out_of_space(error, path)
        raise
    finally:
        os.close(descriptor)


def write_bytes(path: Path, data: bytes) -> None:
    """Replace the file at ``path`` with ``data`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.ragloom-tmp-", dir=path.parent)
    try:
        _permit(Path(temporary), directory=False)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        raise_if_out_of_space(error, path)
        raise
    _fsync_path(path.parent)


def write_text(path: Path, text: str) -> None:
    """Replace the file at ``path`` with ``text`` (UTF-8) atomically."""
    write_bytes(path, text.encode("utf-8"))


def _asides(target: Path) -> list[Path]:
    """The directories moved aside from ``target``, oldest first (their names sort by time)."""
    return sorted(target.parent.glob(f".{target.name}{_ASIDE}*"))


def recover_directory(target: Path) -> None:
    """Put back the newest directory that a crash left moved aside from ``target``."""
    if target.exists() or target.is_symlink() or not _asides(target):
        return
    with locks.exclusive(target):
        asides = _asides(target)
        if not target.exists() and asides:
            os.rename(asides[-1], target)


def _reclaim(target: Path) -> None:
    """Remove what dead writers of ``target`` left: their temporary directories and asides.
    Called with ``target``'s lock held, so no live writer owns them."""
    for leftover in [
        *target.parent.glob(f".{target.name}{_STAGING}*"),
        *(_asides(target) if target.exists() else []),
    ]:
        shutil.rmtree(leftover, ignore_errors=True)


def _flush_tree(root: Path) -> None:
    for directory, _, files in os.walk(root):
        for name in files:
            _fsync_path(Path(directory) / name)
        _fsync_path(Path(directory))


@contextmanager
def _held(target: Path, kind: Kind, root: Path | None) -> Iterator[None]:
    """``target``'s lock, taken once :func:`claim` accepts it (before the lock file is made
    beside it) and claimed again once held, after a crash's aside is put back."""
    claim(target, kind, root)
    with locks.exclusive(target):
        recover_directory(target)
        claim(target, kind, root)
        yield


def install(source: Path, target: Path, kind: Kind, root: Path | None = None) -> None:
    """Flush the finished directory ``source`` and rename it to ``target`` (same file system),
    replacing a ``target`` that :func:`~ragloom.artifacts.claim` accepts as a ``kind``."""
    target = absolute(target)
    with _held(target, kind, root):
        _flush_tree(source)
        if target.exists():
            aside = target.with_name(f".{target.name}{_ASIDE}{time.time_ns():020d}")
            os.rename(target, aside)
            os.rename(source, target)
            shutil.rmtree(aside)
        else:
            os.rename(source, target)
        _fsync_path(target.parent)


@contextmanager
def directory(target: Path, kind: Kind, root: Path | None = None) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces ``target`` when the block succeeds.

    ``target`` must be absent, empty, or a ``kind`` (checked before the block runs and again
    before the rename). If the block raises, or the process dies, ``target`` is left as it was.
    """
    target = absolute(target)
    with _held(target, kind, root):
        _reclaim(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = Path(tempfile.mkdtemp(prefix=f".{target.name}{_STAGING}", dir=target.parent))
        try:
            _permit(temporary, directory=True)
            yield temporary
            install(temporary, target, kind, root)
        except BaseException as error:
            shutil.rmtree(temporary, ignore_errors=True)
            raise_if_out_of_space(error, target)
            raise
