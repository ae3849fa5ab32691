"""Stop strings: where an answer's text ends (``[generation] stop``).

Decoding ends a hypothesis once its generated text contains a stop string; the answer is the
text before the first one, trailing whitespace removed. Streaming holds back text that could
still become a stop string, so that it never shows text the final answer does not have.
"""

from __future__ import annotations

from collections.abc import Sequence


def first_stop(text: str, stop: Sequence[str]) -> int | None:
    """Where the earliest stop string in ``text`` begins; None when there is none."""
    found = [index for index in (text.find(s) for s in stop) if index >= 0]
    return min(found) if found else None


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` before its first stop string, trailing whitespace removed; unchanged without one."""
    index = first_stop(text, stop)
    return text if index is None else text[:index].rstrip()


def settled(text: str, stop: Sequence[str]) -> int:
    """How much of ``text`` (an answer still growing) is final whatever comes next: the text
    before its first stop string, else all but a tail that may begin one; trailing whitespace
    is held back too, as :func:`cut_at_stop` may remove it."""
    index = first_stop(text, stop)
    if index is None:
        held = max((n for s in stop for n in range(1, len(s)) if text.endswith(s[:n])), default=0)
        index = len(text) - held
    return len(text[:index].rstrip())
