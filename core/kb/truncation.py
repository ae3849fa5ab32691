"""What the encoder of a knowledge base build cuts off its passages.

An encoder reads a passage up to its token limit; the rest is never embedded, so no question can
retrieve it. An encoder that :class:`~ragloom.protocols.CountsTruncation` says how many tokens it
cuts; a build adds them up batch by batch, keeps the totals in its progress record (a resumed
build counts the passages encoded before it was killed), and reports them once, as one line.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..protocols import CountsTruncation, Encoder

log = logging.getLogger(__name__)

PROGRESS_KEY = "truncation"
"""The key of the totals in a build's ``progress.json``: ``[cut, tokens, most]``."""


@dataclass(frozen=True)
class Truncation:
    """Totals over the passages encoded so far: ``cut`` passages were longer than the encoder
    reads, ``tokens`` were cut off them in all, at most ``most`` from one passage."""

    cut: int = 0
    tokens: int = 0
    most: int = 0

    def plus(self, overflow: Sequence[int]) -> Truncation:
        """These totals and one batch's tokens cut per passage."""
        lost = [tokens for tokens in overflow if tokens > 0]
        return Truncation(self.cut + len(lost), self.tokens + sum(lost), max([self.most, *lost]))

    def combined(self, other: Truncation) -> Truncation:
        """These totals and those of other passages (a chunk encoded elsewhere)."""
        return Truncation(
            self.cut + other.cut, self.tokens + other.tokens, max(self.most, other.most)
        )

    @classmethod
    def recorded(cls, progress: dict[str, Any] | None) -> Truncation:
        """The totals a progress record holds; none when it holds none (a build recorded
        before its first batch)."""
        values = (progress or {}).get(PROGRESS_KEY)
        if isinstance(values, list) and len(values) == 3 and all(type(v) is int for v in values):
            return cls(*values)
        return cls()

    def record(self) -> dict[str, list[int]]:
        """The totals as a progress record keeps them."""
        return {PROGRESS_KEY: [self.cut, self.tokens, self.most]}


def passage_overflow(encoder: Encoder, titles: Sequence[str], texts: Sequence[str]) -> list[int]:
    """The tokens ``encoder`` cuts off each passage; ``[]`` (nothing known) from an encoder that
    does not count them."""
    if isinstance(encoder, CountsTruncation):
        return list(encoder.passage_overflow(titles, texts))
    return []


def report(truncation: Truncation, encoder: Encoder, count: int, *, warn: bool = True) -> None:
    """Log what ``encoder`` cut off the ``count`` passages of a build, if anything: a warning
    with the fix, or (``warn`` False: passages the user cannot change, such as a packaged
    corpus's) a note."""
    if not truncation.cut or not isinstance(encoder, CountsTruncation):
        return
    verb = "is" if truncation.cut == 1 else "are"
    message = (
        f"{truncation.cut:,} of {count:,} passages {verb} longer than the encoder reads "
        f"({encoder.passage_token_limit:,} tokens): {truncation.tokens:,} tokens past the limit "
        f"were cut off unread (at most {truncation.most:,} from one passage), and no question "
        f"can retrieve them."
    )
    if warn:
        log.warning(
            "%s Cut the documents into shorter passages: kb build --split-words N (100 by "
            "default; fewer words for text dense in tokens, such as tables, code or numbers).",
            message,
        )
    else:
        log.info("%s", message)
