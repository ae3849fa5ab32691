"""BartDecoder's log-probs are transformers' forward's, bit for bit, in every way a search
drives it; models it does not compute fall back to transformers' forward."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from ragloom.plugins.bart_decoder import BartDecoder, TransformersDecoder, decoder_for
from ragloom.testing.tiny_models import Size, bart_model

CONTEXTS, LENGTH = 6, 30


@pytest.fixture(scope="module", params=["float32", "bfloat16"])
def encoded(request: pytest.FixtureRequest) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """A random BART, and its encoding of six contexts, every other one padded."""
    model = bart_model(300, seed=3, size=Size(generator_hidden=32, init_std=0.3)).eval()
    model.to(getattr(torch, request.param))
    ids = torch.randint(3, 300, (CONTEXTS, LENGTH), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(CONTEXTS, LENGTH, dtype=torch.long)
    mask[::2, 20:] = 0
    with torch.inference_mode():
        states = model.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
    return model, states, mask


def both(model: Any) -> list[Any]:
    return [BartDecoder(model), TransformersDecoder(model)]


@pytest.mark.parametrize("contexts", [list(range(CONTEXTS)), [0, 0, 1, 1, 2, 2, 3, 4, 5, 5]])
def test_scoring_many_tokens_at_once_is_bitwise_transformers(
    encoded: tuple[Any, torch.Tensor, torch.Tensor], contexts: list[int]
) -> None:
    model, states, mask = encoded
    rows = torch.tensor(contexts)
    labels = torch.randint(3, 300, (len(rows), 7), generator=torch.Generator().manual_seed(1))
    labels[:3, 5:] = model.config.pad_token_id
    with torch.inference_mode():
        ours, reference = (
            decoder.logits(
                decoder.cache(states[rows], mask[rows], rows), states[rows], mask[rows], labels
            )
            for decoder in both(model)
        )
    assert torch.equal(ours, reference)


def test_beam_steps_and_reorders_are_bitwise_transformers(
    encoded: tuple[Any, torch.Tensor, torch.Tensor],
) -> None:
    """A first step per context, the rows expanded to 3 beams each (contexts move), then steps
    with beam reorders (contexts stay), as beam search drives a generator."""
    model, states, mask = encoded
    steps = []
    for decoder in both(model):
        draw = torch.Generator().manual_seed(2)
        rows = torch.arange(CONTEXTS)
        cache = decoder.cache(states, mask, rows)
        start = torch.tensor([[model.config.decoder_start_token_id, 0]]).expand(CONTEXTS, 2)
        with torch.inference_mode():
            logits = [decoder.logits(cache, states, mask, start)[:, -1]]
            beams = rows.repeat_interleave(3)
            cache = decoder.select(cache, beams, True)
            for _ in range(5):
                tokens = torch.randint(3, 300, (len(beams), 1), generator=draw)
                logits.append(decoder.logits(cache, states[beams], mask[beams], tokens)[:, -1])
                kept = torch.randint(0, 3, (CONTEXTS, 3), generator=draw)
                cache = decoder.select(cache, (rows[:, None] * 3 + kept).view(-1), False)
        steps.append(logits)
    ours, reference = steps
    assert all(torch.equal(a, b) for a, b in zip(ours, reference, strict=True))
    assert not torch.equal(ours[1], ours[2]), "steps that change nothing prove nothing"


def test_many_tokens_after_a_cached_one_are_refused(
    encoded: tuple[Any, torch.Tensor, torch.Tensor],
) -> None:
    model, states, mask = encoded
    decoder = BartDecoder(model)
    cache = decoder.cache(states, mask, torch.arange(CONTEXTS))
    with torch.inference_mode():
        decoder.logits(cache, states, mask, torch.zeros(CONTEXTS, 1, dtype=torch.long))
        with pytest.raises(ValueError, match="one at a time"):
            decoder.logits(cache, states, mask, torch.zeros(CONTEXTS, 2, dtype=torch.long))


@pytest.mark.parametrize(
    ("attention", "quantization", "lean"),
    [
        ("sdpa", "none", True),
        ("flash", "none", True),
        ("eager", "none", False),
        ("sdpa", "4bit", False),
        ("sdpa", "8bit", False),
    ],
)
def test_the_lean_decoder_runs_only_what_it_computes_exactly(
    encoded: tuple[Any, torch.Tensor, torch.Tensor], attention: str, quantization: str, lean: bool
) -> None:
    decoder = decoder_for(encoded[0], attention, quantization)
    assert isinstance(decoder, BartDecoder if lean else TransformersDecoder)


def test_other_seq2seq_models_run_transformers_forward() -> None:
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(
        vocab_size=64,
        d_model=16,
        d_ff=32,
        d_kv=8,
        num_layers=1,
        num_heads=2,
        decoder_start_token_id=0,
    )
    decoder = decoder_for(T5ForConditionalGeneration(config), "sdpa", "none")
    assert isinstance(decoder, TransformersDecoder)
