"""Keys that hold file-system paths, and the spec with each of them made absolute.

A component marks a path key by typing it :data:`SpecPath` (a ``str`` to pydantic). Relative
paths are relative to the spec file; ``~`` is the home directory; ``asset:NAME`` names a packaged
model and is not a path. A spec written elsewhere than the one it came from (``ragloom train``
writes one for its trained model) keeps pointing at the same files through
:func:`absolute_paths`.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel

from ..assets import ASSET_PREFIX as ASSET_PREFIX


class _PathKey:
    """The marker :data:`SpecPath` carries."""


PATH_KEY = _PathKey()


def _check_path(value: str) -> str:
    """Refuse a path no file system holds: one with a NUL character."""
    if "\x00" in value:
        raise ValueError(
            f"holds a NUL character (\\u0000) at character {value.index(chr(0)) + 1}, which no "
            f"path can hold; write the path without it"
        )
    return value


SpecPath = Annotated[str, PATH_KEY, AfterValidator(_check_path)]
"""A spec value that is a path relative to the spec file (or ``asset:NAME``)."""


def absolute(value: str, base_dir: Path) -> str:
    """``value`` as an absolute path against ``base_dir``; ``asset:`` references unchanged."""
    if value.startswith(ASSET_PREFIX):
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base_dir / path).resolve())


def is_path_annotation(annotation: Any) -> bool:
    """Whether a field annotation is :data:`SpecPath`, alone or in a union (``SpecPath | None``)."""
    if PATH_KEY in getattr(annotation, "__metadata__", ()):
        return True
    return any(is_path_annotation(argument) for argument in typing.get_args(annotation))


def path_keys(model: type[BaseModel]) -> list[str]:
    """The keys of ``model`` typed :data:`SpecPath`."""
    return [
        name
        for name, field in model.model_fields.items()
        if PATH_KEY in field.metadata or is_path_annotation(field.annotation)
    ]


def absolute_paths(table: dict[str, Any], model: type[BaseModel], base_dir: Path) -> None:
    """Rewrite, in place, the path keys of one spec table."""
    for key in path_keys(model):
        if isinstance(table.get(key), str):
            table[key] = absolute(table[key], base_dir)
