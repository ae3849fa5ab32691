"""Checks of command-line options that argparse cannot express, raised as :class:`SpecError`
naming the option, so the CLI prints them as one paragraph."""

from __future__ import annotations

from ..errors import SpecError


def at_least_one(option: str, value: int | None) -> None:
    """Refuse a count option below 1 (None: the option was not given)."""
    if value is not None and value < 1:
        raise SpecError(option, [f"{value} is not allowed: give a whole number of at least 1."])


def cutoffs(option: str, text: str) -> list[int]:
    """``"1,5,10"`` → ``[1, 5, 10]`` (sorted, deduplicated), each a whole number ≥ 1."""
    values = set()
    for part in text.split(","):
        try:
            value = int(part.strip())
        except ValueError:
            value = 0
        if value < 1:
            raise SpecError(
                option,
                [
                    f'"{text}" is not a list of cut-offs: "{part.strip()}" is not a whole number '
                    f"of at least 1. Write e.g. {option} 1,5,10."
                ],
            )
        values.add(value)
    return sorted(values)
