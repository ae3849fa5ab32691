"""Overrides: ``{"retriever.index.type": "hnsw"}`` in Python, ``--set a.b=v`` on the CLI.

Python overrides keep their values as given. CLI values are text, typed by the schema of the key
they land on: a key whose type accepts a string keeps the text; any other key reads the text as a
TOML value (``64``, ``0.5``, ``true``, ``[1, 2]``).
"""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from ..errors import ParameterError, SpecError


class CliText(str):
    """A value typed on the command line, not yet typed by the schema; ``given_as`` is the
    argument it came from (``--set pipeline.n_docs=10``), which errors about it quote."""

    given_as: str

    def __new__(cls, value: str, given_as: str = "") -> CliText:
        text = super().__new__(cls, value)
        text.given_as = given_as
        return text


def parse_assignment(
    text: str, option: str = "--set", example: str = "KEY.PATH=VALUE, e.g. pipeline.n_docs=10"
) -> tuple[str, CliText]:
    """``"a.b=v"`` → ``("a.b", CliText("v"))``; raises SpecError, naming the command-line
    ``option`` the text was given to, without ``=`` or a key."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise SpecError(option, [f'"{text}" is not an override: write {example}.'])
    return key.strip(), CliText(value.strip(), f"{option} {text.strip()}")


def type_cli_value(value: Any, annotation: Any) -> Any:
    """``value`` typed for a field of type ``annotation`` when it came from the command line."""
    if not isinstance(value, CliText):
        return value
    text = str(value)
    try:
        TypeAdapter(annotation).validate_python(text, strict=True)
        return text
    except ValidationError:
        pass
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except (tomllib.TOMLDecodeError, RecursionError):
        return text


def origin(dotted: str, value: Any) -> str:
    """How an override is named in an error: the command-line argument it came from, or the
    key of a Python ``overrides`` mapping."""
    given_as = getattr(value, "given_as", "")
    return given_as or f'override "{dotted}"'


def check_overrides(overrides: Any) -> None:
    """Refuse ``overrides`` that are not a mapping of dotted key paths (str) to values."""
    if not isinstance(overrides, Mapping):
        raise ParameterError(
            f"overrides must be a mapping of dotted key paths to values, e.g. "
            f'{{"pipeline.n_docs": 10}}, not {type(overrides).__name__} {overrides!r:.60}.'
        )
    for key in overrides:
        if not isinstance(key, str):
            raise ParameterError(
                f"overrides: the key {key!r:.60} is {type(key).__name__}, not a str; keys are "
                f'dotted key paths, e.g. {{"pipeline.n_docs": 10}}.'
            )


@dataclass(frozen=True)
class Applied:
    """The raw spec with overrides applied, the tables whose ``type`` an override changed, and
    each overridden key path with :func:`origin`'s name for the override that set it."""

    data: dict[str, Any]
    retyped: frozenset[tuple[str, ...]]
    overridden: Mapping[tuple[str, ...], str]


def apply_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any], source: str) -> Applied:
    """A copy of ``data`` with each dotted key set; tables on the way are created."""
    check_overrides(overrides)
    result: dict[str, Any] = copy.deepcopy(dict(data))
    problems: list[str] = []
    retyped: set[tuple[str, ...]] = set()
    overridden: dict[tuple[str, ...], str] = {}
    for dotted, value in overrides.items():
        parts = tuple(part.strip() for part in dotted.split("."))
        if not all(parts):
            problems.append(f"{origin(dotted, value)}: empty part in the key path.")
            continue
        table: dict[str, Any] = result
        for depth, part in enumerate(parts[:-1]):
            child = table.setdefault(part, {})
            if not isinstance(child, dict):
                prefix = ".".join(parts[: depth + 1])
                problems.append(
                    f"{origin(dotted, value)}: {prefix} is a value, not a table, so it has no keys."
                )
                break
            table = child
        else:
            table[parts[-1]] = value
            overridden[parts] = origin(dotted, value)
            if parts[-1] == "type":
                retyped.add(parts[:-1])
    if problems:
        raise SpecError(source, problems)
    return Applied(result, frozenset(retyped), overridden)
