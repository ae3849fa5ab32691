"""The keyword retriever passes ragloom's Retriever contract without an encoder: it reads the
questions' text and never asks for their vectors."""

import pytest

from ragloom.testing import RetrieverContract
from ragloom_hashing.keyword import KeywordRetriever

PASSAGES = [
    "animal farm is a novel by orwell",
    "paris is the capital of france",
    "apollo put an astronaut on the moon",
    "the river thames runs through london",
]


class TestKeywordRetriever(RetrieverContract):
    uses_vectors = False

    @pytest.fixture
    def retriever(self):
        return KeywordRetriever.from_spec(KeywordRetriever.Params(passages=PASSAGES), None)

    @pytest.fixture
    def corpus_size(self):
        return len(PASSAGES)


def test_the_best_passage_shares_the_most_words():
    from ragloom.protocols import Questions

    retriever = KeywordRetriever.from_spec(KeywordRetriever.Params(passages=PASSAGES), None)
    retrieved = retriever.retrieve(Questions(["who wrote animal farm"], None), 2)
    assert retrieved.ids[0].tolist()[0] == 0
    assert retrieved.passages[0][0].text == PASSAGES[0]
