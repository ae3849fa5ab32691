"""Did-you-mean suggestions and short listings for error messages."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def _normalize(word: str) -> str:
    return word.lower().replace("_", "-").replace(".", "-")


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """The choice closest to ``word``: a `_`/`-`/case variant first, then the closest spelling."""
    options = sorted(set(choices))
    for option in options:
        if _normalize(option) == _normalize(word):
            return option
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return close[0] if close else None


def listing(choices: Iterable[str], limit: int = 12) -> str:
    """``a, b, c`` (sorted), cut after ``limit`` names with a count of the rest."""
    options = sorted(set(choices))
    if not options:
        return "(none)"
    shown = ", ".join(options[:limit])
    rest = len(options) - limit
    return f"{shown} and {rest} more" if rest > 0 else shown


def suggestion(word: str, choices: Iterable[str]) -> str:
    """`` Did you mean "x"?`` or the empty string."""
    best = did_you_mean(word, choices)
    return f' Did you mean "{best}"?' if best is not None else ""
