"""A small exact generator for contract tests: a bigram table conditioned on the passage.

``p(y_t | passage, y_<t) = softmax(table[passage.id % contexts, y_{t-1}])``, with a seeded random
table. It implements the whole :class:`ragloom.protocols.Generator` protocol (and
:class:`ragloom.protocols.FusedReading`: a fused row's context comes from all its passage ids)
with exact, cheap arithmetic, so marginalizer contracts can check decoding and losses against
hand computations.
Token ids: 0 is padding, 1 is EOS, 2 starts every hypothesis; the rest are words ``t3``, ``t4``...
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..protocols import PassageText

PAD, EOS, START = 0, 1, 2


@dataclass(frozen=True)
class TableState:
    """Rows of a decoding: each row's context (table slice) and last token fed."""

    contexts: torch.Tensor
    last: torch.Tensor


class TableGenerator:
    """A passage-conditioned bigram model with a random table (see the module docstring)."""

    pad_token_id = PAD
    eos_token_id = EOS
    start_token_ids = [START]  # noqa: RUF012 (protocol attribute)
    special_token_ids = frozenset({PAD, EOS, START})
    forced_eos_token_id: int | None = None

    def __init__(
        self, vocab_size: int = 12, contexts: int = 7, seed: int = 0, scale: float = 2.0
    ) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.vocab_size = vocab_size
        self.contexts = contexts
        self.table = torch.randn(contexts, vocab_size, vocab_size, generator=generator) * scale
        self.table[:, :, PAD] = -1.0e4  # never generated, yet finite for label smoothing
        self.table[:, :, START] = -1.0e4

    def start(
        self, questions: Sequence[str], passages: Sequence[Sequence[PassageText]]
    ) -> TableState:
        ids = [passage.id % self.contexts for row in passages for passage in row]
        contexts = torch.tensor(ids, dtype=torch.int64)
        return TableState(contexts, torch.full_like(contexts, START))

    def start_fused(
        self, questions: Sequence[str], passages: Sequence[Sequence[PassageText]]
    ) -> TableState:
        """One row per question, its context decided by the ids of all its passages (missing
        ones, id ``-1``, left out)."""
        ids = [sum(p.id for p in row if p.id >= 0) % self.contexts for row in passages]
        contexts = torch.tensor(ids, dtype=torch.int64)
        return TableState(contexts, torch.full_like(contexts, START))

    def _logprobs(self, contexts: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.table[contexts, last], dim=-1)

    def step(self, state: TableState, tokens: torch.Tensor) -> tuple[torch.Tensor, TableState]:
        last = tokens[:, -1]
        return self._logprobs(state.contexts, last), TableState(state.contexts, last)

    def select(self, state: TableState, rows: torch.Tensor) -> TableState:
        return TableState(state.contexts[rows], state.last[rows])

    def score(self, state: TableState, labels: torch.Tensor) -> torch.Tensor:
        contexts = state.contexts[:, None].expand_as(labels)
        return self._logprobs(contexts, labels)

    def encode_targets(self, texts: Sequence[str]) -> torch.Tensor:
        rows = [[START, *(int(word[1:]) for word in text.split()), EOS] for text in texts]
        width = max(len(row) for row in rows)
        labels = torch.full((len(rows), width), PAD, dtype=torch.int64)
        for i, row in enumerate(rows):
            labels[i, : len(row)] = torch.tensor(row)
        return labels

    def decode(self, token_ids: Sequence[int]) -> str:
        return " ".join(f"t{token}" for token in token_ids if token not in self.special_token_ids)
