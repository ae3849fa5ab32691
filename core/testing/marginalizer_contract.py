"""The Marginalizer contract: losses and decoding every marginalizer must get right.

Subclass :class:`MarginalizerContract` and provide the ``marginalizer`` fixture. The decoding
tests drive a :class:`TableGenerator` (override the ``generator`` fixture to use another).
Marginalizers whose decoding score is an approximation of their own likelihood (rag-sequence's
``fast``) set ``decode_score_is_likelihood = False``. A marginalizer that
:class:`ragloom.protocols.FusesDocuments` starts the generator itself and reads one fused row per
question; the tests of per-document mixing (order, prior gradients) do not apply to it.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch

from ..protocols import Decoded, FusesDocuments, Marginalizer, PassageText, StreamsDecoding
from ..spec.model import GenerationSettings
from ..tensors import shift_left
from .table_generator import TableGenerator

QUESTIONS = ["first question", "second question", "third question"]


def passages_for(batch: int, k: int) -> list[list[PassageText]]:
    """``batch`` lists of ``k`` distinct passages (ids drive the table generator's contexts)."""
    return [
        [PassageText(b * k + j, f"title {b} {j}", f"text {b} {j}") for j in range(k)]
        for b in range(batch)
    ]


def random_prior(batch: int, k: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.log_softmax(torch.randn(batch, k, generator=generator) * 2, dim=1)


class MarginalizerContract:
    """Tests every :class:`ragloom.protocols.Marginalizer` must pass."""

    decode_score_is_likelihood = True

    @pytest.fixture
    def marginalizer(self) -> Any:
        raise pytest.UsageError(
            "a MarginalizerContract subclass must define the marginalizer fixture"
        )

    @pytest.fixture
    def generator(self) -> Any:
        return TableGenerator()

    @pytest.fixture
    def pad(self, generator: Any) -> int:
        return int(generator.pad_token_id)

    @staticmethod
    def start(
        marginalizer: Any, generator: Any, questions: list[str], passages: list[list[PassageText]]
    ) -> Any:
        """The state the pipeline gives ``decode``: the marginalizer's own start when it
        fuses documents, else the generator's."""
        if isinstance(marginalizer, FusesDocuments):
            return marginalizer.start(generator, questions, passages)
        return generator.start(questions, passages)

    @staticmethod
    def rows(marginalizer: Any, k: int) -> int:
        """Decoding rows per question: 1 when it fuses documents, else ``k``."""
        return 1 if isinstance(marginalizer, FusesDocuments) else k

    def skip_when_fusing(self, marginalizer: Any) -> None:
        if isinstance(marginalizer, FusesDocuments):
            pytest.skip("reads all documents fused: no per-document mixing to test")

    @pytest.fixture
    def batch(
        self, marginalizer: Any, generator: Any, pad: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Log-probs ``[3, r, 6, V]`` (``r``: 4, or 1 when fused), a prior ``[3, 4]`` and padded
        targets ``[3, 6]``."""
        state = self.start(marginalizer, generator, QUESTIONS, passages_for(3, 4))
        labels = generator.encode_targets(["t3 t4 t5 t6", "t7", "t8 t9"])
        rows = self.rows(marginalizer, 4)
        logprobs = generator.score(state, labels.repeat_interleave(rows, dim=0))
        logprobs = logprobs.view(3, rows, *logprobs.shape[1:])
        return logprobs, random_prior(3, 4), shift_left(labels, pad)

    def _decode(
        self,
        marginalizer: Any,
        generator: Any,
        batch: int,
        k: int,
        passages: list[list[PassageText]] | None = None,
        prior: torch.Tensor | None = None,
        **settings: Any,
    ) -> Decoded:
        passages = passages_for(batch, k) if passages is None else passages
        state = self.start(marginalizer, generator, QUESTIONS[:batch], passages)
        decoded: Decoded = marginalizer.decode(
            generator,
            state,
            random_prior(batch, k) if prior is None else prior,
            GenerationSettings(max_length=self.max_length(generator), **settings),
        )
        return decoded

    @staticmethod
    def max_length(generator: Any) -> int:
        """Seven generated tokens after the generator's start tokens."""
        return len(generator.start_token_ids) + 7

    def test_satisfies_the_protocol(self, marginalizer: Any) -> None:
        assert isinstance(marginalizer, Marginalizer)

    def test_loss_shapes_and_reduction(self, pad: int, marginalizer: Any, batch: Any) -> None:
        logprobs, prior, targets = batch
        per_example = marginalizer.loss(logprobs, prior, targets, pad, reduce=False)
        total = marginalizer.loss(logprobs, prior, targets, pad, reduce=True)
        assert per_example.shape == (3,) and total.shape == ()
        assert torch.isfinite(per_example).all() and (per_example > 0).all()
        torch.testing.assert_close(total, per_example.sum())

    def test_one_document_gives_the_generators_likelihood(
        self, pad: int, marginalizer: Any, batch: Any
    ) -> None:
        logprobs, _, targets = batch
        single = logprobs[:, :1]
        gathered = single[:, 0].gather(-1, targets[..., None]).squeeze(-1)
        expected = -gathered.masked_fill(targets == pad, 0.0).sum(1)
        loss = marginalizer.loss(single, torch.zeros(3, 1), targets, pad, reduce=False)
        torch.testing.assert_close(loss, expected)

    def test_document_order_does_not_matter(self, pad: int, marginalizer: Any, batch: Any) -> None:
        self.skip_when_fusing(marginalizer)
        logprobs, prior, targets = batch
        order = torch.tensor([2, 0, 3, 1])
        torch.testing.assert_close(
            marginalizer.loss(logprobs, prior, targets, pad, reduce=False),
            marginalizer.loss(logprobs[:, order], prior[:, order], targets, pad, reduce=False),
        )

    def test_missing_documents_are_ignored(self, pad: int, marginalizer: Any, batch: Any) -> None:
        self.skip_when_fusing(marginalizer)
        logprobs, prior, targets = batch
        padded_logprobs = torch.cat([logprobs, logprobs[:, :1].flip(-1)], dim=1)
        padded_prior = torch.cat([prior, torch.full((3, 1), float("-inf"))], dim=1)
        torch.testing.assert_close(
            marginalizer.loss(logprobs, prior, targets, pad, reduce=False),
            marginalizer.loss(padded_logprobs, padded_prior, targets, pad, reduce=False),
        )

    def test_gradients_reach_logprobs_and_prior(
        self, pad: int, marginalizer: Any, batch: Any
    ) -> None:
        logprobs, prior, targets = batch
        logprobs = logprobs.detach().clone().requires_grad_(True)
        prior = prior.detach().clone().requires_grad_(True)
        marginalizer.loss(logprobs, prior, targets, pad).backward()
        assert logprobs.grad is not None and logprobs.grad.abs().sum() > 0
        if not isinstance(marginalizer, FusesDocuments):  # fused: the prior only chooses
            assert prior.grad is not None and prior.grad.abs().sum() > 0

    @pytest.mark.parametrize("num_beams", [1, 3])
    def test_decoding_ignores_missing_documents(
        self, marginalizer: Any, generator: Any, num_beams: int
    ) -> None:
        """A fifth document with id ``-1`` (prior ``-inf``) changes no answer and no score."""
        passages = passages_for(3, 4)
        prior = random_prior(3, 4)
        gapped = [[*row, PassageText(-1, "", "")] for row in passages]
        gapped_prior = torch.cat([prior, torch.full((3, 1), float("-inf"))], dim=1)
        plain = self._decode(marginalizer, generator, 3, 4, passages, prior, num_beams=num_beams)
        gaps = self._decode(
            marginalizer, generator, 3, 5, gapped, gapped_prior, num_beams=num_beams
        )
        assert gaps.sequences == plain.sequences
        torch.testing.assert_close(gaps.scores, plain.scores)

    def test_label_smoothing(self, pad: int, marginalizer: Any, batch: Any) -> None:
        logprobs, prior, targets = batch
        plain = marginalizer.loss(logprobs, prior, targets, pad)
        torch.testing.assert_close(
            marginalizer.loss(logprobs, prior, targets, pad, label_smoothing=0.0), plain
        )
        smoothed = marginalizer.loss(logprobs, prior, targets, pad, label_smoothing=0.1)
        assert torch.isfinite(smoothed) and not torch.isclose(smoothed, plain)

    @pytest.mark.parametrize("num_beams", [1, 3])
    def test_decoded_sequences_are_well_formed(
        self, marginalizer: Any, generator: Any, num_beams: int
    ) -> None:
        decoded = self._decode(marginalizer, generator, 3, 4, num_beams=num_beams)
        assert len(decoded.sequences) == 3 and decoded.scores.shape == (3,)
        assert torch.isfinite(decoded.scores).all()
        prefix = len(generator.start_token_ids)
        for sequence in decoded.sequences:
            assert sequence[:prefix] == generator.start_token_ids
            assert sequence[-1] == generator.eos_token_id or len(sequence) == self.max_length(
                generator
            )
            assert generator.eos_token_id not in sequence[prefix:-1], "nothing after EOS"

    @pytest.mark.parametrize("num_beams", [1, 3])
    def test_decoding_is_independent_of_the_batch(
        self, marginalizer: Any, generator: Any, num_beams: int
    ) -> None:
        together = self._decode(marginalizer, generator, 3, 4, num_beams=num_beams)
        for b in range(3):
            state = self.start(
                marginalizer, generator, QUESTIONS[b : b + 1], passages_for(3, 4)[b : b + 1]
            )
            alone = marginalizer.decode(
                generator,
                state,
                random_prior(3, 4)[b : b + 1],
                GenerationSettings(max_length=self.max_length(generator), num_beams=num_beams),
            )
            assert alone.sequences[0] == together.sequences[b]
            torch.testing.assert_close(alone.scores[0], together.scores[b])

    def test_one_document_greedy_follows_the_generators_argmax(
        self, marginalizer: Any, generator: Any
    ) -> None:
        decoded = self._decode(marginalizer, generator, 2, 1)
        for b, sequence in enumerate(decoded.sequences):
            state = self.start(
                marginalizer, generator, QUESTIONS[b : b + 1], passages_for(2, 1)[b : b + 1]
            )
            tokens = list(generator.start_token_ids)
            logprobs, state = generator.step(state, torch.tensor([tokens]))
            while len(tokens) < self.max_length(generator):
                tokens.append(int(logprobs.argmax()))
                if tokens[-1] == generator.eos_token_id:
                    break
                logprobs, state = generator.step(state, torch.tensor([[tokens[-1]]]))
            assert sequence == tokens

    def test_greedy_score_is_the_answers_log_likelihood(
        self, pad: int, marginalizer: Any, generator: Any
    ) -> None:
        if not self.decode_score_is_likelihood:
            pytest.skip("this marginalizer's decoding score approximates its likelihood")
        decoded = self._decode(marginalizer, generator, 3, 4)
        state = self.start(marginalizer, generator, QUESTIONS, passages_for(3, 4))
        width = max(len(s) for s in decoded.sequences)
        labels = torch.full((3, width), pad, dtype=torch.int64)
        for b, sequence in enumerate(decoded.sequences):
            labels[b, : len(sequence)] = torch.tensor(sequence)
        rows = self.rows(marginalizer, 4)
        logprobs = generator.score(state, labels.repeat_interleave(rows, dim=0))
        targets = shift_left(labels, pad)
        targets[:, : len(generator.start_token_ids) - 1] = pad  # forced start tokens: not scored
        loss = marginalizer.loss(
            logprobs.view(3, rows, *logprobs.shape[1:]),
            random_prior(3, 4),
            targets,
            pad,
            reduce=False,
        )
        torch.testing.assert_close(decoded.scores, -loss)

    def test_streaming_extends_the_answer_until_decodes_result(
        self, marginalizer: Any, generator: Any
    ) -> None:
        streams = isinstance(marginalizer, StreamsDecoding)  # a bool: marginalizer stays Any
        if not streams:
            pytest.skip("not StreamsDecoding")
        passages = passages_for(2, 3)
        settings = GenerationSettings(max_length=self.max_length(generator))
        state = self.start(marginalizer, generator, QUESTIONS[:2], passages)
        steps = list(marginalizer.stream(generator, state, random_prior(2, 3), settings))
        decoded = self._decode(marginalizer, generator, 2, 3)
        assert steps[-1].sequences == decoded.sequences
        torch.testing.assert_close(steps[-1].scores, decoded.scores)
        for before, after in itertools.pairwise(steps):
            for shorter, longer in zip(before.sequences, after.sequences, strict=True):
                assert longer[: len(shorter)] == shorter and len(longer) <= len(shorter) + 1
        assert len(steps) == max(len(s) for s in decoded.sequences) - len(
            generator.start_token_ids
        ), "one state per generated token"
