"""BART's decoder, stepped without transformers' per-call machinery, for the ``bart`` generator.

transformers' ``BartForConditionalGeneration.forward`` is correct and general; per decoding step
it also builds masks, wraps outputs and keeps the cross-attention keys and values as transposed
views of the projection (``[R, S, H, d]`` seen as ``[R, H, S, d]``), which SDPA reads slower than
the same tensor laid out contiguously once the cache outgrows the CPU's caches (2.7x at 80 rows
of a 64-wide model, 1.3x at 768 wide: ``benchmarks/decoder_step.py``).
:class:`BartDecoder` runs the same modules' weights through the same ``torch`` functions in the
same order — the log-probs are bitwise transformers' (tested) — and

- projects each context's cross-attention keys and values once, however many rows (beams,
  rescored hypotheses) read it, and gives every row a contiguous copy;
- grows the self-attention cache by concatenation, as transformers' ``DynamicCache`` does;
- calls the attention as transformers' ``sdpa`` implementation calls it: no mask for the
  self-attention (``is_causal`` when more than one token is fed), a boolean padding mask for the
  cross-attention only when some context is padded.

It applies to a plain ``BartForConditionalGeneration`` (the reference RAG generator) loaded with
SDPA attention (``attention`` ``"sdpa"`` or ``"flash"``): not quantized, its projections plain
``nn.Linear`` without hooks (no adapters); :class:`TransformersDecoder` runs any other seq2seq LM
through transformers' forward and cache. :func:`decoder_for` picks one; both follow
:class:`Decoder`. Training uses neither (``BartGenerator.score`` runs transformers' forward
without a cache, as gradient checkpointing requires), and ``BartDecoder`` refuses a model in
training mode (it has no dropout).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from .hf_loading import cache_argument


class Decoder(Protocol):
    """Decoding steps of a seq2seq LM over ``R`` rows, each reading one encoded context.

    ``encoder_states [R, S, D]`` and ``attention_mask [R, S]`` are each row's context, encoded;
    ``contexts`` (``int64 [R]``) says which rows read the same context (equal values), so that
    its cross-attention keys and values are computed once; ``rows`` indexes the previous ``R``.
    A cache is consumed by ``logits`` (it grows) and by ``select`` (use the one it returns).
    """

    def cache(
        self, encoder_states: torch.Tensor, attention_mask: torch.Tensor, contexts: torch.Tensor
    ) -> Any:
        """An empty cache for rows reading ``contexts``."""
        ...

    def logits(
        self,
        cache: Any,
        encoder_states: torch.Tensor,
        attention_mask: torch.Tensor,
        tokens: torch.Tensor,
    ) -> torch.Tensor:
        """Logits ``[R, T, V]`` after each of ``tokens`` (``int64 [R, T]``, following the
        cached tokens; ``T > 1`` only on an empty cache); ``cache`` grows by ``T``. The rows'
        ``encoder_states`` and ``attention_mask`` are what transformers' forward reads at every
        call; a cache that holds their keys and values already may ignore them."""
        ...

    def select(self, cache: Any, rows: torch.Tensor, contexts_move: bool) -> Any:
        """The cache of rows ``rows``; ``contexts_move`` is False when every row keeps its
        context (a beam reorder), so the cross-attention part stays."""
        ...


def _shared(contexts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For rows reading ``contexts``: the first row reading each distinct context, and which of
    those each row reads (``rows == first[inverse]`` in context)."""
    distinct, inverse = torch.unique(contexts, return_inverse=True)
    rows = torch.arange(len(inverse), device=inverse.device)
    first = torch.full_like(distinct, len(inverse)).scatter_reduce(0, inverse, rows, "amin")
    return first, inverse


def _plain_bart(model: Any) -> bool:
    """Whether ``model`` computes exactly what :class:`BartDecoder` computes from its weights."""
    from transformers import BartForConditionalGeneration

    if type(model) is not BartForConditionalGeneration:
        return False
    config = model.config
    if config._attn_implementation != "sdpa" or getattr(config, "quantization_config", None):
        return False
    decoder = model.model.decoder
    projections = [model.lm_head]
    for layer in decoder.layers:
        projections += [layer.fc1, layer.fc2]
        for a in (layer.self_attn, layer.encoder_attn):
            projections += [a.q_proj, a.k_proj, a.v_proj, a.out_proj]
    watched = [model, model.model, model.lm_head, *decoder.modules()]
    hooked = any(m._forward_hooks or m._forward_pre_hooks for m in watched)
    return all(type(p) is nn.Linear for p in projections) and not hooked


def decoder_for(model: Any) -> Decoder:
    """:class:`BartDecoder` where it computes what ``model``'s forward computes, else
    :class:`TransformersDecoder`."""
    return BartDecoder(model) if _plain_bart(model) else TransformersDecoder(model)


class TransformersDecoder:
    """Any seq2seq LM through its transformers forward and ``EncoderDecoderCache``; when several
    rows read one context, its cross-attention keys and values are computed once and shared."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self._cache_argument = cache_argument(model)
        self._start = int(model.config.decoder_start_token_id)

    def _forward(
        self, cache: Any, states: torch.Tensor, mask: torch.Tensor, tokens: torch.Tensor
    ) -> Any:
        return self.model(
            encoder_outputs=(states,),
            attention_mask=mask,
            decoder_input_ids=tokens,
            use_cache=True,
            **{self._cache_argument: cache},
        )

    def cache(
        self, encoder_states: torch.Tensor, attention_mask: torch.Tensor, contexts: torch.Tensor
    ) -> Any:
        from transformers import DynamicCache, EncoderDecoderCache

        first, inverse = _shared(contexts)
        if len(first) == len(inverse):
            return EncoderDecoderCache(DynamicCache(), DynamicCache())
        probe = EncoderDecoderCache(DynamicCache(), DynamicCache())
        start = torch.full((len(first), 1), self._start, device=encoder_states.device)
        self._forward(probe, encoder_states[first], attention_mask[first], start)
        cross = probe.cross_attention_cache
        cross.reorder_cache(inverse)
        return EncoderDecoderCache(DynamicCache(), cross)

    def logits(
        self,
        cache: Any,
        encoder_states: torch.Tensor,
        attention_mask: torch.Tensor,
        tokens: torch.Tensor,
    ) -> torch.Tensor:
        logits: torch.Tensor = self._forward(cache, encoder_states, attention_mask, tokens).logits
        return logits

    def select(self, cache: Any, rows: torch.Tensor, contexts_move: bool) -> Any:
        cache.self_attention_cache.reorder_cache(rows)
        if contexts_move:
            cache.cross_attention_cache.reorder_cache(rows)
        return cache


@dataclass
class DecoderCache:
    """Per decoder layer: self-attention keys and values ``[R, H, t, d]`` (``None`` before the
    first step), cross-attention keys and values ``[R, H, S, d]`` (contiguous), and the
    cross-attention mask ``bool [R, 1, 1, S]`` (``None`` when no context is padded)."""

    self_keys: list[torch.Tensor | None]
    self_values: list[torch.Tensor | None]
    cross_keys: list[torch.Tensor]
    cross_values: list[torch.Tensor]
    cross_mask: torch.Tensor | None

    @property
    def length(self) -> int:
        """Decoder tokens cached so far."""
        first = self.self_keys[0]
        return 0 if first is None else first.shape[2]

    def select(self, rows: torch.Tensor, contexts_move: bool) -> DecoderCache:
        """The cache of rows ``rows`` (see :meth:`Decoder.select`)."""

        def pick(tensors: list[Any]) -> list[Any]:
            return [None if t is None else t.index_select(0, rows) for t in tensors]

        cross_keys, cross_values, mask = self.cross_keys, self.cross_values, self.cross_mask
        if contexts_move:
            cross_keys, cross_values = pick(cross_keys), pick(cross_values)
            mask = None if mask is None else mask.index_select(0, rows)
        return DecoderCache(
            pick(self.self_keys), pick(self.self_values), cross_keys, cross_values, mask
        )


class BartDecoder:
    """The lean decoder and output head of a ``BartForConditionalGeneration`` (see the module
    docstring). Holds references to the model's modules, so weights loaded or trained later
    are the ones it reads."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.decoder = model.model.decoder
        attention = self.decoder.layers[0].self_attn
        self.head_dim = int(attention.head_dim)
        self.scaling = float(attention.scaling)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """``[R, T, H * d]`` → ``[R, H, T, d]`` (a view, as transformers makes it)."""
        rows, length, _ = x.shape
        return x.view(rows, length, -1, self.head_dim).transpose(1, 2)

    def cache(
        self, encoder_states: torch.Tensor, attention_mask: torch.Tensor, contexts: torch.Tensor
    ) -> DecoderCache:
        """An empty cache for rows reading ``contexts``: cross-attention keys and values
        computed once per distinct context, then one contiguous copy per row."""
        first, inverse = _shared(contexts)
        shared = len(first) < len(inverse)
        states = encoder_states.index_select(0, first) if shared else encoder_states
        keys, values = [], []
        for layer in self.decoder.layers:
            projection = layer.encoder_attn
            key = self._heads(self._project(projection.k_proj, states))
            value = self._heads(self._project(projection.v_proj, states))
            if shared:
                keys.append(key.index_select(0, inverse))
                values.append(value.index_select(0, inverse))
            else:
                keys.append(key.contiguous())
                values.append(value.contiguous())
        padded = None if bool(attention_mask.all()) else attention_mask.bool()[:, None, None, :]
        layers = len(self.decoder.layers)
        return DecoderCache([None] * layers, [None] * layers, keys, values, padded)

    def _attend(
        self,
        projection: Any,
        hidden: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        mask: torch.Tensor | None,
        causal: bool,
    ) -> torch.Tensor:
        rows, length, _ = hidden.shape
        query = self._heads(self._project(projection.q_proj, hidden))
        attended = F.scaled_dot_product_attention(
            query,
            keys,
            values,
            attn_mask=mask,
            scale=self.scaling,
            is_causal=causal,
        )
        merged = attended.transpose(1, 2).reshape(rows, length, -1)
        return self._project(projection.out_proj, merged)

    @staticmethod
    def _norm(norm: Any, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)

    @staticmethod
    def _project(linear: Any, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, linear.weight, linear.bias)

    def logits(
        self,
        cache: DecoderCache,
        encoder_states: torch.Tensor,
        attention_mask: torch.Tensor,
        tokens: torch.Tensor,
    ) -> torch.Tensor:
        """Logits ``[R, T, V]`` (see :meth:`Decoder.logits`; the encoder's keys, values and
        mask are in ``cache``)."""
        decoder, length = self.decoder, tokens.shape[1]
        if self.model.training:
            raise ValueError("BartDecoder runs in eval mode only (it applies no dropout)")
        if length > 1 and cache.length:
            raise ValueError(f"{length} tokens fed after {cache.length} cached: one at a time")
        table = decoder.embed_positions
        start = cache.length + table.offset
        if start + length > table.num_embeddings:
            raise ValueError(
                f"decoder position {cache.length + length - 1} is past the model's "
                f"{table.num_embeddings - table.offset} positions (max_position_embeddings)"
            )
        positions = table.weight[start : start + length]
        hidden = self._norm(decoder.layernorm_embedding, decoder.embed_tokens(tokens) + positions)
        for i, layer in enumerate(decoder.layers):
            projection = layer.self_attn
            key = self._heads(self._project(projection.k_proj, hidden))
            value = self._heads(self._project(projection.v_proj, hidden))
            cached_key, cached_value = cache.self_keys[i], cache.self_values[i]
            if cached_key is not None and cached_value is not None:  # both or neither
                key = torch.cat([cached_key, key], dim=2)
                value = torch.cat([cached_value, value], dim=2)
            cache.self_keys[i], cache.self_values[i] = key, value
            attended = self._attend(projection, hidden, key, value, None, length > 1)
            hidden = self._norm(layer.self_attn_layer_norm, hidden + attended)
            attended = self._attend(
                layer.encoder_attn,
                hidden,
                cache.cross_keys[i],
                cache.cross_values[i],
                cache.cross_mask,
                False,
            )
            hidden = self._norm(layer.encoder_attn_layer_norm, hidden + attended)
            inner = layer.activation_fn(self._project(layer.fc1, hidden))
            hidden = self._norm(layer.final_layer_norm, hidden + self._project(layer.fc2, inner))
        logits = F.linear(hidden, self.model.lm_head.weight)
        return logits + self.model.final_logits_bias.to(logits.device)

    def select(self, cache: DecoderCache, rows: torch.Tensor, contexts_move: bool) -> DecoderCache:
        return cache.select(rows, contexts_move)
