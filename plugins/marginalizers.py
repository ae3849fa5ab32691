"""The marginalizers: rag-token (documents mixed at every token), rag-sequence (documents mixed
over whole answers) and fusion (all documents read in one context). Each owns its loss and its
decoding.

Losses follow transformers' ``RagTokenForGeneration.get_nll`` and
``RagSequenceForGeneration.get_nll`` (hf_rag.md §6). One deliberate difference: rag-sequence adds
the document prior once per sequence; the reference adds it at target position 1, where it is lost
when that position is padding (a target of a single token).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from ragloom.context import BuildContext
from ragloom.errors import RagloomError
from ragloom.protocols import Decoded, ForcesEos, FusedReading, Generator, PassageText
from ragloom.spec import GenerationSettings
from ragloom.stop_strings import first_stop
from ragloom.tensors import shift_left

from .decoding import (
    Advance,
    Hypotheses,
    Reorder,
    SearchSettings,
    Stopped,
    greedy_steps,
    prefix_only,
    search,
)

_RESCORE_BUDGET = 64 * 2**20
"""Log-prob values (float32) one rescoring chunk may hold: 256 MiB."""
_RESCORE_CHUNK = 64
"""Hypotheses per rescoring call: small enough that lengths within a chunk are alike."""


def _search_settings(generator: Generator, settings: GenerationSettings) -> SearchSettings:
    return SearchSettings(
        generation=settings,
        prefix=generator.start_token_ids,
        eos_token_id=generator.eos_token_id,
        pad_token_id=generator.pad_token_id,
        forced_eos_token_id=(
            generator.forced_eos_token_id if isinstance(generator, ForcesEos) else None
        ),
        stopped=_stop_hook(generator, settings.stop) if settings.stop else None,
    )


def _stop_hook(generator: Generator, stop: Sequence[str]) -> Stopped:
    """Ends a hypothesis once its decoded text holds one of the ``stop`` strings."""

    def stopped(tokens: Sequence[int]) -> bool:
        return first_stop(generator.decode(tokens), stop) is not None

    return stopped


def _per_row(
    generator: Generator, state: Any, contexts: int, beams: int
) -> tuple[Advance, Reorder]:
    """The search callbacks when each of the ``contexts`` rows of ``state`` is a problem of its
    own (its ``beams`` hypotheses read that row alone)."""
    decoding = _Decoding(generator, state, torch.arange(contexts).repeat_interleave(beams))

    def advance(tokens: torch.Tensor) -> torch.Tensor:
        logprobs, first = decoding.step(tokens)
        return logprobs.repeat_interleave(beams, dim=0) if first else logprobs

    return advance, decoding.select


def _search_rows(
    generator: Generator, state: Any, contexts: int, settings: GenerationSettings, num_return: int
) -> Hypotheses:
    """A search of its own for each of the ``contexts`` rows of ``state``; the best
    ``num_return`` hypotheses of each."""
    advance, reorder = _per_row(generator, state, contexts, settings.num_beams)
    return search(advance, reorder, contexts, _search_settings(generator, settings), num_return)


def _best(found: Hypotheses) -> Decoded:
    """The best hypothesis of each problem."""
    return Decoded([rows[0] for rows in found.as_lists()], found.scores[:, 0])


def _streamed(
    advance: Advance, n: int, generator: Generator, settings: GenerationSettings
) -> Iterator[Decoded]:
    """Greedy search of ``n`` problems, the best hypotheses after every step (the last is the
    search's result; the bare prefix when ``max_length`` leaves no room after it)."""
    if settings.num_beams != 1:
        raise ValueError(f"streaming is greedy: num_beams = 1, not {settings.num_beams}")
    search_settings = _search_settings(generator, settings)
    if settings.max_length <= len(search_settings.prefix):
        yield _best(prefix_only(n, search_settings))
        return
    for found in greedy_steps(advance, n, search_settings):
        yield _best(found)


class _Decoding:
    """The generator state behind a search. Every hypothesis of a context starts identical, so
    the first step runs once per context; the state is expanded to its ``rows`` after it."""

    def __init__(self, generator: Generator, state: Any, rows: torch.Tensor) -> None:
        self.generator = generator
        self.state = state
        self.rows = rows
        self.started = False

    def step(self, tokens: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """Log-probs for ``tokens`` (one row per hypothesis); on the first call, one row per
        context, and True to say so."""
        if self.started:
            logprobs, self.state = self.generator.step(self.state, tokens)
            return logprobs.float(), False
        contexts = torch.arange(int(self.rows.max()) + 1)
        # step on a selected copy: ``step`` may consume its state, and the state ``start`` made
        # is still needed (rag-sequence rescores on it)
        base = self.generator.select(self.state, contexts)
        logprobs, first = self.generator.step(base, tokens[:1].expand(len(contexts), -1))
        self.state = self.generator.select(first, self.rows)
        self.started = True
        return logprobs.float(), True

    def select(self, rows: torch.Tensor) -> None:
        self.state = self.generator.select(self.state, rows)


def _smoothed(nll: torch.Tensor, smooth: torch.Tensor, epsilon: float, vocab: int) -> torch.Tensor:
    return (1.0 - epsilon) * nll + (epsilon / vocab) * smooth


def _token_loss(
    logprobs: torch.Tensor,
    targets: torch.Tensor,
    pad_token_id: int,
    reduce: bool,
    label_smoothing: float,
) -> torch.Tensor:
    """The smoothed NLL of ``targets [B, T]`` under one distribution per position,
    ``logprobs [B, T, V]``; pad positions count nothing."""
    keep = targets != pad_token_id
    likelihood = logprobs.gather(-1, targets[..., None]).squeeze(-1).masked_fill(~keep, 0.0)
    smooth = logprobs.sum(-1).masked_fill(~keep, 0.0)
    nll, smooth_loss = -likelihood.sum(1), -smooth.sum(1)
    if reduce:
        nll, smooth_loss = nll.sum(), smooth_loss.sum()
    return _smoothed(nll, smooth_loss, label_smoothing, logprobs.shape[-1])


class _Marginalizer:
    """What both marginalizers share: construction from their validated ``Params``."""

    Params: ClassVar[type[BaseModel]]

    def __init__(self, params: Any = None) -> None:
        self.params = params if params is not None else self.Params()

    @classmethod
    def from_spec(cls, params: Any, context: BuildContext, **children: Any) -> Any:
        return cls(params)


class RagToken(_Marginalizer):
    """rag-token: ``p(y|x) = Π_t Σ_z p(z|x) p(y_t | x, z, y_<t)``."""

    class Params(BaseModel):
        """rag-token takes no parameters; decoding follows ``[generation]``."""

        model_config = ConfigDict(extra="forbid", frozen=True)

    @staticmethod
    def mix(logprobs: torch.Tensor, doc_logprior: torch.Tensor) -> torch.Tensor:
        """``log Σ_z p(z|x) p(·|z)``: ``[B, k, ..., V]`` and ``[B, k]`` → ``[B, ..., V]``."""
        prior = doc_logprior.view(*doc_logprior.shape, *([1] * (logprobs.dim() - 2)))
        return torch.logsumexp(logprobs + prior, dim=1)

    def loss(
        self,
        logprobs: torch.Tensor,
        doc_logprior: torch.Tensor,
        targets: torch.Tensor,
        pad_token_id: int,
        reduce: bool = True,
        label_smoothing: float = 0.0,
    ) -> torch.Tensor:
        mixed = self.mix(logprobs, doc_logprior)  # [B, T, V]
        return _token_loss(mixed, targets, pad_token_id, reduce, label_smoothing)

    def _mixture(
        self, generator: Generator, state: Any, doc_logprior: torch.Tensor, beams: int
    ) -> tuple[Advance, Reorder]:
        """The search callbacks over the doc-mixed distribution: ``B * beams`` hypotheses, each
        reading its question's ``k`` documents."""
        batch, k = doc_logprior.shape
        rows = torch.arange(batch * k).view(batch, 1, k).expand(batch, beams, k).reshape(-1)
        decoding = _Decoding(generator, state, rows)
        prior = doc_logprior.repeat_interleave(beams, dim=0)

        def advance(tokens: torch.Tensor) -> torch.Tensor:
            logprobs, first = decoding.step(tokens.repeat_interleave(k, dim=0))
            if first:  # one row per (question, document): mix, then copy to the beams
                mixed = self.mix(logprobs.view(batch, k, -1), doc_logprior.float())
                return torch.log_softmax(mixed, dim=-1).repeat_interleave(beams, dim=0)
            mixed = self.mix(logprobs.view(-1, k, logprobs.shape[-1]), prior.float())
            return torch.log_softmax(mixed, dim=-1)

        def reorder(beam_rows: torch.Tensor) -> None:
            nonlocal prior
            decoding.select((beam_rows[:, None] * k + torch.arange(k)).view(-1))
            prior = prior[beam_rows]

        return advance, reorder

    def decode(
        self,
        generator: Generator,
        state: Any,
        doc_logprior: torch.Tensor,
        settings: GenerationSettings,
    ) -> Decoded:
        advance, reorder = self._mixture(generator, state, doc_logprior, settings.num_beams)
        found = search(advance, reorder, len(doc_logprior), _search_settings(generator, settings))
        return _best(found)

    def stream(
        self,
        generator: Generator,
        state: Any,
        doc_logprior: torch.Tensor,
        settings: GenerationSettings,
    ) -> Iterator[Decoded]:
        advance, _ = self._mixture(generator, state, doc_logprior, 1)
        return _streamed(advance, len(doc_logprior), generator, settings)


class RagSequence(_Marginalizer):
    """rag-sequence: ``p(y|x) = Σ_z p(z|x) Π_t p(y_t | x, z, y_<t)``.

    Decoding runs a beam search per document, pools the hypotheses of a question's documents, and
    ranks them by their marginal probability. ``thorough`` computes ``p(y|x,z)`` of every pooled
    hypothesis under every document (as transformers does); ``fast`` takes ``p(y|x,z)`` from
    document ``z``'s own beam and treats it as 0 where ``y`` was not in that beam (the paper's
    approximation: no extra forward pass).
    """

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        decoding: Literal["thorough", "fast"] = Field(
            default="thorough", description="how pooled hypotheses are scored (see above)"
        )
        deduplicate: bool = Field(
            default=True, description="pool identical hypotheses of different documents once"
        )

    @staticmethod
    def sequence_loglik(
        logprobs: torch.Tensor, targets: torch.Tensor, pad_token_id: int, skip: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-document ``log p(y|x,z)`` and the smoothing sum, both ``[..., k]``.

        ``logprobs`` is ``[..., k, T, V]``, ``targets`` ``[..., T]`` (broadcast over documents);
        the first ``skip`` positions are left out of the likelihood (forced tokens).
        """
        targets = targets.unsqueeze(-2).expand(*logprobs.shape[:-1])
        keep = targets != pad_token_id
        likelihood = logprobs.gather(-1, targets[..., None]).squeeze(-1).masked_fill(~keep, 0.0)
        smooth = logprobs.sum(-1).masked_fill(~keep, 0.0)
        return likelihood[..., skip:].sum(-1), smooth.sum(-1)

    def loss(
        self,
        logprobs: torch.Tensor,
        doc_logprior: torch.Tensor,
        targets: torch.Tensor,
        pad_token_id: int,
        reduce: bool = True,
        label_smoothing: float = 0.0,
    ) -> torch.Tensor:
        likelihood, smooth = self.sequence_loglik(logprobs, targets, pad_token_id)
        vocab = logprobs.shape[-1]
        nll = -torch.logsumexp(likelihood + doc_logprior, dim=1)
        smooth_loss = -torch.logsumexp(smooth + vocab * doc_logprior, dim=1)
        if reduce:
            nll, smooth_loss = nll.sum(), smooth_loss.sum()
        return _smoothed(nll, smooth_loss, label_smoothing, vocab)

    def decode(
        self,
        generator: Generator,
        state: Any,
        doc_logprior: torch.Tensor,
        settings: GenerationSettings,
    ) -> Decoded:
        batch, k = doc_logprior.shape
        found = _search_rows(generator, state, batch * k, settings, settings.num_beams)
        pools = self._pool(found, doc_logprior)
        if self.params.decoding == "fast":
            scores = self._fast_scores(pools, found, doc_logprior)
        else:
            scores = self._thorough_scores(pools, generator, state, doc_logprior)
        sequences, best_scores = [], []
        for pool, pool_scores in zip(pools, scores, strict=True):
            best = int(torch.argmax(pool_scores))
            sequences.append(pool[best])
            best_scores.append(pool_scores[best])
        return Decoded(sequences, torch.stack(best_scores))

    def _pool(self, found: Hypotheses, doc_logprior: torch.Tensor) -> list[list[list[int]]]:
        """Each question's hypotheses from its documents, in document then beam order."""
        batch, k = doc_logprior.shape
        per_row = found.as_lists()
        pools = []
        for b in range(batch):
            pool: list[list[int]] = []
            for j in range(k):
                if torch.isneginf(doc_logprior[b, j]):
                    continue
                for hypothesis in per_row[b * k + j]:
                    if not (self.params.deduplicate and hypothesis in pool):
                        pool.append(hypothesis)
            pools.append(pool)
        return pools

    @staticmethod
    def _fast_scores(
        pools: list[list[list[int]]], found: Hypotheses, doc_logprior: torch.Tensor
    ) -> list[torch.Tensor]:
        k = doc_logprior.shape[1]
        per_row = found.as_lists()
        scores = []
        for b, pool in enumerate(pools):
            joint = torch.full((len(pool), k), float("-inf"))
            for j in range(k):
                beam = {tuple(h): i for i, h in reversed(list(enumerate(per_row[b * k + j])))}
                for c, hypothesis in enumerate(pool):
                    if tuple(hypothesis) in beam:
                        joint[c, j] = found.logprobs[b * k + j, beam[tuple(hypothesis)]]
            scores.append(torch.logsumexp(joint + doc_logprior[b].float(), dim=1))
        return scores

    def _thorough_scores(
        self,
        pools: list[list[list[int]]],
        generator: Generator,
        state: Any,
        doc_logprior: torch.Tensor,
    ) -> list[torch.Tensor]:
        """``log Σ_z p(z|x) p(y|x,z)`` of every pooled hypothesis under every document.

        Hypotheses are scored longest first in chunks of similar length (less padding), each
        chunk one batched ``Generator.score`` call on the encoder states ``start`` made.
        """
        k = doc_logprior.shape[1]
        pad = generator.pad_token_id
        skip = len(generator.start_token_ids) - 1
        owners = [b for b, pool in enumerate(pools) for _ in pool]
        hypotheses = [h for pool in pools for h in pool]
        order = sorted(range(len(hypotheses)), key=lambda i: -len(hypotheses[i]))
        likelihood = torch.empty(len(hypotheses), k)
        per_chunk = max(
            1, _RESCORE_BUDGET // (k * len(hypotheses[order[0]]) * generator.vocab_size)
        )
        for start in range(0, len(order), min(per_chunk, _RESCORE_CHUNK)):
            chosen = order[start : start + min(per_chunk, _RESCORE_CHUNK)]
            width = len(hypotheses[chosen[0]])
            labels = torch.full((len(chosen), width), pad, dtype=torch.int64)
            for row, index in enumerate(chosen):
                labels[row, : len(hypotheses[index])] = torch.tensor(hypotheses[index])
            owner = torch.tensor([owners[index] for index in chosen])
            rows = (owner[:, None] * k + torch.arange(k)).view(-1)
            logprobs = generator.score(
                generator.select(state, rows), labels.repeat_interleave(k, dim=0)
            )
            logprobs = logprobs.float().view(len(chosen), k, width, -1)
            scores, _ = self.sequence_loglik(logprobs, shift_left(labels, pad), pad, skip)
            likelihood[torch.tensor(chosen)] = scores.cpu()
        owner = torch.tensor(owners)
        marginal = torch.logsumexp(likelihood + doc_logprior[owner].float().cpu(), dim=1)
        return list(marginal.split([len(pool) for pool in pools]))


class Fusion(_Marginalizer):
    """fusion: ``p(y|x) = Π_t p(y_t | x, z_1 … z_k, y_<t)``, the generator reading all ``k``
    passages of a question in one context (Fusion-in-Decoder for seq2seq generators, one prompt
    for causal LMs; the generator's :class:`ragloom.protocols.FusedReading` start).

    The document prior decides which passages are read and in what ``order``; it does not
    weigh them, so the loss carries no gradient to the retriever. Decoding is one search per
    question; its score is ``log p(y|x)`` (divided by ``length ** length_penalty`` in beam
    search).
    """

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        order: Literal["best-first", "best-last"] = Field(
            default="best-first",
            description='passage order in the context; "best-last" puts the best passage next '
            "to the question (for causal LMs that read the end of a long prompt best)",
        )

    def start(
        self,
        generator: Generator,
        questions: Sequence[str],
        passages: Sequence[Sequence[PassageText]],
    ) -> Any:
        if not isinstance(generator, FusedReading):
            raise RagloomError(
                f"[marginalizer] fusion reads all passages at once, and the generator "
                f"{type(generator).__name__} has no start_fused (the FusedReading capability "
                f'of docs/plugins.md). Use type = "rag-token" or "rag-sequence".'
            )
        if self.params.order == "best-last":
            passages = [list(reversed(row)) for row in passages]
        return generator.start_fused(questions, passages)

    def loss(
        self,
        logprobs: torch.Tensor,
        doc_logprior: torch.Tensor,
        targets: torch.Tensor,
        pad_token_id: int,
        reduce: bool = True,
        label_smoothing: float = 0.0,
    ) -> torch.Tensor:
        if logprobs.shape[1] != 1:
            raise ValueError(
                f"fusion reads one fused context per question: logprobs [B, 1, T, V], got "
                f"{list(logprobs.shape)}"
            )
        return _token_loss(logprobs[:, 0], targets, pad_token_id, reduce, label_smoothing)

    def decode(
        self,
        generator: Generator,
        state: Any,
        doc_logprior: torch.Tensor,
        settings: GenerationSettings,
    ) -> Decoded:
        return _best(_search_rows(generator, state, len(doc_logprior), settings, 1))

    def stream(
        self,
        generator: Generator,
        state: Any,
        doc_logprior: torch.Tensor,
        settings: GenerationSettings,
    ) -> Iterator[Decoded]:
        advance, _ = _per_row(generator, state, len(doc_logprior), 1)
        return _streamed(advance, len(doc_logprior), generator, settings)
