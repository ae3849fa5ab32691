"""Encoder ``dpr``: question and passage towers from local transformers directories.

Either tower is a DPR encoder directory (``DPRQuestionEncoder`` / ``DPRContextEncoder``: the
pooler output, CLS plus the optional projection, as the reference), any BERT-like directory
(``AutoModel``), pooled by ``pooling``: the CLS vector as DPR, or the masked mean as sentence
encoders such as all-MiniLM-L6-v2; or a RAG checkpoint directory, read for its question encoder.
The passage tower defaults to the question tower's directory. Fine-tuning trains the question
tower only; a passage tower that shared it is kept apart, unchanged.

The fingerprint hashes the passage tower's weight files and the settings that change its vectors
(the dtype too, where it is not float32); knowledge bases record it, so a KB is refused under an
encoder that would embed differently.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from ragloom.context import BuildContext
from ragloom.digest import file_sha256
from ragloom.protocols import TrainableModel
from ragloom.rag_checkpoint import (
    ModelDirectoryError,
    checkpoint_weights,
    is_rag_checkpoint,
    load_rag_part,
    read_config,
    tokenizer_files,
    vector_size,
)
from ragloom.spec import Device, SpecPath

from .hf_loading import (
    AUTO_DTYPE,
    DtypeName,
    checked_weights,
    load_pretrained,
    on_device,
    resolve_dtype,
    weights_file,
)

log = logging.getLogger(__name__)


def tower_source(directory: Path) -> str:
    """What a tower's vectors depend on, as hashes: its weight file's (for a RAG checkpoint,
    and which part of it) and its tokenizer files'."""
    if is_rag_checkpoint(directory):
        weights = f"{file_sha256(checkpoint_weights(directory))}:question_encoder"
        tokenizer = directory / "question_encoder_tokenizer"
    else:
        weights, tokenizer = file_sha256(weights_file(directory)), directory
    tokens = [f"{path.name}:{file_sha256(path)}" for path in tokenizer_files(tokenizer)]
    return ";".join([weights, *tokens])


class Tower:
    """One encoder tower: tokenizer, model, and how a vector is read off its output."""

    def __init__(
        self, model: Any, tokenizer: Any, pooling: str, max_length: int | None, device: str
    ) -> None:
        self.model = model.to(device).eval()  # in the dtype it was loaded in
        self.tokenizer = tokenizer
        self.pooling = "dpr" if model.config.model_type == "dpr" else pooling
        self.device = device
        limit = min(getattr(tokenizer, "model_max_length", 512) or 512, 512)
        self.max_length = max_length or limit

    @classmethod
    def from_directory(
        cls,
        directory: Path,
        pooling: str,
        max_length: int | None,
        device: str,
        dtype: torch.dtype = torch.float32,
    ) -> Tower:
        import transformers

        if is_rag_checkpoint(directory):
            model, tokenizer = load_rag_part(directory, "question_encoder", dtype=dtype)
            return cls(model, tokenizer, pooling, max_length, device)
        weights = checked_weights(directory)
        config = transformers.AutoConfig.from_pretrained(directory)
        if config.model_type == "dpr":
            architecture = (config.architectures or ["DPRQuestionEncoder"])[0]
            model_class = getattr(transformers, architecture)
        else:
            model_class = transformers.AutoModel
        model, tokenizer = load_pretrained(model_class, directory, weights, dtype=dtype)
        return cls(model, tokenizer, pooling, max_length, device)

    @property
    def dim(self) -> int:
        return vector_size(self.model.config)

    def overflow(self, first: Sequence[str], second: Sequence[str] | None = None) -> list[int]:
        """The tokens of each text (or pair) past ``max_length``, which :meth:`encode` cuts off
        (the second text's, for a pair)."""
        if not first:
            return []
        ids = self.tokenizer(
            list(first),
            list(second) if second is not None else None,
            truncation=False,
            verbose=False,  # no "longer than the maximum" warning: the build counts them
        )["input_ids"]
        return [max(0, len(row) - self.max_length) for row in ids]

    def encode(self, first: Sequence[str], second: Sequence[str] | None = None) -> torch.Tensor:
        batch = self.tokenizer(
            list(first),
            list(second) if second is not None else None,
            padding=True,
            truncation="only_second" if second is not None else True,
            max_length=self.max_length,
            return_tensors="pt",
        ).to(self.device)
        if self.pooling == "dpr":
            return self.model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).pooler_output
        hidden = self.model(**batch).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class HFEncoder:
    """The ``dpr`` encoder (see the module docstring)."""

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        path: SpecPath | None = Field(
            default=None,
            description="question tower: a DPR, BERT-like or RAG checkpoint directory (default: "
            "[pipeline] checkpoint's question encoder)",
        )
        passage_path: SpecPath | None = Field(
            default=None,
            description="passage tower: a DPR, BERT-like or RAG checkpoint directory (default: "
            "the question tower)",
        )
        pooling: Literal["cls", "mean"] = Field(
            default="cls", description="vector of a non-DPR tower: CLS (as DPR) or masked mean"
        )
        normalize: bool = Field(default=False, description="L2-normalize vectors")
        passage_input: Literal["pair", "joined"] = Field(
            default="pair",
            description='"pair": title and text as a sentence pair (DPR); "joined": one text '
            '"title: text" (sentence encoders)',
        )
        max_length: int | None = Field(
            default=None, ge=8, description="token limit (default: the tokenizer's, at most 512)"
        )
        batch_size: int = Field(default=32, ge=1, description="texts per forward pass")
        dtype: DtypeName = Field(
            default="float32",
            description=f"weights and activations; vectors are float32 either way. {AUTO_DTYPE}",
        )
        device: Device = Field(
            default="cpu", description='"cpu", "cuda", "cuda:N" or "auto" (CUDA when present)'
        )

    def __init__(
        self,
        params: Params,
        query_tower: Tower,
        passage_tower: Tower,
        fingerprint: str,
        passage_directory: Path,
    ) -> None:
        if query_tower.dim != passage_tower.dim:
            raise ModelDirectoryError(
                f"[encoder] the question tower (dim {query_tower.dim}) and the passage tower "
                f"(dim {passage_tower.dim}) differ in size."
            )
        self.params = params
        self.query_tower = query_tower
        self.passage_tower = passage_tower
        self.dim = query_tower.dim
        self.fingerprint = fingerprint
        self.passage_directory = passage_directory  # where the passage tower was loaded from

    @classmethod
    def from_spec(cls, params: Any, context: BuildContext, **children: Any) -> HFEncoder:
        params = on_device(params, "[encoder] device")

        dtype = resolve_dtype(params.dtype, params.device)

        def tower(directory: Path) -> Tower:
            return Tower.from_directory(
                directory, params.pooling, params.max_length, params.device, dtype
            )

        query = tower(cls._question_tower_directory(params, context))
        passage = tower(context.resolve_path(params.passage_path)) if params.passage_path else query
        fingerprint = cls.fingerprint_from_spec(params, context)
        return cls(
            params, query, passage, fingerprint, cls.passage_tower_directory(params, context)
        )

    @staticmethod
    def _question_tower_directory(params: Any, context: BuildContext) -> Path:
        if params.path is not None:
            return context.resolve_path(params.path)
        if context.pipeline.checkpoint is None:
            raise ModelDirectoryError(
                "[encoder] needs path = a DPR or BERT-like directory, or [pipeline] checkpoint = "
                "a transformers RAG directory."
            )
        return context.resolve_path(context.pipeline.checkpoint)

    @classmethod
    def passage_tower_directory(cls, params: Any, context: BuildContext) -> Path:
        """Where the passage tower loads from."""
        if params.passage_path is not None:
            return context.resolve_path(params.passage_path)
        return cls._question_tower_directory(params, context)

    @classmethod
    def fingerprint_from_spec(cls, params: Any, context: BuildContext) -> str:
        """The fingerprint, from the passage tower's files and the settings, loading no model."""
        source = tower_source(cls.passage_tower_directory(params, context))
        settings = {
            "passage_input": params.passage_input,
            "pooling": params.pooling,
            "normalize": params.normalize,
            "max_length": params.max_length,
            "weights": source,
        }
        dtype = resolve_dtype(params.dtype, params.device)
        if dtype != torch.float32:  # float32 KBs keep the fingerprints they were built with
            settings["dtype"] = str(dtype).removeprefix("torch.")
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def dim_from_spec(cls, params: Any, context: BuildContext) -> int:
        """The vector size, from the question tower's config."""
        directory = cls._question_tower_directory(params, context)
        part = "question_encoder" if is_rag_checkpoint(directory) else None
        return vector_size(SimpleNamespace(**read_config(directory, part)))

    def trainable_model(self) -> TrainableModel:
        """The question tower; a passage tower that was the same object becomes a frozen copy,
        so passages keep the vectors the knowledge base holds."""
        if self.passage_tower is self.query_tower:
            self.passage_tower = copy.deepcopy(self.query_tower)
        return TrainableModel(self.query_tower.model, self.query_tower.tokenizer)

    def checkpoint_table(self, table: dict[str, Any]) -> dict[str, Any]:
        """The question tower from the checkpoint; the passage tower where it was."""
        table = dict(table)
        question_tower = table.pop("path", None)
        if "passage_path" not in table:
            table["passage_path"] = question_tower or str(self.passage_directory)
        return table

    def question_text(self, questions: Sequence[str]) -> list[str]:
        """Questions as the question tokenizer reads them back (lowercased, spaces normalized):
        the question transformers' RAG writes into each generator context."""
        if not questions:
            return []
        ids = self.query_tower.tokenizer(list(questions), truncation=True)["input_ids"]
        texts: list[str] = self.query_tower.tokenizer.batch_decode(ids, skip_special_tokens=True)
        return texts

    def _batches(self, count: int) -> Iterator[slice]:
        for start in range(0, count, self.params.batch_size):
            yield slice(start, start + self.params.batch_size)

    def _finish(self, vectors: torch.Tensor) -> torch.Tensor:
        vectors = vectors.float()
        return torch.nn.functional.normalize(vectors, dim=-1) if self.params.normalize else vectors

    def encode_queries(self, texts: Sequence[str]) -> torch.Tensor:
        """``float32 [B, d]``; differentiable when gradients are enabled (fine-tuning)."""
        texts = list(texts)
        if not texts:
            return torch.zeros(0, self.dim)
        parts = [self.query_tower.encode(texts[part]) for part in self._batches(len(texts))]
        return self._finish(torch.cat(parts))

    def _passage_inputs(
        self, titles: Sequence[str], texts: Sequence[str]
    ) -> tuple[list[str], list[str] | None]:
        """What the passage tower reads, as ``passage_input`` says: (titles, texts) as pairs, or
        one text ``"title: text"`` each."""
        if self.params.passage_input == "joined":
            pairs = zip(titles, texts, strict=True)
            return [f"{title}: {text}" if title else text for title, text in pairs], None
        return list(titles), list(texts)

    @property
    def passage_token_limit(self) -> int:
        """The most tokens of a passage the passage tower reads (its ``max_length``)."""
        return self.passage_tower.max_length

    def passage_overflow(self, titles: Sequence[str], texts: Sequence[str]) -> list[int]:
        """The tokens of each passage past :attr:`passage_token_limit`, cut off unread."""
        return self.passage_tower.overflow(*self._passage_inputs(titles, texts))

    def encode_passages(self, titles: Sequence[str], texts: Sequence[str]) -> torch.Tensor:
        """``float32 [N, d]`` under inference mode, read as ``passage_input`` says. Batches are
        formed longest first (by characters), so a batch pads its passages to similar lengths;
        the vectors come back in the order given."""
        first, second = self._passage_inputs(titles, texts)
        order = sorted(
            range(len(first)), key=lambda row: -len(first[row]) - len(second[row] if second else "")
        )
        first = [first[row] for row in order]
        second = [second[row] for row in order] if second else None
        with torch.inference_mode():
            parts = [
                self.passage_tower.encode(first[part], second[part] if second else None)
                for part in self._batches(len(first))
            ]
            if not parts:
                return torch.zeros(0, self.dim)
            return self._finish(torch.cat(parts))[torch.argsort(torch.tensor(order))]


class MeanPoolEncoder(HFEncoder):
    """The ``hf-mean-pool`` encoder: a sentence encoder (all-MiniLM-L6-v2 and the like) from
    any BERT-like directory, one tower for questions and passages, masked-mean pooled and
    L2-normalized, passages read as ``"title: text"``. The ``dpr`` encoder with other defaults."""

    class Params(HFEncoder.Params):
        pooling: Literal["cls", "mean"] = "mean"
        normalize: bool = True
        passage_input: Literal["pair", "joined"] = "joined"
