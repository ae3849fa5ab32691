"""Answer metrics as open-domain QA reports them: SQuAD's exact match and F1, and DPR's
retrieval recall (an answer's tokens inside one of the top-k passages).

The two normalize differently, as their sources do. Exact match and F1 compare SQuAD-normalized
strings (lower case, punctuation and articles removed). Recall matches as DPR's ``has_answer``
(facebookresearch/DPR, ``dpr/data/qa_validation.py`` with ``match_type="string"`` and the
``SimpleTokenizer`` of ``dpr/utils/tokenizers.py``): text is NFD-normalized and cut into runs of
letters, digits and marks and single other non-space characters, lower-cased, and an answer is
found when its tokens occur contiguously among the passage's. Punctuation is kept as tokens, so
``128`` is found in ``lru_cache(maxsize=128)`` and ``**`` in ``a ** b``.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import regex

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


@lru_cache(maxsize=1)
def _dpr_token() -> regex.Pattern[str]:
    """DPR's ``SimpleTokenizer`` pattern: a run of letters, digits and marks, or any single
    character that is neither a separator nor a control character."""
    import regex

    return regex.compile(r"[\p{L}\p{N}\p{M}]+|[^\p{Z}\p{C}]", regex.UNICODE)


def answer_tokens(text: str) -> list[str]:
    """``text`` as DPR's uncased ``has_answer`` reads it: NFD-normalized, tokenized by DPR's
    ``SimpleTokenizer``, lower-cased."""
    return [token.lower() for token in _dpr_token().findall(unicodedata.normalize("NFD", text))]


def _contains(tokens: Sequence[str], wanted: Sequence[str]) -> bool:
    """Whether ``wanted`` (not empty) occurs contiguously in ``tokens``."""
    width = len(wanted)
    return any(
        tokens[start : start + width] == wanted
        for start in range(len(tokens) - width + 1)
        if tokens[start] == wanted[0]
    )


def has_answer(passage: str, answers: Sequence[str]) -> bool:
    """Whether an answer occurs in the passage, matched as DPR's ``has_answer`` matches
    (:func:`answer_tokens` of both, contiguous). An answer without tokens (whitespace only) is
    never found; DPR would find it in every passage. :func:`answer_problems` says which."""
    tokens = answer_tokens(passage)
    return any(_contains(tokens, wanted) for wanted in map(answer_tokens, answers) if wanted)


def answer_problems(answer: str, generated: bool = True) -> list[str]:
    """Why ``answer`` cannot be scored as meant, if it cannot: it has no tokens for recall, or
    (when answers are ``generated``) SQuAD normalization leaves nothing of it for exact match and
    F1."""
    problems = []
    if not answer_tokens(answer):
        problems.append("has no tokens, so recall never finds it in a passage")
    if generated and not normalize_answer(answer):
        problems.append(
            "is empty after SQuAD normalization (punctuation and articles removed), so exact "
            "match counts only an equally empty prediction and F1 is 0"
        )
    return problems
