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
    DTYPES,
    cache_argument,
    checked_weights,
    generator_config,
    load_pretrained,
    on_device,
)

PROMPT_FIELDS = ("title", "text", "question")
"""The placeholders a prompt may use."""

DEFAULT_PROMPT = (
    "Answer the question from the passage in a few words.\n\n"
    "Passage ({title}): {text}\n\nQuestion: {question}"
)


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
        dtype: Literal["float32", "bfloat16", "float16"] = "float32"
        attention: Literal["eager", "sdpa"] = "sdpa"
        device: Device = Field(
            default="cpu", description='"cpu", "cuda", "cuda:N" or "auto" (CUDA when present)'
        )

        @field_validator("prompt")
        @classmethod
        def _placeholders(cls, prompt: str) -> str:
            check_prompt(prompt)
            return prompt

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

    @classmethod
    def from_spec(cls, params: Any, context: BuildContext, **children: Any) -> CausalLMGenerator:
        from transformers import AutoModelForCausalLM

        params = on_device(params, "[generator] device")
        loading: dict[str, Any] = {"dtype": DTYPES[params.dtype]}
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
        return DecoderShape(
            vocab_size=int(config["vocab_size"]),
            layers=int(config["num_hidden_layers"]),
            kv_width=int(config.get("num_key_value_heads") or heads) * head_dim,
            context_tokens=params.max_prompt_length,
            value_bytes=DTYPES[params.dtype].itemsize,
            answer_positions=int(positions) - params.max_prompt_length if positions else None,
        )

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
            return self._plain_ids(self.params.answer_prefix)
        bare, opened = self._chat_ids("x", False), self._chat_ids("x", True)
        if opened[: len(bare)] != bare or len(opened) == len(bare):
            raise ModelDirectoryError(
                "[generator] the tokenizer's chat template does not end a prompt with a fixed "
                "assistant header; set chat_template = false."
            )
        return opened[len(bare) :]

    def prompt_ids(self, question: str, passage: PassageText) -> list[int]:
        """The prompt of one context, without the answer opening, cut to the last tokens."""
        text = self.params.prompt.format(title=passage.title, text=passage.text, question=question)
        if self.use_chat:
            ids = self._chat_ids(text, False)
        else:
            ids = [int(i) for i in self.tokenizer(text)["input_ids"]]
        return ids[-self.params.max_prompt_length :]

    # --- the Generator protocol ---------------------------------------------------------------

    def start(
        self, questions: Sequence[str], passages: Sequence[Sequence[PassageText]]
    ) -> CausalState:
        prompts = [
            self.prompt_ids(question, passage)
            for question, row in zip(questions, passages, strict=True)
            for passage in row
        ]
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.int64)
        mask = torch.zeros((len(prompts), width), dtype=torch.int64)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt) :] = torch.tensor(prompt)
            mask[row, width - len(prompt) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        if self.model.training:
            return CausalState(mask, mask.sum(1), None, ids)
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        from transformers import DynamicCache

        cache = DynamicCache()
        self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            **{self._cache_argument: cache},
        )
        return CausalState(mask, mask.sum(1), cache)

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
        text: str = self.tokenizer.decode(list(token_ids), skip_special_tokens=True)
        return text.strip()
