"""Generator ``bart``: a transformers BART (or any seq2seq LM) reading passage and question.

Each context is built as transformers' RagRetriever builds it (hf_rag.md §5)::

    (prefix + title.strip('"') + " / " + text + " // " + question).replace("  ", " ")

truncated from the right to ``max_context_length`` tokens. The encoder runs once per context in
``start``; decoding steps reuse its states and a key/value cache that ``select`` reorders. A
BART model decodes through :class:`~.bart_decoder.BartDecoder` (bitwise transformers' log-probs,
with less work per step), any other seq2seq LM through transformers' forward.
``start_fused`` lays a question's encoded contexts end to end for one decoder row
(Fusion-in-Decoder, Izacard & Grave 2021).

``attention``: ``eager`` and ``sdpa`` are transformers' implementations; ``flash`` is PyTorch SDPA
restricted to its FlashAttention kernel (any CUDA GPU, float16/bfloat16, no extra package);
``flash_attention_2`` is the flash-attn package. ``quantization`` loads the generator alone in
8-bit or 4-bit (NF4) with bitsandbytes; the question encoder is never quantized, so retrieval
does not change.

In training mode (``model.train()``, set by ``ragloom train``) ``score`` runs without a decoder
cache, as gradient checkpointing requires.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ragloom.context import BuildContext
from ragloom.errors import RagloomError
from ragloom.preflight import DecoderShape
from ragloom.protocols import PassageText, TrainableModel
from ragloom.rag_checkpoint import ModelDirectoryError, load_rag_part
from ragloom.spec import Device, SpecPath

from . import hf_loading
from .bart_decoder import decoder_for
from .hf_loading import (
    AUTO_DTYPE,
    DTYPES,
    DtypeName,
    generator_config,
    load_pretrained,
    on_device,
    resolve_dtype,
)


def context_string(prefix: str, title: str, text: str, question: str) -> str:
    """The generator input for one passage, exactly as transformers' RagRetriever writes it."""
    title = title.removeprefix('"').removesuffix('"')
    return (prefix + title + " / " + text + " // " + question).replace("  ", " ")


@dataclass
class BartState:
    """``R`` decoding rows: encoder states and mask (fixed), the decoder cache (growing), and
    which context each row reads (``contexts``, indices into the rows ``start`` made)."""

    encoder_states: torch.Tensor
    attention_mask: torch.Tensor
    contexts: torch.Tensor
    cache: Any = None


class BartGenerator:
    """The ``bart`` generator (see the module docstring)."""

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        path: SpecPath | None = Field(
            default=None,
            description="a BART save_pretrained directory (default: [pipeline] checkpoint's)",
        )
        attention: Literal["eager", "sdpa", "flash", "flash_attention_2"] = "sdpa"
        dtype: DtypeName = Field(default="float32", description=AUTO_DTYPE)
        quantization: Literal["none", "8bit", "4bit"] = "none"
        compute_dtype: Literal["float32", "bfloat16", "float16"] = Field(
            default="float32", description="4-bit matmul dtype"
        )
        max_context_length: int = Field(
            default=300, ge=8, description="tokens per passage + question (the reference's 300)"
        )
        device: Device = Field(
            default="cpu", description='"cpu", "cuda", "cuda:N" or "auto" (CUDA when present)'
        )

        @model_validator(mode="after")
        def _combination(self) -> BartGenerator.Params:
            flash = self.attention in ("flash", "flash_attention_2")
            if flash and not self.device.startswith("cuda"):
                raise ValueError(
                    f'attention = "{self.attention}" runs only on a CUDA GPU, and device = '
                    f'"{self.device}"; use attention = "sdpa" on the CPU'
                )
            if flash and self.dtype == "float32" and self.quantization == "none":
                raise ValueError(
                    f'attention = "{self.attention}" needs dtype = "bfloat16" or "float16" '
                    f"(FlashAttention has no float32 kernel)"
                )
            if (
                self.attention == "flash_attention_2"
                and importlib.util.find_spec("flash_attn") is None
            ):
                raise ValueError(
                    'attention = "flash_attention_2" needs the flash-attn package: pip install '
                    "'ragloom[gpu]' (or use attention = \"flash\", which needs no package)"
                )
            if self.quantization != "none" and importlib.util.find_spec("bitsandbytes") is None:
                raise ValueError(
                    f'quantization = "{self.quantization}" needs bitsandbytes: pip install '
                    "'ragloom[quant]'"
                )
            return self

    def __init__(self, model: Any, tokenizer: Any, params: Params) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.params = params
        config = model.config
        generation = getattr(model, "generation_config", None)
        self.pad_token_id = int(config.pad_token_id)
        self.eos_token_id = int(config.eos_token_id)
        self.vocab_size = int(config.vocab_size)
        forced_bos = getattr(generation, "forced_bos_token_id", None)
        self.start_token_ids = [int(config.decoder_start_token_id)] + (
            [int(forced_bos)] if forced_bos is not None else []
        )
        forced_eos = getattr(generation, "forced_eos_token_id", None)
        self.forced_eos_token_id = int(forced_eos) if isinstance(forced_eos, int) else None
        self.special_token_ids = frozenset(int(i) for i in tokenizer.all_special_ids)
        self.prefix = getattr(config, "prefix", None) or ""
        self.device = torch.device(params.device)
        self._decoder = decoder_for(model)

    @classmethod
    def from_spec(cls, params: Any, context: BuildContext, **children: Any) -> BartGenerator:
        from transformers import AutoModelForSeq2SeqLM

        params = on_device(params, "[generator] device")
        kwargs = cls._loading_arguments(params)
        if params.path is not None:
            directory = context.resolve_path(params.path)
            model, tokenizer = load_pretrained(AutoModelForSeq2SeqLM, directory, **kwargs)
        elif context.pipeline.checkpoint is not None:
            checkpoint = context.resolve_path(context.pipeline.checkpoint)
            model, tokenizer = load_rag_part(checkpoint, "generator", **kwargs)
        else:
            raise ModelDirectoryError(
                "[generator] needs path = a BART directory, or [pipeline] checkpoint = a "
                "transformers RAG directory."
            )
        if params.quantization == "none":
            model.to(params.device)
        return cls(model, tokenizer, params)

    @classmethod
    def decoder_shape_from_spec(cls, params: Any, context: BuildContext) -> DecoderShape:
        """Decoding's memory and position limits, from the model's config: every row caches
        self-attention over the answer and cross-attention over its context."""
        config = generator_config(params, context)
        return DecoderShape(
            vocab_size=int(config["vocab_size"]),
            layers=int(config.get("decoder_layers") or config["num_hidden_layers"]),
            kv_width=int(config.get("d_model") or config["hidden_size"]),
            context_tokens=params.max_context_length,
            value_bytes=resolve_dtype(params.dtype, params.device).itemsize,
            answer_positions=config.get("max_position_embeddings"),
        )

    @staticmethod
    def _loading_arguments(params: Any) -> dict[str, Any]:
        attention = {"flash": "sdpa"}.get(params.attention, params.attention)
        dtype = resolve_dtype(params.dtype, params.device)
        kwargs: dict[str, Any] = {"attn_implementation": attention, "dtype": dtype}
        if params.quantization != "none":
            from transformers import BitsAndBytesConfig

            quantization = (
                BitsAndBytesConfig(
                    load_in_4bit=True,
                    bnb_4bit_quant_type="nf4",
                    bnb_4bit_compute_dtype=DTYPES[params.compute_dtype],
                )
                if params.quantization == "4bit"
                else BitsAndBytesConfig(load_in_8bit=True)
            )
            kwargs["quantization_config"] = quantization
            kwargs["device_map"] = params.device
        return kwargs

    @contextlib.contextmanager
    def _attention(self) -> Iterator[None]:
        """Restrict SDPA to its FlashAttention kernel when ``attention = "flash"``."""
        if self.params.attention != "flash":
            yield
            return
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            yield

    # --- the Generator protocol ---------------------------------------------------------------

    def contexts(
        self, questions: Sequence[str], passages: Sequence[Sequence[PassageText]]
    ) -> list[str]:
        """The ``B * k`` generator inputs, question-major."""
        return [
            context_string(self.prefix, passage.title, passage.text, question)
            for question, row in zip(questions, passages, strict=True)
            for passage in row
        ]

    def start(
        self, questions: Sequence[str], passages: Sequence[Sequence[PassageText]]
    ) -> BartState:
        batch = self.tokenizer(
            self.contexts(questions, passages),
            max_length=self.params.max_context_length,
            truncation=True,
            padding=True,
            return_tensors="pt",
        ).to(self.device)
        with self._attention():
            encoded = self.model.get_encoder()(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).last_hidden_state
        rows = torch.arange(len(encoded), device=self.device)
        return BartState(encoded, batch["attention_mask"], rows)

    def start_fused(
        self, questions: Sequence[str], passages: Sequence[Sequence[PassageText]]
    ) -> BartState:
        """Fusion-in-Decoder: each (passage, question) context encoded on its own as in
        ``start``, then a question's ``k`` encoder states laid end to end, so that one decoder
        row attends to all of them. Contexts of missing passages (id ``-1``) are masked out."""
        state = self.start(questions, passages)
        rows, length, width = state.encoder_states.shape
        batch = len(questions)
        present = torch.tensor(
            [passage.id >= 0 for row in passages for passage in row], device=self.device
        )
        mask = state.attention_mask * present[:, None]
        return BartState(
            state.encoder_states.reshape(batch, rows // batch * length, width),
            mask.reshape(batch, rows // batch * length),
            torch.arange(batch, device=self.device),
        )

    def _fresh_cache(self, state: BartState) -> Any:
        return self._decoder.cache(state.encoder_states, state.attention_mask, state.contexts)

    def step(self, state: BartState, tokens: torch.Tensor) -> tuple[torch.Tensor, BartState]:
        with self._attention():
            cache = state.cache if state.cache is not None else self._fresh_cache(state)
            logits = self._decoder.logits(
                cache, state.encoder_states, state.attention_mask, tokens.to(self.device)
            )
        logprobs = torch.log_softmax(logits[:, -1].float(), dim=-1)
        return logprobs, BartState(
            state.encoder_states, state.attention_mask, state.contexts, cache
        )

    def select(self, state: BartState, rows: torch.Tensor) -> BartState:
        """Rows ``rows`` of ``state``. A beam reorder keeps every row on its context (beams of
        one question and document share it), so only the self-attention cache moves then."""
        rows = rows.to(self.device)
        contexts = state.contexts[rows]
        same_contexts = torch.equal(contexts, state.contexts)
        cache = state.cache
        if cache is not None:
            cache = self._decoder.select(cache, rows, not same_contexts)
        if same_contexts:
            return BartState(state.encoder_states, state.attention_mask, contexts, cache)
        return BartState(state.encoder_states[rows], state.attention_mask[rows], contexts, cache)

    def score(self, state: BartState, labels: torch.Tensor) -> torch.Tensor:
        labels = labels.to(self.device)
        with self._attention():
            if self.model.training:
                logits = self.model(
                    encoder_outputs=(state.encoder_states,),
                    attention_mask=state.attention_mask,
                    decoder_input_ids=labels,
                    use_cache=False,
                ).logits
            else:
                logits = self._decoder.logits(
                    self._fresh_cache(state), state.encoder_states, state.attention_mask, labels
                )
        return torch.log_softmax(logits.float(), dim=-1)

    def trainable_model(self) -> TrainableModel:
        if self.params.quantization != "none":
            raise RagloomError(
                f'[generator] quantization = "{self.params.quantization}": quantized weights '
                f'cannot be fine-tuned. Train with quantization = "none", or leave "generator" '
                f"out of [train] train."
            )
        return TrainableModel(self.model, self.tokenizer)

    checkpoint_table = staticmethod(hf_loading.checkpoint_table)

    def encode_targets(self, texts: Sequence[str]) -> torch.Tensor:
        labels: torch.Tensor = self.tokenizer(list(texts), padding=True, return_tensors="pt")[
            "input_ids"
        ]
        return labels.to(self.device)

    def decode(self, token_ids: Sequence[int]) -> str:
        text: str = self.tokenizer.decode(list(token_ids), skip_special_tokens=True)
        return text
