"""The word-overlap reranker passes ragloom's Reranker contract."""

import pytest

from ragloom.testing import RerankerContract
from ragloom_hashing.overlap import WordOverlapReranker


class TestWordOverlap(RerankerContract):
    @pytest.fixture
    def reranker(self):
        return WordOverlapReranker(WordOverlapReranker.Params())
