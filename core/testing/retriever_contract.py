"""The Retriever contract: what every retriever plugin must do, as tests to inherit.

Subclass :class:`RetrieverContract` and provide these fixtures:

- ``retriever``: the retriever under test, over a corpus of ``corpus_size`` passages;
- ``corpus_size``: how many passages it can return (``k`` above it leaves ``-1`` ids);
- ``encoder``: the encoder whose ``encode_queries`` makes the questions' vectors (a dense
  retriever's question encoder). Retrievers that read only text set ``uses_vectors = False``
  and need no encoder: their questions refuse to be encoded;
- ``wrong_encoder`` (optional, for a :class:`ragloom.protocols.ChecksEncoder` retriever): an
  encoder whose vectors do not compare with its data, which ``check_encoder`` must refuse (and
  ``preflight`` report);
- ``spec_table`` (optional, for a :class:`ragloom.protocols.RetrieverPreflight` or
  :class:`ragloom.protocols.ChecksTable` class): the ``(params, context, children)`` its
  ``from_spec`` was called with; ``preflight`` must find no problem with ``encoder``, nor
  ``check_table`` with ``context.pipeline``.

```python
class TestMyRetriever(RetrieverContract):
    uses_vectors = False

    @pytest.fixture
    def retriever(self):
        return MyRetriever(MyRetriever.Params(passages=PASSAGES))

    @pytest.fixture
    def corpus_size(self):
        return len(PASSAGES)
```

``questions`` are the texts asked (override them to match the corpus). A retriever that cannot
take zero questions sets ``supports_no_questions = False`` (the pipeline answers those itself).
One that may return fewer than ``k`` passages from a large enough corpus (an approximate index)
sets ``fills_k = False``. A :class:`ragloom.protocols.DifferentiableScores` retriever saying
True must give doc scores with a gradient in the query vectors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch

from ..errors import MismatchError
from ..kinds import KIND_NAMES
from ..protocols import (
    ChecksEncoder,
    ChecksTable,
    DifferentiableScores,
    KnowledgeBaseRetriever,
    NamedSlots,
    Nested,
    Passage,
    Questions,
    Retrieved,
    Retriever,
    RetrieverPreflight,
)


def refuse_encoding(texts: Sequence[str]) -> torch.Tensor:
    raise AssertionError("a retriever with uses_vectors = False called questions.vectors()")


class RetrieverContract:
    """Tests every :class:`ragloom.protocols.Retriever` must pass (fixtures: see the module)."""

    questions: tuple[str, ...] = (
        "who wrote animal farm",
        "what is the capital of france",
        "the moon landing of apollo",
    )
    uses_vectors = True
    supports_no_questions = True
    fills_k = True
    atol = 1e-4

    @pytest.fixture
    def retriever(self) -> Any:
        raise pytest.UsageError("a RetrieverContract subclass must define the retriever fixture")

    @pytest.fixture
    def corpus_size(self) -> int:
        raise pytest.UsageError("a RetrieverContract subclass must define the corpus_size fixture")

    @pytest.fixture
    def encoder(self) -> Any:
        return None

    @pytest.fixture
    def wrong_encoder(self) -> Any:
        return None

    @pytest.fixture
    def spec_table(self) -> tuple[Any, Any, dict[str, Any]] | None:
        return None

    @pytest.fixture
    def make_questions(self, encoder: Any) -> Callable[..., Questions]:
        """``make_questions(texts, grad=False)``: :class:`Questions` encoded by ``encoder`` (the
        vectors a leaf requiring grad when ``grad``), or refusing to be encoded when the
        retriever does not use vectors."""

        def make(texts: Sequence[str], grad: bool = False) -> Questions:
            if not self.uses_vectors:
                return Questions(texts, refuse_encoding)
            if encoder is None:
                raise pytest.UsageError(
                    "a RetrieverContract subclass with uses_vectors = True must define the "
                    "encoder fixture"
                )

            def encode(texts: Sequence[str]) -> torch.Tensor:
                with torch.no_grad():
                    vectors: torch.Tensor = encoder.encode_queries(texts)
                return vectors.clone().requires_grad_(grad)

            return Questions(texts, encode)

        return make

    def retrieve(self, retriever: Any, questions: Questions, k: int) -> Retrieved:
        retrieved = retriever.retrieve(questions, k)
        assert isinstance(retrieved, Retrieved)
        if self.uses_vectors:
            assert questions.encoded or not len(questions), "a dense retriever reads the vectors"
        else:
            assert not questions.encoded
        return retrieved

    def check_well_formed(self, retrieved: Retrieved, batch: int, k: int, corpus: int) -> None:
        """Shapes, dtypes, best-first order, ``-1`` padding and passages matching ids."""
        assert retrieved.ids.shape == (batch, k) and retrieved.ids.dtype == torch.int64
        assert retrieved.scores.shape == (batch, k) and retrieved.scores.dtype == torch.float32
        assert retrieved.doc_scores.shape == (batch, k)
        assert retrieved.doc_scores.dtype == torch.float32
        assert isinstance(retrieved.passages, list) and len(retrieved.passages) == batch
        valid = retrieved.ids >= 0
        assert ((retrieved.ids == -1) | valid).all(), "ids are row ids or -1"
        assert (retrieved.ids[valid] < corpus).all()
        if self.fills_k:
            assert (valid.sum(1) == min(k, corpus)).all(), "k ids while the corpus has them"
        assert (valid[:, :-1] >= valid[:, 1:]).all(), "missing places (-1) come last"
        assert torch.isfinite(retrieved.doc_scores[valid]).all()
        assert torch.isfinite(retrieved.scores[valid]).all()
        for b in range(batch):
            found = retrieved.ids[b][valid[b]]
            assert len(set(found.tolist())) == len(found), "no passage twice for a question"
            scores = retrieved.scores[b][valid[b]]
            assert (scores[1:] <= scores[:-1] + 1e-5).all(), "scores must be sorted best first"
            passages = retrieved.passages[b]
            assert [p.id for p in passages] == found.tolist(), "passages follow the ids"
            for passage, score in zip(passages, scores.tolist(), strict=True):
                assert isinstance(passage, Passage)
                assert isinstance(passage.title, str) and isinstance(passage.text, str)
                assert passage.score == pytest.approx(score, rel=1e-5, abs=1e-5)
        if retrieved.doc_vectors is not None:
            vectors = retrieved.doc_vectors
            assert vectors.shape[:2] == (batch, k) and vectors.dtype == torch.float32
            assert (vectors[~valid] == 0).all(), "doc vectors of missing places are zeros"

    def test_satisfies_the_protocol(self, retriever: Any) -> None:
        assert isinstance(retriever, Retriever)
        if isinstance(retriever, DifferentiableScores):
            assert isinstance(retriever.doc_scores_differentiable, bool)
        if isinstance(retriever, KnowledgeBaseRetriever):
            assert retriever.kb is not None
        component: Any = type(retriever)
        if isinstance(component, Nested):
            slots = component.slots
            assert all(isinstance(key, str) for key in slots)
            assert set(slots.values()) <= set(KIND_NAMES), "slots name kinds"
        if isinstance(component, NamedSlots):
            named = component.named_slots
            assert all(isinstance(key, str) for key in named)
            assert set(named.values()) <= set(KIND_NAMES), "named_slots name kinds"

    @pytest.mark.parametrize("k", [1, 3])
    def test_retrieved_is_well_formed(
        self, retriever: Any, make_questions: Any, corpus_size: int, k: int
    ) -> None:
        questions = make_questions(self.questions)
        retrieved = self.retrieve(retriever, questions, k)
        self.check_well_formed(retrieved, len(self.questions), k, corpus_size)

    def test_k_larger_than_the_corpus(
        self, retriever: Any, make_questions: Any, corpus_size: int
    ) -> None:
        k = corpus_size + 2
        retrieved = self.retrieve(retriever, make_questions(self.questions[:2]), k)
        self.check_well_formed(retrieved, 2, k, corpus_size)
        assert (retrieved.ids[:, corpus_size:] == -1).all()
        assert all(len(row) == corpus_size for row in retrieved.passages)

    def test_a_larger_k_extends_the_ranking(self, retriever: Any, make_questions: Any) -> None:
        few = self.retrieve(retriever, make_questions(self.questions), 2)
        more = self.retrieve(retriever, make_questions(self.questions), 4)
        torch.testing.assert_close(few.scores, more.scores[:, :2], atol=self.atol, rtol=1e-4)

    def test_a_question_retrieves_the_same_alone_and_in_a_batch(
        self, retriever: Any, make_questions: Any, corpus_size: int
    ) -> None:
        together = self.retrieve(retriever, make_questions(self.questions), 3)
        for b, text in enumerate(self.questions):
            alone = self.retrieve(retriever, make_questions([text]), 3)
            self.check_well_formed(alone, 1, 3, corpus_size)
            torch.testing.assert_close(alone.scores[0], together.scores[b], atol=self.atol, rtol=0)
            torch.testing.assert_close(
                alone.doc_scores[0], together.doc_scores[b], atol=self.atol, rtol=1e-4
            )

    def test_no_questions(self, retriever: Any, make_questions: Any, corpus_size: int) -> None:
        if not self.supports_no_questions:
            pytest.skip("supports_no_questions = False")
        retrieved = self.retrieve(retriever, make_questions([]), 3)
        self.check_well_formed(retrieved, 0, 3, corpus_size)

    def test_doc_scores_are_inner_products_with_doc_vectors(
        self, retriever: Any, make_questions: Any
    ) -> None:
        questions = make_questions(self.questions)
        retrieved = self.retrieve(retriever, questions, 3)
        if retrieved.doc_vectors is None or not self.uses_vectors:
            pytest.skip("no doc vectors")
        expected = torch.einsum("bd,bkd->bk", questions.vectors().detach(), retrieved.doc_vectors)
        valid = retrieved.ids >= 0
        torch.testing.assert_close(
            retrieved.doc_scores.detach()[valid], expected[valid], atol=self.atol, rtol=1e-4
        )

    def test_differentiable_scores_are_honest(self, retriever: Any, make_questions: Any) -> None:
        if not isinstance(retriever, DifferentiableScores):
            pytest.skip("not DifferentiableScores")
        if not retriever.doc_scores_differentiable:
            pytest.skip("says its doc scores are not differentiable")
        assert self.uses_vectors, "doc scores differentiable in vectors it never reads"
        questions = make_questions(self.questions, grad=True)
        with torch.enable_grad():
            retrieved = self.retrieve(retriever, questions, 3)
            assert retrieved.doc_scores.requires_grad
            valid = retrieved.ids >= 0
            retrieved.doc_scores[valid].sum().backward()  # type: ignore[no-untyped-call]
        gradient = questions.vectors().grad
        assert gradient is not None and gradient.abs().sum() > 0

    def test_checks_encoder(self, retriever: Any, encoder: Any, wrong_encoder: Any) -> None:
        if not isinstance(retriever, ChecksEncoder):
            pytest.skip("not ChecksEncoder")
        if encoder is not None:
            retriever.check_encoder(encoder)
        if wrong_encoder is None:
            pytest.skip("no wrong_encoder fixture")
        with pytest.raises(MismatchError):
            retriever.check_encoder(wrong_encoder)

    def test_preflight(
        self,
        retriever: Any,
        encoder: Any,
        wrong_encoder: Any,
        spec_table: tuple[Any, Any, dict[str, Any]] | None,
    ) -> None:
        if not isinstance(type(retriever), RetrieverPreflight):
            pytest.skip("not RetrieverPreflight")
        if spec_table is None:
            pytest.skip("no spec_table fixture")
        params, context, children = spec_table
        check = type(retriever).preflight
        for fingerprint in (None, None if encoder is None else encoder.fingerprint):
            notes, problems = check(params, context, fingerprint, **children)
            assert isinstance(notes, list) and all(isinstance(n, str) for n in notes)
            assert problems == [], problems
        if wrong_encoder is not None and isinstance(retriever, ChecksEncoder):
            _, problems = check(params, context, wrong_encoder.fingerprint, **children)
            assert problems and all(isinstance(p, str) for p in problems)

    def test_check_table(
        self, retriever: Any, spec_table: tuple[Any, Any, dict[str, Any]] | None
    ) -> None:
        if not isinstance(type(retriever), ChecksTable):
            pytest.skip("not ChecksTable")
        if spec_table is None:
            pytest.skip("no spec_table fixture")
        params, context, children = spec_table
        for pipeline in (None, context.pipeline):
            problems = type(retriever).check_table(params, pipeline, **children)
            assert problems == [], "the table it was built from has no problem"
