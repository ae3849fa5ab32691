"""Greedy and beam search over any next-token distribution, batched over independent problems.

Both follow transformers' generate (v5) step for step, so that a marginalizer driving them gives
the same tokens as the reference: the same logits processing, in transformers' order (repetition
penalty, n-gram ban, min length, forced EOS at ``max_length``), the same beam bookkeeping
(2 * beams candidates per step, finished hypotheses scored
``sum / generated_length ** length_penalty``, the same early-stop heuristic).

The processors see each row's tokens so far, the prefix included (transformers' decoder input
ids include the decoder start token), and work on the log-probs ``advance`` returns, as
transformers' beam search and RagTokenForGeneration's greedy search do. transformers' greedy
search over a plain generator (RagSequenceForGeneration's, per document) applies them to the raw
logits instead: the bans (n-gram, min length, forced EOS) come out the same, a repetition
penalty does not (dividing a positive logit is not multiplying a negative log-prob).

Stop conditions beyond EOS come from an optional hook, ``SearchSettings.stopped``: called with a
hypothesis' tokens after the prefix (the newest last) each time it grows, True ends it as EOS
would. Greedy search stops that row (its last token is kept); beam search treats the candidate
as it treats an EOS candidate: finished, with its length-normalized score, if it ranks among the
``beams`` best candidates of the step, dropped otherwise. The hook sees token ids only: matching
stop strings (decoding the tokens) is its caller's business. It runs in Python once per running
row (greedy) or per candidate that did not end at EOS (beam, ``2 * beams`` per problem) per step.

:func:`greedy_steps` yields greedy search's hypotheses after every step (streaming);
:func:`greedy_search` runs it to its end.

The search does not know the model. It calls ``advance(tokens)`` with ``int64 [n * beams, t]``
tokens (the whole prefix first, then one token) and gets ``float32 [n * beams, V]`` log-probs, and
calls ``reorder(rows)`` when beams are reordered (``rows`` indexes the previous ``n * beams``).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from ragloom.spec import GenerationSettings

Advance = Callable[[torch.Tensor], torch.Tensor]
"""Log-probs ``[rows, V]`` of the next token, given each row's last tokens ``[rows, t]``."""
Reorder = Callable[[torch.Tensor], None]
"""Makes the state's rows the old rows given (``int64 [rows]``): beam search reorders, greedy
search keeps only the problems still running."""
Stopped = Callable[[Sequence[int]], bool]

_NEG = -1.0e9  # transformers' "impossible" score in beam bookkeeping


@dataclass(frozen=True)
class Hypotheses:
    """``r`` hypotheses for each of ``n`` problems, best first.

    - ``tokens``: ``int64 [n, r, L]``, prefix included, padded with the pad id after ``lengths``;
    - ``lengths``: ``int64 [n, r]``, tokens in each hypothesis (prefix included);
    - ``scores``: ``float32 [n, r]``, what the search ranked by (beam: length-normalized);
    - ``logprobs``: ``float32 [n, r]``, the summed log-probs of the tokens after the prefix.
    """

    tokens: torch.Tensor
    lengths: torch.Tensor
    scores: torch.Tensor
    logprobs: torch.Tensor

    def as_lists(self) -> list[list[list[int]]]:
        """The hypotheses as token lists without padding: ``[n][r][length]``."""
        tokens, lengths = self.tokens.tolist(), self.lengths.tolist()
        return [
            [row[:length] for row, length in zip(rows, row_lengths, strict=True)]
            for rows, row_lengths in zip(tokens, lengths, strict=True)
        ]


@dataclass(frozen=True)
class SearchSettings:
    """What a search needs besides the model: the spec's ``[generation]``, the special ids, and
    an optional stop hook (see the module docstring)."""

    generation: GenerationSettings
    prefix: Sequence[int]
    eos_token_id: int
    pad_token_id: int
    forced_eos_token_id: int | None
    stopped: Stopped | None = None

    def ends(self, tokens: torch.Tensor, asked: torch.Tensor) -> torch.Tensor:
        """Which hypotheses the stop hook ends: ``int64 [..., t]`` tokens (the prefix included)
        and ``bool [...]`` (the ones to ask about) → ``bool [...]``, False where not asked."""
        if self.stopped is None:
            return torch.zeros_like(asked)
        generated = tokens[..., len(self.prefix) :].reshape(-1, tokens.shape[-1] - len(self.prefix))
        rows, ask = generated.tolist(), asked.reshape(-1).tolist()
        ended = [a and bool(self.stopped(row)) for row, a in zip(rows, ask, strict=True)]
        return torch.tensor(ended, dtype=torch.bool).view(asked.shape)

    def process(self, logprobs: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """The logits processors of transformers' generate, in its order: ``float32 [rows, V]``
        scores of the token after each row of ``tokens`` (``int64 [rows, length]``, the prefix
        included) → the processed scores, same shape."""
        generation, length = self.generation, tokens.shape[1]
        tokens = tokens.to(logprobs.device)
        if generation.repetition_penalty != 1.0:
            logprobs = _penalize_repetition(logprobs, tokens, generation.repetition_penalty)
        if generation.no_repeat_ngram_size > 0:
            logprobs = _ban_repeated_ngrams(logprobs, tokens, generation.no_repeat_ngram_size)
        if length < generation.min_length:
            logprobs = logprobs.clone()
            logprobs[:, self.eos_token_id] = -math.inf
        if self.forced_eos_token_id is not None and length == generation.max_length - 1:
            forced = torch.full_like(logprobs, -math.inf)
            forced[:, self.forced_eos_token_id] = 0.0
            logprobs = forced
        return logprobs


def _penalize_repetition(
    scores: torch.Tensor, tokens: torch.Tensor, penalty: float
) -> torch.Tensor:
    """transformers' ``RepetitionPenaltyLogitsProcessor``: in ``scores`` (``[rows, V]``), each
    token of its row of ``tokens`` (``[rows, t]``) is multiplied by ``penalty`` where negative
    and divided by it otherwise, once however often it occurs."""
    seen = scores.gather(1, tokens)
    return scores.scatter(1, tokens, torch.where(seen < 0, seen * penalty, seen / penalty))


def _ban_repeated_ngrams(scores: torch.Tensor, tokens: torch.Tensor, size: int) -> torch.Tensor:
    """transformers' ``NoRepeatNGramLogitsProcessor``: in ``scores`` (``[rows, V]``), -inf for
    every token that would complete an n-gram of ``size`` tokens already in its row of
    ``tokens`` (``[rows, t]``)."""
    length, vocab = tokens.shape[1], scores.shape[1]
    if length < size:
        return scores
    windows = tokens.unfold(1, size, 1)  # [rows, t - size + 1, size]
    suffix = tokens[:, length + 1 - size :]  # [rows, size - 1]: the n-gram begun at the end
    matches = (windows[..., :-1] == suffix[:, None]).all(dim=-1)
    banned = torch.zeros(scores.shape[0], vocab + 1, dtype=torch.bool, device=scores.device)
    banned.scatter_(1, torch.where(matches, windows[..., -1], vocab), True)  # vocab: no ban
    return scores.masked_fill(banned[:, :vocab], -math.inf)


def greedy_steps(
    advance: Advance, n: int, settings: SearchSettings, reorder: Reorder | None = None
) -> Iterator[Hypotheses]:
    """Greedy search one step at a time, for streaming: after every step, the hypotheses so far
    (one per problem, a finished one as it ended, ``tokens`` as wide as the longest); the last
    is :func:`greedy_search`'s result. Nothing when ``max_length`` leaves no room after the prefix.

    ``advance`` runs for a step only when its state is asked for. With ``reorder``, once half
    the problems the state holds have finished, it is called with the rows of those still
    running, and later steps ask ``advance`` for those rows only: a batch stops paying for its
    finished answers. A yielded ``tokens`` is a view of the search's buffer that later steps do
    not write (they write the positions after it): read it, copy it, do not write to it.
    """
    prefix = torch.tensor(list(settings.prefix), dtype=torch.int64)
    max_length, length = settings.generation.max_length, len(prefix)
    if length >= max_length:
        return
    tokens = torch.full((n, max_length), settings.pad_token_id, dtype=torch.int64)
    tokens[:, :length] = prefix
    lengths = torch.full((n,), length, dtype=torch.int64)
    total = torch.zeros(n)
    running = torch.ones(n, dtype=torch.bool)
    held = torch.arange(n)  # the problems the state holds, in its row order
    logprobs = advance(tokens[:, :length])
    while True:
        processed = settings.process(logprobs.float(), tokens[held, :length])
        chosen = processed.argmax(dim=-1)
        gained = processed.gather(1, chosen[:, None]).squeeze(1)
        live = running[held]
        total[held] += torch.where(live, gained, torch.zeros_like(gained))
        tokens[held, length] = torch.where(live, chosen, settings.pad_token_id)
        lengths[held] += live.long()
        running[held] &= chosen != settings.eos_token_id
        running &= ~settings.ends(tokens[:, : length + 1], running)
        length += 1  # the longest hypothesis: a row that ran this step has this length
        summed = total[:, None].clone()
        yield Hypotheses(tokens[:, None, :length], lengths[:, None].clone(), summed, summed)
        if not running.any() or length >= max_length:
            return
        if reorder is not None and 2 * int(running[held].sum()) <= len(held):
            kept = running[held].nonzero().squeeze(1)
            reorder(kept)
            held = held[kept]
        logprobs = advance(tokens[held, length - 1 : length])


def greedy_search(
    advance: Advance, n: int, settings: SearchSettings, reorder: Reorder | None = None
) -> Hypotheses:
    """The argmax token at every step until EOS or ``max_length``; one hypothesis per problem
    (:func:`greedy_steps` to its end; the bare prefix when there is no room for a step)."""
    last = deque(greedy_steps(advance, n, settings, reorder), maxlen=1)
    return last[0] if last else prefix_only(n, settings)


def _gather(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``values[b, index[b, i], ...]`` for ``values`` of shape ``[n, m, ...]``."""
    expanded = index.view(*index.shape, *([1] * (values.dim() - 2))).expand(
        *index.shape, *values.shape[2:]
    )
    return values.gather(1, expanded)


def beam_search(
    advance: Advance,
    reorder: Reorder,
    n: int,
    settings: SearchSettings,
    num_return: int = 1,
) -> Hypotheses:
    """Beam search with ``settings.generation.num_beams`` beams for each of ``n`` problems.

    The caller's state must already hold ``n * beams`` rows (problem-major). Returns the best
    ``num_return`` finished hypotheses of each problem.
    """
    generation = settings.generation
    beams, max_length = generation.num_beams, generation.max_length
    if not 1 <= num_return <= beams:
        raise ValueError(f"num_return must be between 1 and num_beams={beams}, got {num_return}")
    prompt = len(settings.prefix)
    keep = 2 * beams
    penalty = generation.length_penalty

    running = torch.full((n, beams, max_length), settings.pad_token_id, dtype=torch.int64)
    running[:, :, :prompt] = torch.tensor(list(settings.prefix), dtype=torch.int64)
    running_scores = torch.zeros(n, beams)
    running_scores[:, 1:] = _NEG
    finished = running.clone()
    finished_scores = torch.full((n, beams), _NEG)
    finished_logprobs = torch.full((n, beams), _NEG)
    finished_lengths = torch.full((n, beams), prompt, dtype=torch.int64)
    is_finished = torch.zeros(n, beams, dtype=torch.bool)
    improvable = torch.ones(n, 1, dtype=torch.bool)
    counts_toward_finished = torch.arange(keep) < beams
    offsets = torch.arange(n)[:, None] * beams

    length = prompt
    logprobs = advance(running[:, :, :prompt].reshape(n * beams, prompt))
    while True:
        flat = running[:, :, :length].reshape(n * beams, length)
        processed = settings.process(logprobs.float(), flat)
        vocab = processed.shape[-1]
        accumulated = (processed.view(n, beams, vocab) + running_scores[:, :, None]).view(n, -1)
        top_scores, top_index = accumulated.topk(keep, dim=1)
        source = top_index // vocab
        candidates = _gather(running, source)
        candidates[:, :, length] = top_index % vocab
        stops = (candidates[:, :, length] == settings.eos_token_id) | (length + 1 >= max_length)
        stops |= settings.ends(candidates[:, :, : length + 1], ~stops)

        continuing = top_scores + stops.float() * _NEG
        chosen = continuing.topk(beams, dim=1).indices
        running = _gather(candidates, chosen)
        running_scores = _gather(continuing, chosen)
        running_source = _gather(source, chosen)

        just_finished = stops & counts_toward_finished
        normalized = top_scores / ((length + 1 - prompt) ** penalty)
        full = is_finished.all(dim=1, keepdim=True) & generation.early_stopping
        normalized = normalized + full.float() * _NEG + (~improvable).float() * _NEG
        normalized = normalized + (~just_finished).float() * _NEG
        merged_scores = torch.cat([finished_scores, normalized], dim=1)
        best = merged_scores.topk(beams, dim=1).indices
        finished = _gather(torch.cat([finished, candidates], dim=1), best)
        finished_scores = _gather(merged_scores, best)
        finished_logprobs = _gather(torch.cat([finished_logprobs, top_scores], dim=1), best)
        new_lengths = torch.full((n, keep), length + 1, dtype=torch.int64)
        finished_lengths = _gather(torch.cat([finished_lengths, new_lengths], dim=1), best)
        is_finished = _gather(torch.cat([is_finished, just_finished], dim=1), best)

        length += 1
        best_possible = running_scores[:, :1] / ((length - prompt) ** penalty)
        worst_finished = torch.where(
            is_finished, finished_scores.min(dim=1, keepdim=True).values, _NEG
        )
        improvable = improvable & (best_possible > worst_finished).any(dim=1, keepdim=True)
        all_full = bool(is_finished.all()) and generation.early_stopping
        if not bool(improvable.any()) or all_full or bool(stops.all()):
            break
        reorder((running_source + offsets).view(-1))
        logprobs = advance(running[:, :, length - 1].reshape(n * beams, 1))

    width = int(finished_lengths[:, :num_return].max())
    return Hypotheses(
        finished[:, :num_return, :width],
        finished_lengths[:, :num_return],
        finished_scores[:, :num_return],
        finished_logprobs[:, :num_return],
    )


def prefix_only(n: int, settings: SearchSettings, num_return: int = 1) -> Hypotheses:
    """What a search returns when ``max_length`` leaves no room after the prefix: the prefix
    itself, ``num_return`` times per problem, with log-prob 0 (nothing was generated)."""
    prefix = torch.tensor(list(settings.prefix), dtype=torch.int64)
    tokens = prefix.expand(n, num_return, len(prefix)).clone()
    lengths = torch.full((n, num_return), len(prefix), dtype=torch.int64)
    zeros = torch.zeros(n, num_return)
    return Hypotheses(tokens, lengths, zeros, zeros.clone())


def search(
    advance: Advance,
    reorder: Reorder,
    n: int,
    settings: SearchSettings,
    num_return: int = 1,
) -> Hypotheses:
    """Greedy search for one beam, beam search otherwise (as transformers' generate chooses);
    the bare prefix when ``max_length`` is no longer than it (no model call)."""
    if settings.generation.max_length <= len(settings.prefix):
        return prefix_only(n, settings, num_return)
    if settings.generation.num_beams == 1:
        return greedy_search(advance, n, settings, reorder)
    return beam_search(advance, reorder, n, settings, num_return)
