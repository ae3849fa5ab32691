"""What ragloom may replace: only its own artifacts, recognized by their marker files.

Every directory ragloom writes (a knowledge base, an index, an export, a training run) is of a
:class:`Kind` that names the file it always contains. Before a command replaces a path it calls
:func:`claim`: an absent path or an empty directory may be written; a directory of the same kind
may be replaced; anything else (a user's directory, a file, a symbolic link) is refused with a
message naming the path. :func:`check_outside` refuses an output that is, contains or lies
inside one of the command's inputs.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import ArtifactError


@dataclass(frozen=True)
class Kind:
    """A kind of directory ragloom writes.

    ``name`` is what a message calls it ("knowledge base"), ``marker`` the file every directory
    of the kind contains, and ``recognizes(directory)`` checks that file's content.
    """

    name: str
    marker: str
    recognizes: Callable[[Path], bool]


def json_marker(name: str, marker: str, **expected: object) -> Kind:
    """A kind recognized by a JSON object ``marker`` whose keys hold the ``expected`` values
    (a value of ``...`` only requires the key)."""

    def recognizes(directory: Path) -> bool:
        try:
            data = json.loads((directory / marker).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(data, dict) and all(
            key in data and (value is ... or data[key] == value) for key, value in expected.items()
        )

    return Kind(name, marker, recognizes)


def file_marker(name: str, marker: str) -> Kind:
    """A kind recognized by the presence of the regular file ``marker``."""
    return Kind(name, marker, lambda directory: (directory / marker).is_file())


SAVED_INDEX = file_marker("saved index", "index.json")
"""What ``Index.save`` writes: a directory holding ``index.json`` (the index's own metadata); an
index plugin saves through ``atomic.directory(directory, SAVED_INDEX)``."""


def absolute(path: Path) -> Path:
    """``path`` made absolute without resolving symbolic links (so a link stays visible)."""
    return Path(os.path.abspath(path))


def claim(target: Path, kind: Kind, root: Path | None = None) -> None:
    """Refuse to write ``target`` unless it is absent, an empty directory, or a ``kind``.

    With ``root`` (the artifact that contains ``target``, e.g. the KB of an index), no directory
    between the two may be a symbolic link: writing never follows a link out of the artifact.
    """
    target = absolute(target)
    if target.is_symlink():
        raise ArtifactError(
            f"{target} is a symbolic link (to {os.readlink(target)}); ragloom does not write "
            f"through links, so it cannot be the output. Give the real path of a new or empty "
            f"directory instead."
        )
    if root is not None:
        _check_no_link_between(absolute(root), target)
    if not target.exists():
        return
    if not target.is_dir():
        raise ArtifactError(
            f"{target} is a file, not a ragloom {kind.name}; ragloom writes a {kind.name} only "
            f"where nothing is, into an empty directory, or over a {kind.name} of its own. "
            f"Choose another output path."
        )
    if kind.recognizes(target) or all(is_leftover(entry.name) for entry in target.iterdir()):
        return
    raise ArtifactError(
        f"{target} exists and is not a ragloom {kind.name} (it has no {kind.marker} of one), so "
        f"ragloom will not replace it: its contents are not ragloom's to delete. Choose a new "
        f"or empty directory as the output, or move {target} away yourself."
    )


def claim_file(target: Path, name: str, magic: bytes) -> None:
    """Refuse to replace the file ``target`` unless it is absent or a ``name`` file of ragloom's
    kind, recognized by its first bytes ``magic`` (a PNG's signature)."""
    if target.is_symlink():
        raise ArtifactError(
            f"{target} is a symbolic link; ragloom does not write through links. Give another "
            f"path for the {name}."
        )
    if not target.exists():
        return
    if target.is_dir():
        raise ArtifactError(f"{target} is a directory; give a file path for the {name}.")
    with target.open("rb") as handle:
        if handle.read(len(magic)) == magic:
            return
    raise ArtifactError(
        f"{target} exists and is not a {name}, so ragloom will not overwrite it. Give another "
        f"path for the {name}."
    )


LEFTOVER = re.compile(r"^\..+\.(lock|building|ragloom-tmp-.+|tmp-.+|replaced-\d+)$")
"""Names of what ragloom leaves beside what it writes: lock files, staging, temporary files,
directories moved aside. A directory holding nothing else counts as empty."""


def is_leftover(name: str) -> bool:
    return LEFTOVER.match(name) is not None


def _check_no_link_between(root: Path, target: Path) -> None:
    relative = target.relative_to(root)
    current = root
    for part in relative.parts[:-1]:
        current = current / part
        if current.is_symlink():
            raise ArtifactError(
                f"{current} is a symbolic link (to {os.readlink(current)}); ragloom writes only "
                f"inside {root} and does not follow links out of it. Replace the link by a "
                f"directory (or link {root} itself instead)."
            )


def check_outside(out: Path, inputs: Mapping[str, Path | None], option: str = "--out") -> None:
    """Refuse an output ``out`` that is, contains or lies inside one of the named ``inputs``."""
    written = Path(os.path.realpath(out))
    for label, given in inputs.items():
        if given is None:
            continue
        read = Path(os.path.realpath(given))
        if written == read:
            relation = "is"
        elif read.is_relative_to(written):
            relation = "contains"
        elif written.is_relative_to(read):
            relation = "lies inside"
        else:
            continue
        raise ArtifactError(
            f"{option} {out} {relation} the {label} {given}: writing it would destroy what the "
            f"command reads. Choose an output path outside {given}."
        )
