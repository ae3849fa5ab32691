"""Answer metrics as open-domain QA reports them: SQuAD's exact match and F1, and DPR's
retrieval recall (an answer string inside one of the top-k passages)."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (SQuAD's normalization)."""
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 if the normalized prediction equals a normalized answer."""
    predicted = normalize_answer(prediction)
    return float(any(predicted == normalize_answer(answer) for answer in answers))


def f1(prediction: str, answers: Sequence[str]) -> float:
    """The best token-overlap F1 of the prediction against any answer."""
    predicted = normalize_answer(prediction).split()
    best = 0.0
    for answer in answers:
        expected = normalize_answer(answer).split()
        common = sum((Counter(predicted) & Counter(expected)).values())
        if common:
            precision, recall = common / len(predicted), common / len(expected)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def has_answer(passage: str, answers: Sequence[str]) -> bool:
    """Whether a normalized answer occurs in the normalized passage as whole words."""
    text = f" {normalize_answer(passage)} "
    return any(f" {normalize_answer(answer)} " in text for answer in answers if answer.strip())
