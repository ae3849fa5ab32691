"""Shards of a knowledge base: contiguous row ranges, each indexed on its own.

Shard ``number`` of ``count`` holds rows ``[start, stop)``; ids stay the KB's row numbers, so
results from several shards merge by score without translation. A shard's index lives beside the
whole-KB index of the same type and build parameters:
``indexes/<type>-<params>.shards-<count>/shard-<number>/``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ParameterError


@dataclass(frozen=True)
class Shard:
    """Rows ``[start, stop)`` of a KB: shard ``number`` (from 0) of ``count``."""

    number: int
    count: int
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start

    def __str__(self) -> str:
        return f"shard {self.number} of {self.count} (rows {self.start}..{self.stop - 1})"

    @classmethod
    def split(cls, rows: int, count: int) -> list[Shard]:
        """``count`` contiguous shards of near-equal size covering ``rows`` rows; a count below
        1 or above ``rows`` (a shard would be empty) raises :class:`ParameterError`."""
        if not 1 <= count <= max(rows, 1):
            raise ParameterError(
                f"cannot split a knowledge base of {rows} passages into {count} shards: the "
                f"shard count must be between 1 and {max(rows, 1)} (every shard holds at least "
                f"one passage). Ask for fewer shards."
            )
        bounds = [rows * number // count for number in range(count + 1)]
        return [cls(n, count, bounds[n], bounds[n + 1]) for n in range(count)]
