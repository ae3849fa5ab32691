"""Turning pydantic validation errors into one readable line per problem, with key paths."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import tomli_w
from pydantic import BaseModel, ValidationError

from ..suggest import listing, suggestion


def key_path(parts: Sequence[str | int]) -> str:
    """``("retriever", "index", "nprobe")`` → ``retriever.index.nprobe``."""
    return ".".join(str(part) for part in parts)


def toml_value(value: Any) -> str:
    """``value`` as it would appear in a TOML file."""
    try:
        return tomli_w.dumps({"v": value}).strip()[len("v = ") :]
    except TypeError:
        return repr(value)


def where(table: Sequence[str | int], key: str | int | None = None) -> str:
    """``[retriever.index] nprobe`` or ``[retriever.index]``; top level keys have no table."""
    location = f"[{key_path(table)}]" if table else ""
    if key is None:
        return location or "top level"
    return f"{location} {key}".strip()


def _allowed_literals(expected: str) -> list[str]:
    return re.findall(r"'([^']*)'", expected)


EXPECTED_TYPES = {
    "int_type": "must be a whole number, e.g. 5",
    "float_type": "must be a number, e.g. 0.5",
    "bool_type": "must be true or false",
    "string_type": 'must be a string in quotes, e.g. "text"',
    "list_type": 'must be a list, e.g. ["a", "b"]',
}
"""What a value of the wrong type is told, by pydantic error type."""


def from_override(
    line: str, path: Sequence[str], origins: Mapping[tuple[str, ...], str] | None
) -> str:
    """``line`` naming the override that set the key at ``path``, if one did."""
    given = (origins or {}).get(tuple(path))
    return f"{line.removesuffix('.')} (from {given})." if given else line


def describe(
    error: ValidationError,
    table: Sequence[str],
    model: type[BaseModel],
    origins: Mapping[tuple[str, ...], str] | None = None,
) -> list[str]:
    """One line per error in ``error``, raised validating ``model`` for the table at ``table``;
    a key set by an override names it (``origins``: key path → the override's name)."""
    lines = []
    for item in error.errors():
        location = [*table, *[str(part) for part in item["loc"][:-1]]]
        key = str(item["loc"][-1]) if item["loc"] else None
        line = _line(item, location, key, model)
        lines.append(from_override(line, [*location, key] if key else location, origins))
    return lines


def _line(item: Any, location: list[str], key: str | None, model: type[BaseModel]) -> str:
    """The problem one pydantic error item describes."""
    kind = item["type"]
    if kind == "extra_forbidden":
        allowed = list(model.model_fields)
        return (
            f'{where(location)} unknown key "{key}".{suggestion(str(key), allowed)} '
            f"Allowed keys: {listing(allowed)}."
        )
    if kind == "missing":
        return f'{where(location)} is missing the required key "{key}".'
    if kind == "literal_error":
        allowed = _allowed_literals(item.get("ctx", {}).get("expected", ""))
        value = item["input"]
        return (
            f"{where(location, key)} = {toml_value(value)} is not allowed."
            f"{suggestion(str(value), allowed)} Allowed values: {listing(allowed)}."
        )
    message = EXPECTED_TYPES.get(kind, item["msg"].removeprefix("Value error, ").rstrip("."))
    if key is None:  # a check of the whole table: its message names the keys
        return f"{where(location)} {message}."
    return f"{where(location, key)} = {toml_value(item['input'])}: {message}."
