"""The Encoder contract: what every encoder plugin must do, as tests to inherit.

Subclass :class:`EncoderContract` and provide the ``encoder_factory`` fixture: a callable
``factory(variant: int)`` building the encoder under test. Two builds of one variant must share a
fingerprint; variant ``1`` must embed passages differently from variant ``0`` (other weights, or
other settings that change the passage vectors), so its fingerprint must differ. The ``encoder``
fixture is ``factory(0)``; override it to share one built encoder between tests.

```python
class TestMyEncoder(EncoderContract):
    @pytest.fixture
    def encoder_factory(self):
        return lambda variant: MyEncoder(MyEncoder.Params(seed=variant))
```

Optional: ``spec_table``, the ``(params, context)`` that ``from_spec`` built variant 0 from;
with it an :class:`ragloom.protocols.EncoderFromFiles` class must tell the built encoder's
fingerprint and dim from the files alone. Gradients are checked for encoders that are
:class:`ragloom.protocols.Trainable` (the queries
must reach the weights of ``trainable_model()``), question rewriting for those that are
:class:`ragloom.protocols.RewritesQuestions`, and the counts of tokens cut off for those that are
:class:`ragloom.protocols.CountsTruncation` (a passage past the limit must encode the same
whatever follows the cut). ``atol`` bounds the difference between a text
encoded alone and in a padded batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from ..protocols import (
    CountsTruncation,
    Encoder,
    EncoderFromFiles,
    RewritesQuestions,
    Trainable,
)

QUESTIONS = ["who wrote animal farm", "what is the capital of france", "moon landing"]
TITLES = ["Animal Farm", "Paris", "Apollo"]
TEXTS = [
    "animal farm is a novel by orwell about animals on a farm",
    "paris is the capital city of france on the river seine",
    "the apollo moon landing put an astronaut on the moon",
]


class EncoderContract:
    """Tests every :class:`ragloom.protocols.Encoder` must pass (fixtures: see the module)."""

    atol = 1e-5

    @pytest.fixture
    def encoder_factory(self) -> Callable[[int], Any]:
        raise pytest.UsageError(
            "an EncoderContract subclass must define the encoder_factory fixture"
        )

    @pytest.fixture
    def encoder(self, encoder_factory: Callable[[int], Any]) -> Any:
        return encoder_factory(0)

    @pytest.fixture
    def spec_table(self) -> tuple[Any, Any] | None:
        return None

    def test_satisfies_the_protocol(self, encoder: Any) -> None:
        assert isinstance(encoder, Encoder)
        assert isinstance(encoder.dim, int) and encoder.dim > 0
        assert isinstance(encoder.fingerprint, str) and encoder.fingerprint

    def test_query_shapes_and_dtype(self, encoder: Any) -> None:
        vectors = encoder.encode_queries(QUESTIONS)
        assert isinstance(vectors, torch.Tensor)
        assert vectors.shape == (len(QUESTIONS), encoder.dim) and vectors.dtype == torch.float32
        assert torch.isfinite(vectors).all()

    def test_passage_shapes_and_dtype(self, encoder: Any) -> None:
        vectors = encoder.encode_passages(TITLES, TEXTS)
        assert isinstance(vectors, torch.Tensor)
        assert vectors.shape == (len(TEXTS), encoder.dim) and vectors.dtype == torch.float32
        assert torch.isfinite(vectors).all()

    def test_empty_lists(self, encoder: Any) -> None:
        queries = encoder.encode_queries([])
        passages = encoder.encode_passages([], [])
        assert queries.shape == (0, encoder.dim) and queries.dtype == torch.float32
        assert passages.shape == (0, encoder.dim) and passages.dtype == torch.float32

    def test_a_text_encodes_the_same_alone_and_in_a_batch(self, encoder: Any) -> None:
        with torch.no_grad():
            batch = encoder.encode_queries(QUESTIONS)
            for row, question in enumerate(QUESTIONS):
                alone = encoder.encode_queries([question])[0]
                torch.testing.assert_close(alone, batch[row], atol=self.atol, rtol=1e-4)
        passages = encoder.encode_passages(TITLES, TEXTS)
        for row in range(len(TEXTS)):  # in the order given, whatever order it encodes in
            alone = encoder.encode_passages(TITLES[row : row + 1], TEXTS[row : row + 1])[0]
            torch.testing.assert_close(alone, passages[row], atol=self.atol, rtol=1e-4)

    def test_distinct_texts_get_distinct_vectors(self, encoder: Any) -> None:
        with torch.no_grad():
            vectors = encoder.encode_queries(QUESTIONS)
        assert not torch.allclose(vectors[0], vectors[1])

    def test_passages_are_encoded_without_gradients(self, encoder: Any) -> None:
        with torch.enable_grad():
            vectors = encoder.encode_passages(TITLES, TEXTS)
        assert not vectors.requires_grad

    def test_query_gradients_reach_the_trainable_weights(self, encoder: Any) -> None:
        trainable: Trainable | None = encoder if isinstance(encoder, Trainable) else None
        if trainable is None:
            pytest.skip("not Trainable: its queries need not be differentiable")
        model = trainable.trainable_model().model
        model.zero_grad()
        with torch.enable_grad():
            vectors = encoder.encode_queries(QUESTIONS[:2])
            assert vectors.requires_grad, "encode_queries must be differentiable with grad on"
            (vectors**2).sum().backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads)
        model.zero_grad()
        with torch.no_grad():
            assert not encoder.encode_queries(QUESTIONS[:1]).requires_grad

    def test_fingerprint_is_stable_across_builds(
        self, encoder: Any, encoder_factory: Callable[[int], Any]
    ) -> None:
        again = encoder_factory(0)
        assert again.fingerprint == encoder.fingerprint
        with torch.no_grad():
            torch.testing.assert_close(
                again.encode_passages(TITLES, TEXTS), encoder.encode_passages(TITLES, TEXTS)
            )

    def test_fingerprint_differs_for_other_weights(
        self, encoder: Any, encoder_factory: Callable[[int], Any]
    ) -> None:
        other = encoder_factory(1)
        with torch.no_grad():
            theirs = other.encode_passages(TITLES, TEXTS)
            ours = encoder.encode_passages(TITLES, TEXTS)
        assert theirs.shape != ours.shape or not torch.allclose(theirs, ours), (
            "variant 1 must embed passages differently from variant 0"
        )
        assert other.fingerprint != encoder.fingerprint

    def test_rewritten_questions(self, encoder: Any) -> None:
        if not isinstance(encoder, RewritesQuestions):
            pytest.skip("does not rewrite questions")
        rewritten = encoder.question_text(QUESTIONS)
        assert isinstance(rewritten, list) and len(rewritten) == len(QUESTIONS)
        assert all(isinstance(text, str) and text for text in rewritten)

    def test_rewriting_no_questions(self, encoder: Any) -> None:
        if not isinstance(encoder, RewritesQuestions):
            pytest.skip("does not rewrite questions")
        assert list(encoder.question_text([])) == []

    def test_passages_that_fit_lose_nothing(self, encoder: Any) -> None:
        if not isinstance(encoder, CountsTruncation):
            pytest.skip("does not count truncation")
        assert isinstance(encoder.passage_token_limit, int) and encoder.passage_token_limit > 0
        assert encoder.passage_overflow(TITLES, TEXTS) == [0] * len(TEXTS)
        assert list(encoder.passage_overflow([], [])) == []

    def test_a_long_passage_loses_what_it_says_unread(self, encoder: Any) -> None:
        counts = isinstance(encoder, CountsTruncation)
        counter: CountsTruncation | None = encoder if counts else None
        if counter is None:
            pytest.skip("does not count truncation")
        long = " ".join(["moon"] * 2 * counter.passage_token_limit)
        longer = f"{long} the river seine runs through paris"
        cut, more = counter.passage_overflow(TITLES[2:] * 2, [long, longer])
        assert 0 < cut < more
        vectors = encoder.encode_passages(TITLES[2:] * 2, [long, longer])
        torch.testing.assert_close(vectors[0], vectors[1], atol=self.atol, rtol=1e-4)

    def test_fingerprint_and_dim_from_files(
        self, encoder: Any, spec_table: tuple[Any, Any] | None
    ) -> None:
        if not isinstance(type(encoder), EncoderFromFiles):
            pytest.skip("not EncoderFromFiles")
        if spec_table is None:
            pytest.skip("no spec_table fixture")
        params, context = spec_table
        assert type(encoder).fingerprint_from_spec(params, context) == encoder.fingerprint
        assert type(encoder).dim_from_spec(params, context) == encoder.dim
