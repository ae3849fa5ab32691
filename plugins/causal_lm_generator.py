"""Generator ``causal-lm``: any transformers causal LM (Llama, SmolLM2, GPT-2...) as a RAG reader.

Each (passage, question) becomes a prompt from ``prompt`` (placed in a user turn of the chat
template when the tokenizer has one). Prompts are left-padded and prefilled once in ``start``;
the tokens that open an answer (the chat template's assistant header, or ``answer_prefix``) are
the same for every row, so they are the generator's ``start_token_ids`` and the marginalizers
drive this generator exactly as they drive a seq2seq one.

``select`` builds new cache tensors instead of reordering in place, so the prefilled state can be
selected from many times (rag-sequence rescoring) and ``score`` never disturbs it.

In training mode (``model.train()``, set by ``ragloom train``) ``start`` prefills nothing and
``score`` runs prompt and labels through the model in one pass without a cache, as gradient
checkpointing requires.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ragloom.context import BuildContext
from ragloom.errors import RagloomError
from ragloom.preflight import DecoderShape
from ragloom.protocols import PassageText, TrainableModel
from ragloom.rag_checkpoint import ModelDirectoryError, load_rag_part
from ragloom.spec import Device, SpecPath

from . import hf_loading
from .hf_loading import (
    AUTO_DTYPE,
    DtypeName,
    cache_argument,
    checked_weights,
    generator_config,
    load_pretrained,
    on_device,
    resolve_dtype,
)

log = logging.getLogger(__name__)

PROMPT_FIELDS = ("title", "text", "question")
"""The placeholders a prompt may use."""

DEFAULT_PROMPT = (
    "Answer the question from the passage in a few words.\n\n"
    "Passage ({title}): {text}\n\nQuestion: {question}"
)

FUSED_PROMPT_FIELDS = ("passages", "question")
"""The placeholders a fused prompt may use: ``{passages}`` holds every passage."""
FUSED_PASSAGE_FIELDS = ("title", "text")

DEFAULT_FUSED_PROMPT = (
    "Answer the question from the passages in a few words.\n\n{passages}\n\nQuestion: {question}"
)
DEFAULT_FUSED_PASSAGE = "Passage ({title}): {text}"


def check_prompt(prompt: str, fields: Sequence[str] = PROMPT_FIELDS) -> list[str]:
    """Refuse a prompt that ``str.format`` cannot fill with ``fields`` (a passage's title and
    text and the question): an unknown ``{name}``, a positional ``{}``, or an unmatched brace.
    Returns the placeholders it uses."""
    import string

    allowed = ", ".join(f"{{{name}}}" for name in fields)
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(prompt) if name is not None]
    except ValueError as error:
        raise ValueError(
            f"the prompt is not a format string ({error}); write {{{{ and }}}} for literal braces"
        ) from None
    unknown = [name for name in names if name not in fields]
    if unknown:
        raise ValueError(
            f"the prompt has the placeholder {{{unknown[0]}}}; a prompt can use {allowed} "
            f"(write {{{{ and }}}} for literal braces)"
        )
    return names


@dataclass
class CausalState:
    """``R`` rows: the attention mask over prompt and answer so far, the next position of each
    row, and the key/value cache; in training mode, the prompt tokens instead of a cache."""

    attention_mask: torch.Tensor
    next_position: torch.Tensor
    cache: Any
    prompt_ids: torch.Tensor | None = None


class CausalLMGenerator:
    """The ``causal-lm`` generator (see the module docstring)."""

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        path: SpecPath | None = Field(
            default=None,
            description="a transformers causal LM directory (default: [pipeline] checkpoint's)",
        )
        gguf_file: str | None = Field(
            default=None, description="a GGUF file inside path to load (dequantized) instead"
        )
        prompt: str = Field(
            default=DEFAULT_PROMPT, description="prompt with {title}, {text} and {question}"
        )
        answer_prefix: str = Field(
            default="\nAnswer:", description="what opens an answer when there is no chat template"
        )
        chat_template: bool = Field(
            default=True, description="use the tokenizer's chat template when it has one"
        )
        max_prompt_length: int = Field(default=512, ge=8, description="prompt tokens kept (left)")
        fused_prompt: str = Field(
            default=DEFAULT_FUSED_PROMPT,
            description="the prompt of the fusion marginalizer, with {passages} and {question}",
        )
        fused_passage: str = Field(
            default=DEFAULT_FUSED_PASSAGE,
            description="how each passage is written into {passages} (with {title} and {text}); "
            "passages are separated by a blank line",
        )
        max_fused_prompt_length: int = Field(
            default=2048,
            ge=8,
            description="tokens of a fused prompt; longer ones have their passages cut to fit",
        )
        dtype: DtypeName = Field(default="float32", description=AUTO_DTYPE)
        attention: Literal["eager", "sdpa"] = "sdpa"
        device: Device = Field(
            default="cpu", description='"cpu", "cuda", "cuda:N" or "auto" (CUDA when present)'
        )

        @field_validator("prompt")
        @classmethod
        def _placeholders(cls, prompt: str) -> str:
            check_prompt(prompt)
            return prompt

        @field_validator("fused_prompt")
        @classmethod
        def _fused_placeholders(cls, prompt: str) -> str:
            check_prompt(prompt, FUSED_PROMPT_FIELDS)
            return prompt

        @field_validator("fused_passage")
        @classmethod
        def _passage_placeholders(cls, passage: str) -> str:
            check_prompt(passage, FUSED_PASSAGE_FIELDS)
            return passage

        @field_validator("answer_prefix")
        @classmethod
        def _opening(cls, prefix: str) -> str:
            if not prefix:
                raise ValueError(
                    'answer_prefix = "" leaves an answer without an opening token, which '
                    'decoding and training start from; keep the default "\\nAnswer:" or '
                    "write another (it is used when chat_template = false or the tokenizer has "
                    "no chat template)"
                )
            return prefix

    def __init__(self, model: Any, tokenizer: Any, params: Params) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.params = params
        self.device = torch.device(params.device)
        generation = getattr(model, "generation_config", None)
        eos = getattr(generation, "eos_token_id", None)
        if isinstance(eos, list):
            eos = eos[0]
        self.eos_token_id = int(eos if eos is not None else tokenizer.eos_token_id)
        pad = tokenizer.pad_token_id
        self.pad_token_id = int(pad if pad is not None else self.eos_token_id)
        self.vocab_size = int(model.config.vocab_size)
        self.forced_eos_token_id: int | None = None
        self.special_token_ids = frozenset(int(i) for i in tokenizer.all_special_ids)
        self.use_chat = params.chat_template and getattr(tokenizer, "chat_template", None)
        self.start_token_ids = self._answer_opening()
        self._cache_argument = cache_argument(model)
        self._said_cut = False

    @classmethod
    def from_spec(cls, params: Any, context: BuildContext, **children: Any) -> CausalLMGenerator:
        from transformers import AutoModelForCausalLM

        params = on_device(params, "[generator] device")
        loading: dict[str, Any] = {"dtype": resolve_dtype(params.dtype, params.device)}
        if params.path is None:
            if context.pipeline.checkpoint is None or params.gguf_file is not None:
                raise ModelDirectoryError(
                    "[generator] needs path = a causal LM directory (gguf_file needs one too), "
                    "or [pipeline] checkpoint = a RAG checkpoint directory."
                )
            checkpoint = context.resolve_path(context.pipeline.checkpoint)
            model, tokenizer = load_rag_part(
                checkpoint, "generator", attn_implementation=params.attention, **loading
            )
            return cls(model.to(params.device), tokenizer, params)
        directory = context.resolve_path(params.path)
        if params.gguf_file is not None:
            weights = directory / params.gguf_file
            if not weights.is_file():
                raise ModelDirectoryError(f"[generator] gguf_file {weights} does not exist.")
        else:
            weights = checked_weights(directory)
        model, tokenizer = load_pretrained(
            AutoModelForCausalLM,
            directory,
            weights,
            params.gguf_file,
            attn_implementation=params.attention,
            **loading,
        )
        return cls(model.to(params.device), tokenizer, params)

    @classmethod
    def decoder_shape_from_spec(cls, params: Any, context: BuildContext) -> DecoderShape:
        """Decoding's memory and position limits, from the model's config: every row caches
        its prompt and answer; prompt and answer share the model's positions."""
        if params.gguf_file is not None:
            raise RagloomError(f"gguf_file {params.gguf_file}: read when the model is built.")
        config = generator_config(params, context)
        heads = int(config["num_attention_heads"])
        head_dim = int(config.get("head_dim") or int(config["hidden_size"]) // heads)
        positions = config.get("max_position_embeddings") or config.get("n_positions")

        def shape(prompt: int, fused: DecoderShape | None = None) -> DecoderShape:
            return DecoderShape(
                vocab_size=int(config["vocab_size"]),
                layers=int(config["num_hidden_layers"]),
                kv_width=int(config.get("num_key_value_heads") or heads) * head_dim,
                context_tokens=prompt,
                value_bytes=resolve_dtype(params.dtype, params.device).itemsize,
                answer_positions=int(positions) - prompt if positions else None,
                fused=fused,
            )

        return shape(params.max_prompt_length, shape(params.max_fused_prompt_length))

    # --- prompts ------------------------------------------------------------------------------

    def _user_turn(self, text: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": text}]

    def _chat_ids(self, text: str, opening: bool) -> list[int]:
        ids = self.tokenizer.apply_chat_template(
            self._user_turn(text), add_generation_prompt=opening, tokenize=True
        )
        if not isinstance(ids, list):  # transformers 5 returns a BatchEncoding
            ids = ids["input_ids"]
        return [int(i) for i in ids]

    def _answer_opening(self) -> list[int]:
        """The tokens every answer starts with: the chat template's assistant header."""
        if not self.use_chat:
            opening = self._plain_ids(self.params.answer_prefix)
            if not opening:
                raise ModelDirectoryError(
                    f"[generator] answer_prefix = {self.params.answer_prefix!r} is no token in "
                    f"this tokenizer; an answer needs an opening token to start from. Write "
                    f'another answer_prefix (the default is "\\nAnswer:").'
                )
            return opening
        bare, opened = self._chat_ids("x", False), self._chat_ids("x", True)
        if opened[: len(bare)] != bare or len(opened) == len(bare):
            raise ModelDirectoryError(
                "[generator] the tokenizer's chat template does not end a prompt with a fixed "
                "assistant header; set chat_template = false."
            )
        return opened[len(bare) :]

    def _prompt_tokens(self, text: str) -> list[int]:
        """A prompt's tokens, in a user turn of the chat template when it is used."""
        if self.use_chat:
            return self._chat_ids(text, False)
        return [int(i) for i in self.tokenizer(text)["input_ids"]]

    def prompt_ids(self, question: str, passage: PassageText) -> list[int]:
        """The prompt of one context, without the answer opening, cut to the last tokens."""
        text = self.params.prompt.format(title=passage.title, text=passage.text, question=question)
        return self._prompt_tokens(text)[-self.params.max_prompt_length :]

    def fused_prompt_ids(
        self, question: str, passages: Sequence[PassageText]
    ) -> tuple[list[int], bool]:
        """The fused prompt of one question over its passages in the order given (missing
        ones, id ``-1``, left out), without the answer opening; and whether passages were cut.

        A prompt over ``max_fused_prompt_length`` tokens has its passages' texts cut to a common
        cap of tokens (the longest are cut first) until it fits; a prompt that does not fit
        even with empty passages keeps its last tokens."""
        present = [passage for passage in passages if passage.id >= 0]
        texts = [self._plain_ids(passage.text) for passage in present]
        limit = self.params.max_fused_prompt_length
        cap = max((len(text) for text in texts), default=0)
        while True:
            ids = self._prompt_tokens(self._fused_text(question, present, texts, cap))
            if len(ids) <= limit or cap == 0:
                cut = cap < max((len(text) for text in texts), default=0)
                return ids[-limit:], cut or len(ids) > limit
            cap = _cap_dropping(texts, cap, len(ids) - limit)

    def _fused_text(
        self, question: str, present: Sequence[PassageText], texts: list[list[int]], cap: int
    ) -> str:
        written = [
            self.params.fused_passage.format(
                title=passage.title,
                text=passage.text if len(ids) <= cap else self.tokenizer.decode(ids[:cap]),
            )
            for passage, ids in zip(present, texts, strict=True)
        ]
        return self.params.fused_prompt.format(passages="\n\n".join(written), question=question)

    # --- the Generator protocol ---------------------------------------------------------------

    def start(
        self, questions: Sequence[str], passages: Sequence[Sequence[PassageText]]
    ) -> CausalState:
        return self._prefill(
            [
                self.prompt_ids(question, passage)
                for question, row in zip(questions, passages, strict=True)
                for passage in row
            ]
        )

    def start_fused(
        self, questions: Sequence[str], passages: Sequence[Sequence[PassageText]]
    ) -> CausalState:
        """One prompt per question holding all its passages (``fused_prompt``); passages are
        cut to fit ``max_fused_prompt_length``, and the first time that happens it is said."""
        fused = [
            self.fused_prompt_ids(question, row)
            for question, row in zip(questions, passages, strict=True)
        ]
        cut = sum(was_cut for _, was_cut in fused)
        if cut and not self._said_cut:
            self._said_cut = True
            log.warning(
                "causal-lm: %d of %d fused prompts were longer than max_fused_prompt_length = "
                "%d tokens; their passages were cut to fit. Raise max_fused_prompt_length in "
                "[generator] (within the model's context length) or lower n_docs.",
                cut,
                len(fused),
                self.params.max_fused_prompt_length,
            )
        return self._prefill([ids for ids, _ in fused])

    def _prefill(self, prompts: list[list[int]]) -> CausalState:
        """Run the prompts through the model, filling the cache (in training mode, keep them
        left-padded for ``score`` instead).

        The tokens every prompt starts with (the chat template's system turn, the instruction,
        a few-shot prompt's worked examples: :func:`shared_prefix`) run once, and their cache is
        shared by every row. The rest of each prompt follows it, left-padded with masked
        positions; rows of similar length run together (:func:`length_groups`) and their caches
        are laid side by side, so a batch of short and long prompts costs its real tokens. The
        prompt's logits are never read, so the prefill runs the model without its output layer
        (at SmolLM2's vocabulary, about a fifth of the work per prompt token)."""
        if self.model.training:
            ids, mask = self._left_padded(prompts)
            return CausalState(mask, mask.sum(1), None, ids)
        from transformers import DynamicCache

        shared = shared_prefix(prompts)
        prefix = self._prefix_cache(prompts[0][:shared]) if shared else None
        suffixes = [prompt[shared:] for prompt in prompts]
        _, suffix_mask = self._left_padded(suffixes)
        width = suffix_mask.shape[1]
        layers: list[tuple[list[torch.Tensor], list[torch.Tensor]]] = []
        order: list[int] = []
        for group in length_groups([len(suffix) for suffix in suffixes]):
            group_ids, group_mask = self._left_padded([suffixes[row] for row in group])
            cache = DynamicCache()
            if prefix is not None:
                for index, (keys, values) in enumerate(prefix):
                    expanded = (len(group), -1, -1, -1)
                    cache.update(keys.expand(*expanded), values.expand(*expanded), index)
                group_mask = torch.cat([group_mask.new_ones(len(group), shared), group_mask], 1)
            positions = (group_mask.cumsum(1) - 1).clamp(min=0)[:, shared:]
            self.model.base_model(
                input_ids=group_ids,
                attention_mask=group_mask,
                position_ids=positions,
                use_cache=True,
                **{self._cache_argument: cache},
            )
            if not layers:
                layers = [([], []) for _ in cache.layers]
            pad = (0, 0, width - group_ids.shape[1], 0)  # between the prefix and the suffix
            for (keys, values), layer in zip(layers, cache.layers, strict=True):
                for kept, tensor in ((keys, layer.keys), (values, layer.values)):
                    suffix = torch.nn.functional.pad(tensor[:, :, shared:], pad)
                    kept.append(torch.cat([tensor[:, :, :shared], suffix], dim=2))
            order.extend(group)
        rows = torch.argsort(torch.tensor(order, device=self.device))
        merged = DynamicCache()
        for index, (keys, values) in enumerate(layers):
            merged.update(torch.cat(keys)[rows], torch.cat(values)[rows], index)
        mask = torch.cat([suffix_mask.new_ones(len(prompts), shared), suffix_mask], 1)
        return CausalState(mask, mask.sum(1), merged)

    def _prefix_cache(self, prefix: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The keys and values ``[1, heads, len(prefix), head_dim]`` of each layer over
        ``prefix``, the tokens every prompt of a prefill starts with."""
        from transformers import DynamicCache

        cache = DynamicCache()
        ids = torch.tensor([prefix], device=self.device)
        self.model.base_model(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            position_ids=torch.arange(len(prefix), device=self.device)[None],
            use_cache=True,
            **{self._cache_argument: cache},
        )
        return [(layer.keys, layer.values) for layer in cache.layers]

    def _left_padded(self, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids ``[R, width]`` left-padded with the pad token, and their attention mask."""
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.int64)
        mask = torch.zeros((len(prompts), width), dtype=torch.int64)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt) :] = torch.tensor(prompt)
            mask[row, width - len(prompt) :] = 1
        return ids.to(self.device), mask.to(self.device)

    def _plain_ids(self, text: str) -> list[int]:
        return [int(i) for i in self.tokenizer(text, add_special_tokens=False)["input_ids"]]

    def _forward(
        self, state: CausalState, tokens: torch.Tensor, cache: Any
    ) -> tuple[Any, CausalState]:
        tokens = tokens.to(self.device)
        count = tokens.shape[1]
        mask = torch.cat([state.attention_mask, torch.ones_like(tokens)], dim=1)
        positions = state.next_position[:, None] + torch.arange(count, device=self.device)
        output = self.model(
            input_ids=tokens,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            **{self._cache_argument: cache},
        )
        return output.logits, CausalState(mask, state.next_position + count, cache)

    def _training_logits(self, state: CausalState, labels: torch.Tensor) -> torch.Tensor:
        """Prompt and labels in one pass without a cache; the logits at the label positions."""
        if state.prompt_ids is None:
            raise RagloomError("a state started in inference mode was scored in training mode.")
        labels = labels.to(self.device)
        ids = torch.cat([state.prompt_ids, labels], dim=1)
        mask = torch.cat([state.attention_mask, torch.ones_like(labels)], dim=1)
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        logits = self.model(
            input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False
        ).logits
        return logits[:, state.prompt_ids.shape[1] :]

    def step(self, state: CausalState, tokens: torch.Tensor) -> tuple[torch.Tensor, CausalState]:
        logits, state = self._forward(state, tokens, state.cache)
        return torch.log_softmax(logits[:, -1].float(), dim=-1), state

    def select(self, state: CausalState, rows: torch.Tensor) -> CausalState:
        from transformers import DynamicCache

        rows = rows.to(self.device)
        cache = DynamicCache()
        for index, layer in enumerate(state.cache.layers):
            cache.update(layer.keys[rows], layer.values[rows], index)
        return CausalState(state.attention_mask[rows], state.next_position[rows], cache)

    def score(self, state: CausalState, labels: torch.Tensor) -> torch.Tensor:
        if self.model.training:
            logits = self._training_logits(state, labels)
        else:
            rows = torch.arange(len(labels), device=self.device)
            logits, _ = self._forward(state, labels, self.select(state, rows).cache)
        return torch.log_softmax(logits.float(), dim=-1)

    def trainable_model(self) -> TrainableModel:
        return TrainableModel(self.model, self.tokenizer)

    checkpoint_table = staticmethod(hf_loading.checkpoint_table)

    def encode_targets(self, texts: Sequence[str]) -> torch.Tensor:
        rows = [[*self.start_token_ids, *self._plain_ids(t), self.eos_token_id] for t in texts]
        width = max(len(row) for row in rows)
        labels = torch.full((len(rows), width), self.pad_token_id, dtype=torch.int64)
        for i, row in enumerate(rows):
            labels[i, : len(row)] = torch.tensor(row)
        return labels.to(self.device)

    def decode(self, token_ids: Sequence[int]) -> str:
        """The text of ``token_ids``, without special tokens and without the space that
        follows the answer opening (a trailing newline is kept: it may be a stop string)."""
        text: str = self.tokenizer.decode(list(token_ids), skip_special_tokens=True)
        return text.lstrip()


SHARED_PREFIX_MIN = 8
"""The fewest tokens every prompt must start with for :func:`shared_prefix` to share them."""


def shared_prefix(prompts: Sequence[Sequence[int]]) -> int:
    """How many tokens all ``prompts`` (two or more) start with, leaving each at least one of its
    own; 0 for one prompt or fewer than :data:`SHARED_PREFIX_MIN` in common."""
    if len(prompts) < 2:
        return 0
    limit = min(len(prompt) for prompt in prompts) - 1
    common = 0
    while common < limit and all(prompt[common] == prompts[0][common] for prompt in prompts):
        common += 1
    return common if common >= SHARED_PREFIX_MIN else 0


PADDING_SHARE = 0.1
"""The share of a prefill group's tokens that may be padding."""


def length_groups(lengths: Sequence[int]) -> list[list[int]]:
    """The rows (indexes into ``lengths``), longest first, in groups whose padding to the
    group's longest row is at most :data:`PADDING_SHARE` of the group's tokens."""
    groups: list[list[int]] = []
    tokens = 0
    for row in sorted(range(len(lengths)), key=lambda row: -lengths[row]):
        if groups:
            padded = (len(groups[-1]) + 1) * lengths[groups[-1][0]]
            if padded - tokens - lengths[row] <= PADDING_SHARE * padded:
                groups[-1].append(row)
                tokens += lengths[row]
                continue
        groups.append([row])
        tokens = lengths[row]
    return groups


def _cap_dropping(texts: Sequence[Sequence[int]], cap: int, excess: int) -> int:
    """The largest cap below ``cap`` that drops at least ``excess`` tokens from ``texts`` cut to
    ``cap`` tokens each (the longest texts lose tokens first)."""
    kept = sum(min(len(text), cap) for text in texts)
    low, high = 0, cap - 1
    while low < high:
        middle = (low + high + 1) // 2
        if kept - sum(min(len(text), middle) for text in texts) >= excess:
            low = middle
        else:
            high = middle - 1
    return low
