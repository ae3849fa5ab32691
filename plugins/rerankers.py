"""Rerankers ``cross-encoder`` and ``lm-likelihood``: the retriever's best ``candidates`` passages
re-scored by a transformers model, the best ``n_docs`` kept, their scores the document prior.

- ``cross-encoder``: a sequence-classification model (an MS MARCO cross-encoder) reads each
  (question, passage) pair; the score is its relevance logit: the one logit of a
  ``num_labels = 1`` model, the logit of label 1 ("relevant") of a ``num_labels = 2`` one.
- ``lm-likelihood`` (UPR, Sachan et al. 2022): a causal LM reads ``prompt`` filled with the
  passage, then the question; the score is the mean log-probability of the question's tokens,
  ``1/|q| Σ_t log p(q_t | prompt, q_<t)``, as UPR ranks by.

Both score the ``B · C`` (question, candidate) pairs in batches of ``batch_size`` (missing
candidates, id ``-1``, are not scored), so a score depends on its pair alone. ``doc_scores`` are
the scores divided by ``temperature``.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ragloom.context import BuildContext
from ragloom.protocols import Passage, PassageText, Retrieved
from ragloom.rag_checkpoint import ModelDirectoryError, read_config
from ragloom.spec import Device, SpecPath, resolve_device

from . import causal_lm_generator
from .hf_loading import AUTO_DTYPE, DtypeName, checked_weights, load_pretrained, resolve_dtype

log = logging.getLogger(__name__)

CLASSIFIER_SUFFIX = "ForSequenceClassification"
PROMPT_FIELDS = ("title", "passage")
DEFAULT_PROMPT = "Passage: {title}. {passage}\nPlease write a question based on this passage.\n"


class ModelRerankerParams(BaseModel):
    """The keys both built-in rerankers take."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    path: SpecPath = Field(description="a local transformers model directory (or asset:NAME)")
    candidates: int = Field(default=20, ge=1, description="passages retrieved to rerank")
    temperature: float = Field(default=1.0, gt=0, description="prior = softmax(score / it)")
    batch_size: int = Field(default=16, ge=1, description="(question, passage) pairs a pass")
    max_length: int = Field(default=512, ge=8, description="tokens of a pair at most")
    dtype: DtypeName = Field(default="float32", description=AUTO_DTYPE)
    device: Device = Field(
        default="cpu", description='"cpu", "cuda", "cuda:N" or "auto" (CUDA when present)'
    )


def rerank_by(retrieved: Retrieved, scores: torch.Tensor, k: int, temperature: float) -> Retrieved:
    """The ``k`` candidates of highest ``scores`` (``float32 [B, C]``, read only where ids are
    not ``-1``) per row of ``retrieved``, best first (ties in retrieval order), ``-1`` ids last."""
    found = retrieved.ids >= 0
    scores = scores.float().cpu().masked_fill(~found.cpu(), float("-inf"))
    width = scores.shape[1]
    if width < k:  # fewer candidates than k: pad as missing
        scores = torch.nn.functional.pad(scores, (0, k - width), value=float("-inf"))
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    kept = torch.gather(scores, 1, order)
    padded_ids = torch.nn.functional.pad(retrieved.ids.cpu(), (0, max(k - width, 0)), value=-1)
    ids = torch.gather(padded_ids, 1, order).masked_fill(kept == float("-inf"), -1)
    passages = [
        [
            Passage(row[j].id, row[j].title, row[j].text, float(score))
            for j, score in zip(columns, values, strict=True)
            if j < len(row) and row[j].id >= 0 and score != float("-inf")
        ]
        for row, columns, values in zip(
            retrieved.passages, order.tolist(), kept.tolist(), strict=True
        )
    ]
    vectors = retrieved.doc_vectors
    if vectors is not None:
        vectors = torch.nn.functional.pad(vectors, (0, 0, 0, max(k - width, 0)))
        index = order.to(vectors.device)[:, :, None].expand(-1, -1, vectors.shape[2])
        vectors = torch.gather(vectors, 1, index) * (ids >= 0).to(vectors)[:, :, None]
    return Retrieved(
        ids=ids, scores=kept, doc_scores=kept / temperature, passages=passages, doc_vectors=vectors
    )


class _ModelReranker(ABC):
    """What both built-ins share: pairs scored in batches, then :func:`rerank_by`."""

    Params: ClassVar[type[ModelRerankerParams]] = ModelRerankerParams

    def __init__(self, model: Any, tokenizer: Any, params: Any, device: str) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.params = params
        self.device = torch.device(device)

    @classmethod
    def _loaded(cls, params: Any, context: BuildContext, model_class: Any) -> tuple[Any, Any, str]:
        directory = context.resolve_path(params.path)
        cls.check_directory(directory)
        device = resolve_device(params.device, "[reranker] device")
        model, tokenizer = load_pretrained(
            model_class,
            directory,
            checked_weights(directory),
            dtype=resolve_dtype(params.dtype, device),
        )
        return model.to(device), tokenizer, device

    @classmethod
    def check_directory(cls, directory: Path) -> None:
        """Refuse a model directory this reranker cannot read (before loading weights); by
        default every directory is accepted."""
        return None

    def rerank(self, questions: Sequence[str], retrieved: Retrieved, k: int) -> Retrieved:
        pairs = [
            (row, column, question, passage)
            for row, (question, passages) in enumerate(
                zip(questions, retrieved.passages, strict=True)
            )
            for column, passage in enumerate(passages)
            if passage.id >= 0
        ]
        scores = torch.full(retrieved.ids.shape, float("-inf"))
        size = self.params.batch_size
        for start in range(0, len(pairs), size):
            batch = pairs[start : start + size]
            values = self.score_pairs([p[2] for p in batch], [p[3] for p in batch])
            for (row, column, _, _), value in zip(batch, values.tolist(), strict=True):
                scores[row, column] = value
        return rerank_by(retrieved, scores, k, self.params.temperature)

    @abstractmethod
    def score_pairs(
        self, questions: Sequence[str], passages: Sequence[PassageText]
    ) -> torch.Tensor:
        """``float32 [n]``: the score of each (question, passage) pair."""


def passage_text(passage: PassageText) -> str:
    """A passage as a cross-encoder reads it: ``title: text`` (the text alone without title)."""
    return f"{passage.title}: {passage.text}" if passage.title else passage.text


class CrossEncoderReranker(_ModelReranker):
    """``cross-encoder``: see the module docstring."""

    @classmethod
    def from_spec(cls, params: Any, context: BuildContext, **children: Any) -> Any:
        from transformers import AutoModelForSequenceClassification

        model, tokenizer, device = cls._loaded(params, context, AutoModelForSequenceClassification)
        return cls(model, tokenizer, params, device)

    @classmethod
    def check_directory(cls, directory: Path) -> None:
        """A sequence classifier with one or two labels, by its ``config.json``."""
        config = read_config(directory)
        architectures = list(config.get("architectures") or [])
        if not any(name.endswith(CLASSIFIER_SUFFIX) for name in architectures):
            have = ", ".join(architectures) or "none"
            raise ModelDirectoryError(
                f"[reranker] path {directory}: its config.json declares the architectures "
                f"[{have}], not a sequence classifier (*{CLASSIFIER_SUFFIX}, such as "
                f"BertForSequenceClassification). A cross-encoder is a transformers "
                f"sequence-classification model saved with save_pretrained (an MS MARCO "
                f'cross-encoder); for a causal LM use type = "lm-likelihood".'
            )
        labels = int(config.get("num_labels") or len(config.get("id2label") or {}) or 2)
        if labels not in (1, 2):
            raise ModelDirectoryError(
                f"[reranker] path {directory}: a classifier of {labels} labels; a cross-encoder "
                f"scores relevance with 1 label (its logit) or 2 (the logit of label 1)."
            )

    def score_pairs(
        self, questions: Sequence[str], passages: Sequence[PassageText]
    ) -> torch.Tensor:
        encoded = self.tokenizer(
            list(questions),
            [passage_text(p) for p in passages],
            padding=True,
            truncation=True,
            max_length=self.params.max_length,
            return_tensors="pt",
        ).to(self.device)
        logits = self.model(**encoded).logits.float()
        return logits[:, 0] if logits.shape[1] == 1 else logits[:, 1]


def check_prompt(prompt: str) -> None:
    """Refuse a prompt ``str.format`` cannot fill with a passage's title and text (see the
    causal-lm generator's), or without ``{passage}``."""
    if "passage" not in causal_lm_generator.check_prompt(prompt, PROMPT_FIELDS):
        raise ValueError("the prompt has no {passage}: the question would be scored without it")


class LMLikelihoodParams(ModelRerankerParams):
    prompt: str = Field(
        default=DEFAULT_PROMPT,
        description="what precedes the question, with {passage} and {title}",
    )
    question_prefix: str = Field(
        default="Question:", description="what opens the scored question after the prompt"
    )

    @field_validator("prompt")
    @classmethod
    def _placeholders(cls, prompt: str) -> str:
        check_prompt(prompt)
        return prompt


class LMLikelihoodReranker(_ModelReranker):
    """``lm-likelihood``: see the module docstring. The filled prompt followed by
    ``question_prefix``, and ``" " + question``, are tokenized apart without special tokens, so
    the question's tokens are the same under every passage; a pair longer than ``max_length``
    loses the prompt's first tokens. Rows are right-padded."""

    Params: ClassVar[type[ModelRerankerParams]] = LMLikelihoodParams

    @classmethod
    def from_spec(cls, params: Any, context: BuildContext, **children: Any) -> Any:
        from transformers import AutoModelForCausalLM

        model, tokenizer, device = cls._loaded(params, context, AutoModelForCausalLM)
        return cls(model, tokenizer, params, device)

    def _ids(self, text: str) -> list[int]:
        return [int(i) for i in self.tokenizer(text, add_special_tokens=False)["input_ids"]]

    def pair_ids(self, question: str, passage: PassageText) -> tuple[list[int], list[int]]:
        """The prompt's and the question's tokens of one pair, cut to ``max_length``."""
        prompt = self.params.prompt.format(title=passage.title, passage=passage.text)
        asked = self._ids(" " + question)[: self.params.max_length - 1] or [self._pad_id()]
        kept = self._ids(prompt + self.params.question_prefix) or [self._pad_id()]
        return kept[len(kept) - (self.params.max_length - len(asked)) :], asked

    def _pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad if pad is not None else self.tokenizer.eos_token_id or 0)

    def score_pairs(
        self, questions: Sequence[str], passages: Sequence[PassageText]
    ) -> torch.Tensor:
        """Rows left-padded, so every row's question ends at the last position and the model
        computes logits only over the last ``longest question + 1`` positions (the prompt's
        logits over the whole vocabulary were most of the memory a pass moved)."""
        pairs = [self.pair_ids(q, p) for q, p in zip(questions, passages, strict=True)]
        width = max(len(prompt) + len(asked) for prompt, asked in pairs)
        kept = max(len(asked) for _, asked in pairs) + 1
        ids = torch.full((len(pairs), width), self._pad_id(), dtype=torch.int64)
        mask = torch.zeros((len(pairs), width), dtype=torch.int64)
        scored = torch.zeros((len(pairs), kept - 1), dtype=torch.bool)  # the question's tokens
        for row, (prompt, asked) in enumerate(pairs):
            ids[row, width - len(prompt) - len(asked) :] = torch.tensor(prompt + asked)
            mask[row, width - len(prompt) - len(asked) :] = 1
            scored[row, kept - 1 - len(asked) :] = True
        ids, mask, scored = ids.to(self.device), mask.to(self.device), scored.to(self.device)
        logits = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=(mask.cumsum(1) - 1).clamp(min=0),
            logits_to_keep=kept,
        ).logits
        logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # t predicts t + 1
        token = torch.gather(logprobs, 2, ids[:, width - kept + 1 :, None])[:, :, 0]
        targets = scored.float()
        return ((token * targets).sum(1) / targets.sum(1)).cpu()
