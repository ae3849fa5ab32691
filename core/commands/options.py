"""Checks of command-line options that argparse cannot express, raised as :class:`SpecError`
naming the option, so the CLI prints them as one paragraph."""

from __future__ import annotations

from ..errors import SpecError
from ..spec.model import MAX_K


def at_least_one(option: str, value: int | None) -> None:
    """Refuse a count option below 1 (None: the option was not given)."""
    if value is not None and value < 1:
        raise SpecError(option, [f"{value} is not allowed: give a whole number of at least 1."])


def passages_per_question(option: str, value: int | None) -> None:
    """Refuse a count of passages per question below 1 or above :data:`MAX_K`."""
    at_least_one(option, value)
    if value is not None and value > MAX_K:
        raise SpecError(
            option, [f"{value} is more than the {MAX_K:,} passages per question ragloom returns."]
        )


def cutoffs(option: str, text: str) -> list[int]:
    """``"1,5,10"`` → ``[1, 5, 10]`` (sorted, deduplicated), each a whole number from 1 to
    :data:`MAX_K`."""
    values = set()
    for part in text.split(","):
        try:
            value = int(part.strip())
        except ValueError:
            value = 0
        if not 1 <= value <= MAX_K:
            raise SpecError(
                option,
                [
                    f'"{text}" is not a list of cut-offs: "{part.strip()[:40]}" is not a whole '
                    f"number from 1 to {MAX_K:,} (passages per question). Write e.g. "
                    f"{option} 1,5,10."
                ],
            )
        values.add(value)
    return sorted(values)
