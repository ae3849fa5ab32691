"""BartDecoder's log-probs are transformers' forward's, bit for bit, in every way a search
drives it; models it does not compute exactly fall back to transformers' forward."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from ragloom.plugins.bart_decoder import BartDecoder, TransformersDecoder, decoder_for
from ragloom.testing.tiny_models import Size, bart_model

CONTEXTS, LENGTH = 6, 30
VARIANTS = {
    "float32": (torch.float32, {}),
    "bfloat16": (torch.bfloat16, {}),
    "scaled-relu": (torch.float32, {"scale_embedding": True, "activation_function": "relu"}),
}


def random_bart(**config: Any) -> Any:
    """A tiny random BART whose biases, layer-norm affines and final logits bias are all
    random too (an initialized model has them zero or one, which would hide their omission)."""
    model = bart_model(300, seed=3, size=Size(generator_hidden=32, init_std=0.3))
    if config:
        model = type(model)(type(model.config)(**{**model.config.to_dict(), **config})).eval()
    draw = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or "layer_norm" in name or "layernorm" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=draw) * 0.5 + 0.5)
        model.final_logits_bias.copy_(torch.randn(model.final_logits_bias.shape, generator=draw))
    return model


@pytest.fixture(scope="module", params=list(VARIANTS))
def encoded(request: pytest.FixtureRequest) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """A random BART, and its encoding of six contexts, every other one padded."""
    dtype, config = VARIANTS[request.param]
    model = random_bart(**config).to(dtype)
    ids = torch.randint(3, 300, (CONTEXTS, LENGTH), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(CONTEXTS, LENGTH, dtype=torch.long)
    mask[::2, 20:] = 0
    with torch.inference_mode():
        states = model.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
    return model, states, mask


def plain_forward(model: Any, states: torch.Tensor, mask: torch.Tensor, tokens: Any) -> Any:
    """transformers' forward over the whole sequence, no cache: the reference."""
    return model(
        encoder_outputs=(states,), attention_mask=mask, decoder_input_ids=tokens, use_cache=False
    ).logits


def test_the_lean_decoder_is_chosen(encoded: tuple[Any, torch.Tensor, torch.Tensor]) -> None:
    assert isinstance(decoder_for(encoded[0]), BartDecoder)


@pytest.mark.parametrize(
    "contexts", [list(range(CONTEXTS)), [0, 0, 1, 1, 2, 2, 3, 4, 5, 5], [2, 0, 2, 1, 3, 0]]
)
def test_scoring_many_tokens_at_once_is_bitwise_transformers(
    encoded: tuple[Any, torch.Tensor, torch.Tensor], contexts: list[int]
) -> None:
    model, states, mask = encoded
    rows = torch.tensor(contexts)
    labels = torch.randint(3, 300, (len(rows), 7), generator=torch.Generator().manual_seed(1))
    labels[:3, 5:] = model.config.pad_token_id
    decoder = BartDecoder(model)
    with torch.inference_mode():
        ours = decoder.logits(
            decoder.cache(states[rows], mask[rows], rows), states[rows], mask[rows], labels
        )
        assert torch.equal(ours, plain_forward(model, states[rows], mask[rows], labels))


def test_beam_steps_and_reorders_are_bitwise_transformers(
    encoded: tuple[Any, torch.Tensor, torch.Tensor],
) -> None:
    """A first step per context, the rows expanded to 3 beams each (contexts move), then steps
    with beam reorders (contexts stay), as beam search drives a generator; transformers'
    cached forward is the reference, and its first step equals the uncached forward's."""
    model, states, mask = encoded
    start = torch.tensor([[model.config.decoder_start_token_id, 0]]).expand(CONTEXTS, 2)
    steps = []
    for decoder in (BartDecoder(model), TransformersDecoder(model)):
        draw = torch.Generator().manual_seed(2)
        rows = torch.arange(CONTEXTS)
        with torch.inference_mode():
            cache = decoder.cache(states, mask, rows)
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
    with torch.inference_mode():
        assert torch.equal(ours[0], plain_forward(model, states, mask, start)[:, -1])
    assert all(torch.equal(a, b) for a, b in zip(ours, reference, strict=True))
    assert not torch.equal(ours[1], ours[2]), "steps that change nothing prove nothing"


def test_rows_sharing_unsorted_contexts_step_as_their_context(
    encoded: tuple[Any, torch.Tensor, torch.Tensor],
) -> None:
    model, states, mask = encoded
    rows = torch.tensor([2, 0, 2, 1, 3, 0])
    decoder = BartDecoder(model)
    start = torch.tensor([[model.config.decoder_start_token_id]]).expand(len(rows), 1)
    with torch.inference_mode():
        cache = decoder.cache(states[rows], mask[rows], rows)
        ours = decoder.logits(cache, states[rows], mask[rows], start)
        assert torch.equal(ours, plain_forward(model, states[rows], mask[rows], start))
        moved = torch.tensor([5, 1, 0])
        cache = decoder.select(cache, moved, True)
        step = torch.tensor([[7], [8], [9]])
        ours = decoder.logits(cache, states[rows][moved], mask[rows][moved], step)[:, -1]
        whole = torch.cat([start[moved], step], dim=1)
        expected = plain_forward(model, states[rows][moved], mask[rows][moved], whole)[:, -1]
    assert torch.allclose(ours.float(), expected.float(), atol=1e-2, rtol=1e-2)


def test_many_tokens_after_a_cached_one_are_refused(
    encoded: tuple[Any, torch.Tensor, torch.Tensor],
) -> None:
    model, states, mask = encoded
    decoder = BartDecoder(model)
    with torch.inference_mode():
        cache = decoder.cache(states, mask, torch.arange(CONTEXTS))
        decoder.logits(cache, states, mask, torch.zeros(CONTEXTS, 1, dtype=torch.long))
        with pytest.raises(ValueError, match="one at a time"):
            decoder.logits(cache, states, mask, torch.zeros(CONTEXTS, 2, dtype=torch.long))


def test_positions_past_the_model_are_refused(
    encoded: tuple[Any, torch.Tensor, torch.Tensor],
) -> None:
    model, states, mask = encoded
    decoder = BartDecoder(model)
    positions = model.config.max_position_embeddings
    with torch.inference_mode(), pytest.raises(ValueError, match="max_position_embeddings"):
        cache = decoder.cache(states, mask, torch.arange(CONTEXTS))
        decoder.logits(cache, states, mask, torch.zeros(CONTEXTS, positions + 1, dtype=torch.long))


def test_training_mode_is_refused() -> None:
    model = random_bart().train()
    decoder = BartDecoder(model)
    states, mask = torch.zeros(1, 4, model.config.d_model), torch.ones(1, 4, dtype=torch.long)
    cache = decoder.cache(states, mask, torch.arange(1))
    with pytest.raises(ValueError, match="eval mode"):
        decoder.logits(cache, states, mask, torch.zeros(1, 1, dtype=torch.long))


class _Scaled(nn.Linear):
    """A projection whose forward is not F.linear of its weight (an adapter, say)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * super().forward(x)


def _eager(model: Any) -> None:
    model.config._attn_implementation = "eager"


def _quantized(model: Any) -> None:
    model.config.quantization_config = {"load_in_4bit": True}


def _hooked(model: Any) -> None:
    model.model.decoder.layers[0].fc1.register_forward_hook(lambda *args: None)


def _head_hooked(model: Any) -> None:
    model.lm_head.register_forward_pre_hook(lambda *args: None)


def _adapted(model: Any) -> None:
    attention = model.model.decoder.layers[1].self_attn
    replaced = _Scaled(attention.q_proj.in_features, attention.q_proj.out_features)
    attention.q_proj = replaced


@pytest.mark.parametrize("change", [_eager, _quantized, _hooked, _head_hooked, _adapted])
def test_models_it_would_not_compute_exactly_run_transformers_forward(change: Any) -> None:
    model = random_bart()
    change(model)
    assert isinstance(decoder_for(model), TransformersDecoder)


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
    assert isinstance(decoder_for(T5ForConditionalGeneration(config)), TransformersDecoder)
