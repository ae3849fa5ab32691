"""The Reranker contract: what every reranker plugin must do, as tests to inherit.

Subclass :class:`RerankerContract` and provide the ``reranker`` fixture (the reranker under
test; return one from a module-scoped fixture to load its model once). The kit hands it
``questions`` and, for each, the ``candidates`` a retriever would have found (passages with ids,
retrieval scores and doc vectors), and checks what ``rerank`` returns against the
:class:`ragloom.protocols.Reranker` docstring. ``atol`` bounds the difference between two
computations of the same score (in a batch against alone, in another order).

```python
@pytest.fixture(scope="module")
def loaded():
    return MyReranker.from_spec(MyReranker.Params(path=...), context)


class TestMyReranker(RerankerContract):
    @pytest.fixture
    def reranker(self, loaded):
        return loaded
```
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import torch

from ..protocols import Passage, PassageText, Reranker, RerankerParams, Retrieved

QUESTIONS = ("who wrote animal farm", "what is the capital of france")
CANDIDATES = (
    (
        PassageText(4, "Paris", "paris is the capital city of france"),
        PassageText(0, "Animal Farm", "animal farm is a novel by orwell"),
        PassageText(7, "Moon", "apollo put an astronaut on the moon"),
        PassageText(1, "Orwell", "orwell wrote the book animal farm in england"),
    ),
    (
        PassageText(3, "Seine", "the river seine runs through paris"),
        PassageText(4, "Paris", "paris is the capital city of france"),
        PassageText(9, "Berlin", "berlin is the capital of germany"),
        PassageText(0, "Animal Farm", "animal farm is a novel by orwell"),
    ),
)
DIM = 4


def candidates(
    questions: Sequence[Sequence[PassageText]], found: Sequence[int] | None = None
) -> Retrieved:
    """A retriever's answer of the passages of each row, the first ``found[b]`` of row ``b``
    found (the rest ``-1``), with decreasing retrieval scores and one doc vector per id."""
    width = max(len(row) for row in questions)
    found = [len(row) for row in questions] if found is None else list(found)
    ids = torch.full((len(questions), width), -1, dtype=torch.int64)
    scores = torch.full((len(questions), width), float("-inf"))
    vectors = torch.zeros((len(questions), width, DIM))
    passages = []
    for b, (row, count) in enumerate(zip(questions, found, strict=True)):
        kept = list(row[:count])
        ids[b, :count] = torch.tensor([p.id for p in kept], dtype=torch.int64)
        scores[b, :count] = torch.arange(count, 0, -1, dtype=torch.float32)
        for j, passage in enumerate(kept):
            vectors[b, j] = vector(passage.id)
        passages.append(
            [Passage(p.id, p.title, p.text, float(scores[b, j])) for j, p in enumerate(kept)]
        )
    return Retrieved(ids, scores, scores.clone(), passages, vectors)


def vector(passage_id: int) -> torch.Tensor:
    """The doc vector of passage ``passage_id`` in the kit's candidates."""
    return torch.arange(DIM, dtype=torch.float32) + 10.0 * passage_id


class RerankerContract:
    """Tests every :class:`ragloom.protocols.Reranker` must pass (fixtures: see the module)."""

    questions: tuple[str, ...] = QUESTIONS
    candidates: tuple[tuple[PassageText, ...], ...] = CANDIDATES
    atol = 1e-4

    @pytest.fixture
    def reranker(self) -> Any:
        raise pytest.UsageError("a RerankerContract subclass must define the reranker fixture")

    def rerank(self, reranker: Any, k: int, **kwargs: Any) -> Retrieved:
        with torch.no_grad():
            result: Retrieved = reranker.rerank(
                list(self.questions), candidates(self.candidates, **kwargs), k
            )
        return result

    def scores_by_id(self, retrieved: Retrieved, row: int) -> dict[int, float]:
        return {
            int(i): float(s)
            for i, s in zip(retrieved.ids[row], retrieved.scores[row], strict=True)
            if i >= 0
        }

    def test_is_a_reranker_with_candidates(self, reranker: Any) -> None:
        params = type(reranker).Params
        assert isinstance(reranker, Reranker)
        assert "candidates" in params.model_fields, "a reranker's Params must have candidates"
        default = params.model_fields["candidates"].default
        assert isinstance(default, int) and default >= 1
        assert params.model_config.get("extra") == "forbid"
        assert isinstance(params.model_construct(), RerankerParams)

    @pytest.mark.parametrize("k", [1, 2, 4])
    def test_shapes_and_dtypes(self, reranker: Any, k: int) -> None:
        result = self.rerank(reranker, k)
        rows = len(self.questions)
        assert result.ids.shape == (rows, k) and result.ids.dtype == torch.int64
        assert result.scores.shape == (rows, k) and result.scores.dtype == torch.float32
        assert result.doc_scores.shape == (rows, k) and result.doc_scores.dtype == torch.float32
        assert result.doc_vectors is not None and result.doc_vectors.shape == (rows, k, DIM)
        assert [len(row) for row in result.passages] == [k] * rows
        assert torch.isfinite(result.scores).all() and torch.isfinite(result.doc_scores).all()

    def test_best_first_and_keeps_the_best_k(self, reranker: Any) -> None:
        every = self.rerank(reranker, 4)
        for row in range(len(self.questions)):
            scores = every.scores[row]
            assert (scores[:-1] >= scores[1:] - self.atol).all(), "not best first"
            doc = every.doc_scores[row]
            assert (doc[:-1] >= doc[1:] - self.atol).all(), "doc_scores not in score order"
            assert sorted(every.ids[row].tolist()) == sorted(p.id for p in self.candidates[row])
        for k in (1, 2):
            best = self.rerank(reranker, k)
            torch.testing.assert_close(best.scores, every.scores[:, :k], atol=self.atol, rtol=0)
            for row in range(len(self.questions)):
                top = self.scores_by_id(every, row)
                assert all(
                    abs(top[i] - s) <= self.atol for i, s in self.scores_by_id(best, row).items()
                )

    def test_passages_and_vectors_follow_the_ids(self, reranker: Any) -> None:
        result = self.rerank(reranker, 3)
        assert result.doc_vectors is not None
        for row, passages in enumerate(result.passages):
            texts = {p.id: p.text for p in self.candidates[row]}
            assert [p.id for p in passages] == result.ids[row].tolist()
            for j, passage in enumerate(passages):
                assert passage.text == texts[passage.id]
                assert passage.score == pytest.approx(float(result.scores[row, j]), abs=self.atol)
                torch.testing.assert_close(result.doc_vectors[row, j], vector(passage.id))

    def test_missing_candidates_stay_missing_and_last(self, reranker: Any) -> None:
        result = self.rerank(reranker, 4, found=[2, 4])
        assert result.ids[0, 2:].tolist() == [-1, -1]
        assert sorted(result.ids[0, :2].tolist()) == sorted(p.id for p in self.candidates[0][:2])
        assert result.scores[0, 2:].tolist() == [float("-inf")] * 2
        assert [len(row) for row in result.passages] == [2, 4]
        more = self.rerank(reranker, 6)
        assert more.ids[:, 4:].tolist() == [[-1, -1]] * 2
        assert [len(row) for row in more.passages] == [4, 4]

    def test_the_order_of_candidates_does_not_matter(self, reranker: Any) -> None:
        forward = self.rerank(reranker, 4)
        reversed_candidates = tuple(tuple(reversed(row)) for row in self.candidates)
        with torch.no_grad():
            backward = reranker.rerank(list(self.questions), candidates(reversed_candidates), 4)
        for row in range(len(self.questions)):
            a, b = self.scores_by_id(forward, row), self.scores_by_id(backward, row)
            assert a.keys() == b.keys()
            assert all(abs(a[i] - b[i]) <= self.atol for i in a), (a, b)

    def test_a_question_alone_equals_it_in_a_batch(self, reranker: Any) -> None:
        together = self.rerank(reranker, 4)
        for row, question in enumerate(self.questions):
            with torch.no_grad():
                alone = reranker.rerank([question], candidates(self.candidates[row : row + 1]), 4)
            a, b = self.scores_by_id(alone, 0), self.scores_by_id(together, row)
            assert a.keys() == b.keys()
            assert all(abs(a[i] - b[i]) <= self.atol for i in a), (a, b)
