"""Turning pydantic validation errors into one readable line per problem, with key paths."""

from __future__ import annotations

import re
from collections.abc import Sequence
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


def describe(error: ValidationError, table: Sequence[str], model: type[BaseModel]) -> list[str]:
    """One line per error in ``error``, raised validating ``model`` for the table at ``table``."""
    lines = []
    for item in error.errors():
        location = [*table, *[str(part) for part in item["loc"][:-1]]]
        key = str(item["loc"][-1]) if item["loc"] else None
        kind = item["type"]
        if kind == "extra_forbidden":
            allowed = list(model.model_fields)
            lines.append(
                f'{where(location)} unknown key "{key}".{suggestion(str(key), allowed)} '
                f"Allowed keys: {listing(allowed)}."
            )
        elif kind == "missing":
            lines.append(f'{where(location)} is missing the required key "{key}".')
        elif kind == "literal_error":
            allowed = _allowed_literals(item.get("ctx", {}).get("expected", ""))
            value = item["input"]
            lines.append(
                f"{where(location, key)} = {toml_value(value)} is not allowed."
                f"{suggestion(str(value), allowed)} Allowed values: {listing(allowed)}."
            )
        else:
            message = item["msg"].rstrip(".")
            lines.append(f"{where(location, key)} = {toml_value(item['input'])}: {message}.")
    return lines
