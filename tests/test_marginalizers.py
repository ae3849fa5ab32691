"""rag-token, rag-sequence and fusion: the contract, and the reference's loss formulas."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from ragloom.errors import RagloomError
from ragloom.plugins.marginalizers import Fusion, RagSequence, RagToken
from ragloom.protocols import PassageText
from ragloom.testing import MarginalizerContract
from ragloom.testing.table_generator import TableGenerator


class TestRagTokenContract(MarginalizerContract):
    @pytest.fixture
    def marginalizer(self) -> RagToken:
        return RagToken()


class TestRagSequenceThoroughContract(MarginalizerContract):
    @pytest.fixture
    def marginalizer(self) -> RagSequence:
        return RagSequence()


class TestRagSequenceFastContract(MarginalizerContract):
    decode_score_is_likelihood = False

    @pytest.fixture
    def marginalizer(self) -> RagSequence:
        return RagSequence(RagSequence.Params(decoding="fast"))


class TestFusionContract(MarginalizerContract):
    @pytest.fixture(params=["best-first", "best-last"])
    def marginalizer(self, request: pytest.FixtureRequest) -> Fusion:
        return Fusion(Fusion.Params(order=request.param))


class _RecordingGenerator(TableGenerator):
    """Records the passage order ``start_fused`` receives."""

    def start_fused(self, questions: Any, passages: Any) -> Any:
        self.read = [[passage.id for passage in row] for row in passages]
        return super().start_fused(questions, passages)


@pytest.mark.parametrize(
    ("order", "expected"), [("best-first", [5, 6, 7]), ("best-last", [7, 6, 5])]
)
def test_fusion_reads_passages_in_its_order(order: str, expected: list[int]) -> None:
    generator = _RecordingGenerator()
    passages = [[PassageText(i, "t", "x") for i in (5, 6, 7)]]
    Fusion(Fusion.Params(order=order)).start(generator, ["q"], passages)
    assert generator.read == [expected]


def test_fusion_refuses_a_generator_without_fused_reading() -> None:
    class PerPassageOnly:  # the Generator protocol without start_fused
        pass

    with pytest.raises(RagloomError, match="FusedReading"):
        Fusion().start(PerPassageOnly(), ["q"], [[PassageText(0, "t", "x")]])  # type: ignore[arg-type]


def test_fusion_loss_wants_one_row_per_question() -> None:
    with pytest.raises(ValueError, match=r"\[B, 1, T, V\]"):
        Fusion().loss(torch.zeros(2, 3, 4, 5), torch.zeros(2, 3), torch.zeros(2, 4).long(), 0)


def reference_inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random logits ``[2*3, 5, 11]``, doc scores ``[2, 3]`` and labels ``[2, 5]`` (pad 1)."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(6, 5, 11, generator=generator)
    doc_scores = torch.randn(2, 3, generator=generator) * 3
    labels = torch.tensor([[0, 4, 5, 6, 2], [0, 7, 2, 1, 1]])
    return logits, doc_scores, labels


def hf_target(labels: torch.Tensor, pad: int) -> torch.Tensor:
    return torch.cat([labels[:, 1:], labels.new_full((labels.shape[0], 1), pad)], 1)


def hf_token_nll(logits, doc_scores, labels, pad, reduce, eps):  # type: ignore[no-untyped-def]
    """transformers' RagTokenForGeneration.get_nll, transcribed from hf_rag.md §6."""
    target = hf_target(labels, pad)
    n = doc_scores.shape[1]
    lp = torch.log_softmax(logits, -1).view(labels.shape[0], n, -1, logits.shape[-1])
    marg = torch.logsumexp(lp + torch.log_softmax(doc_scores, 1)[:, :, None, None], dim=1)
    mask = target.eq(pad)
    ll = marg.gather(-1, target[..., None]).squeeze(-1).masked_fill(mask, 0).sum(1)
    smooth = marg.sum(-1).masked_fill(mask, 0).sum(1)
    nll, sl = -ll, -smooth
    if reduce:
        nll, sl = nll.sum(), sl.sum()
    return (1 - eps) * nll + eps / logits.shape[-1] * sl


def hf_sequence_nll(logits, doc_scores, labels, pad, reduce, eps):  # type: ignore[no-untyped-def]
    """transformers' RagSequenceForGeneration.get_nll (prior added at position 1)."""
    target = hf_target(labels, pad)
    batch, n = doc_scores.shape
    lp = torch.log_softmax(logits, -1).view(batch, n, -1, logits.shape[-1])
    dl = torch.log_softmax(doc_scores, 1)[:, :, None, None]
    rag_lp = torch.cat([lp[:, :, :1], lp[:, :, 1:2] + dl, lp[:, :, 2:]], dim=2)
    expanded = target[:, None, :, None].expand(-1, n, -1, -1)
    mask = expanded.eq(pad)
    ll = rag_lp.gather(-1, expanded).masked_fill(mask, 0).squeeze(-1).sum(2)
    smooth = rag_lp.sum(-1, keepdim=True).masked_fill(mask, 0).squeeze(-1).sum(2)
    ll, smooth = torch.logsumexp(ll, 1), torch.logsumexp(smooth, 1)
    nll, sl = -ll, -smooth
    if reduce:
        nll, sl = nll.sum(), sl.sum()
    return (1 - eps) * nll + eps / logits.shape[-1] * sl


@pytest.mark.parametrize("reduce", [True, False])
@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize(
    ("marginalizer", "reference"),
    [(RagToken(), hf_token_nll), (RagSequence(), hf_sequence_nll)],
    ids=["rag-token", "rag-sequence"],
)
def test_losses_match_the_reference_formulas(marginalizer, reference, reduce, eps) -> None:  # type: ignore[no-untyped-def]
    logits, doc_scores, labels = reference_inputs()
    expected = reference(logits, doc_scores, labels, 1, reduce, eps)
    logprobs = torch.log_softmax(logits, -1).view(2, 3, 5, 11)
    got = marginalizer.loss(
        logprobs, torch.log_softmax(doc_scores, 1), hf_target(labels, 1), 1, reduce, eps
    )
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


def test_token_and_sequence_losses_differ() -> None:
    logits, doc_scores, labels = reference_inputs(1)
    logprobs = torch.log_softmax(logits, -1).view(2, 3, 5, 11)
    prior, target = torch.log_softmax(doc_scores, 1), hf_target(labels, 1)
    assert not torch.isclose(
        RagToken().loss(logprobs, prior, target, 1), RagSequence().loss(logprobs, prior, target, 1)
    )


def test_sequence_prior_survives_a_one_token_target() -> None:
    """The reference adds the prior at position 1 and loses it when that is padding."""
    logits, doc_scores, _ = reference_inputs(2)
    labels = torch.tensor([[0, 2, 1, 1, 1], [0, 2, 1, 1, 1]])
    logprobs = torch.log_softmax(logits, -1).view(2, 3, 5, 11)
    prior = torch.log_softmax(doc_scores, 1)
    ours = RagSequence().loss(logprobs, prior, hf_target(labels, 1), 1, reduce=False)
    step = logprobs[:, :, 0].gather(-1, torch.full((2, 3, 1), 2)).squeeze(-1)
    torch.testing.assert_close(ours, -torch.logsumexp(step + prior, 1))
