"""Encoder ``dpr``: question and passage towers from local transformers directories.

Either tower is a DPR encoder directory (``DPRQuestionEncoder`` / ``DPRContextEncoder``: the
pooler output, CLS plus the optional projection, as the reference) or any BERT-like directory
(``AutoModel``), pooled by ``pooling``: the CLS vector as DPR, or the masked mean as sentence
encoders such as all-MiniLM-L6-v2. The passage tower defaults to the question tower's directory.

The fingerprint hashes the passage tower's weight files and the settings that change its vectors;
knowledge bases record it, so a KB is refused under an encoder that would embed differently.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from ragloom.context import BuildContext
from ragloom.errors import RagloomError

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class ModelDirectoryError(RagloomError):
    """A model directory that is missing or lacks weights, config or tokenizer."""


def weights_file(directory: Path) -> Path:
    """The weight file of a transformers model directory, or a clear error."""
    if not directory.is_dir():
        raise ModelDirectoryError(f"model directory {directory} does not exist.")
    for name in WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name
    sharded = sorted(directory.glob("model-*.safetensors"))
    if sharded:
        return sharded[0]
    raise ModelDirectoryError(
        f"{directory} has no weights ({' or '.join(WEIGHT_FILES)}). Point the spec at a directory "
        f"written by save_pretrained."
    )


def file_digest(path: Path, chunk: int = 1 << 22) -> str:
    """sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


class Tower:
    """One encoder tower: tokenizer, model, and how a vector is read off its output."""

    def __init__(self, directory: Path, pooling: str, max_length: int | None, device: str) -> None:
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        weights_file(directory)
        self.directory = directory
        config = AutoConfig.from_pretrained(directory)
        self.tokenizer = AutoTokenizer.from_pretrained(directory)
        if config.model_type == "dpr":
            import transformers

            architecture = (config.architectures or ["DPRQuestionEncoder"])[0]
            self.model = getattr(transformers, architecture).from_pretrained(directory)
            self.pooling = "dpr"
        else:
            self.model = AutoModel.from_pretrained(directory)
            self.pooling = pooling
        self.model.to(device).eval()
        self.device = device
        limit = min(getattr(self.tokenizer, "model_max_length", 512) or 512, 512)
        self.max_length = max_length or limit

    @property
    def dim(self) -> int:
        config = self.model.config
        projection = getattr(config, "projection_dim", 0) or 0
        return int(projection or config.hidden_size)

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
        path: str = Field(description="question tower: a DPR or BERT-like model directory")
        passage_path: str | None = Field(
            default=None, description="passage tower directory (default: path)"
        )
        pooling: Literal["cls", "mean"] = Field(
            default="cls", description="vector of a non-DPR tower: CLS (as DPR) or masked mean"
        )
        normalize: bool = Field(default=False, description="L2-normalize vectors")
        max_length: int | None = Field(
            default=None, ge=8, description="token limit (default: the tokenizer's, at most 512)"
        )
        batch_size: int = Field(default=32, ge=1, description="texts per forward pass")
        device: str = Field(default="cpu", description='"cpu", "cuda", "cuda:1", ...')

    def __init__(self, params: Params, base_dir: Path | None = None) -> None:
        self.params = params

        def resolve(path: str) -> Path:
            expanded = Path(path).expanduser()
            return (base_dir / expanded).resolve() if base_dir else expanded

        query_dir = resolve(params.path)
        passage_dir = resolve(params.passage_path) if params.passage_path else None
        self.query_tower = Tower(query_dir, params.pooling, params.max_length, params.device)
        self.passage_tower = (
            Tower(passage_dir, params.pooling, params.max_length, params.device)
            if passage_dir is not None and passage_dir != query_dir
            else self.query_tower
        )
        if self.query_tower.dim != self.passage_tower.dim:
            raise ModelDirectoryError(
                f"[encoder] the question tower ({query_dir}, dim {self.query_tower.dim}) and the "
                f"passage tower ({passage_dir}, dim {self.passage_tower.dim}) differ in size."
            )
        self.dim = self.query_tower.dim
        self.fingerprint = self._fingerprint()

    @classmethod
    def from_spec(cls, params: Any, context: BuildContext, **children: Any) -> HFEncoder:
        return cls(params, context.base_dir)

    def _fingerprint(self) -> str:
        tower = self.passage_tower
        settings = {
            "pooling": tower.pooling,
            "normalize": self.params.normalize,
            "max_length": tower.max_length,
            "weights": file_digest(weights_file(tower.directory)),
        }
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]

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

    def encode_passages(self, titles: Sequence[str], texts: Sequence[str]) -> torch.Tensor:
        """``float32 [N, d]`` under inference mode; titles and texts as a sentence pair (DPR)."""
        titles, texts = list(titles), list(texts)
        with torch.inference_mode():
            parts = [
                self.passage_tower.encode(titles[part], texts[part])
                for part in self._batches(len(texts))
            ]
            return self._finish(torch.cat(parts)) if parts else torch.zeros(0, self.dim)
