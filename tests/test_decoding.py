"""Greedy and beam search give transformers' own generate() results on a real (tiny) BART."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import pytest
import torch
from transformers import BartConfig, BartForConditionalGeneration

from ragloom.plugins.decoding import (
    Hypotheses,
    SearchSettings,
    Stopped,
    greedy_search,
    greedy_steps,
    search,
)
from ragloom.spec import GenerationSettings

PAD, BOS, EOS = 1, 0, 2


@pytest.fixture(scope="module")
def bart() -> BartForConditionalGeneration:
    torch.manual_seed(0)
    config = BartConfig(
        vocab_size=40,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=64,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=EOS,
        decoder_start_token_id=EOS,
        forced_eos_token_id=EOS,
        init_std=0.3,
    )
    return BartForConditionalGeneration(config).eval()


@pytest.fixture(scope="module")
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 40, (3, 7), generator=generator)
    mask = torch.ones_like(ids)
    ids[1, 5:], mask[1, 5:] = PAD, 0
    ids[2, 3:], mask[2, 3:] = PAD, 0
    return ids, mask


class BartDriver:
    """Feeds our search's tokens to BART without a cache (the whole sequence every step)."""

    def __init__(
        self, model: BartForConditionalGeneration, ids: torch.Tensor, mask: torch.Tensor, beams: int
    ):
        self.model, self.mask = model, mask
        self.encoded = model.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
        self.rows = torch.arange(len(ids)).repeat_interleave(beams)
        self.sequences = torch.zeros(len(self.rows), 0, dtype=torch.int64)

    def advance(self, tokens: torch.Tensor) -> torch.Tensor:
        self.sequences = torch.cat([self.sequences, tokens], dim=1)
        out = self.model(
            encoder_outputs=(self.encoded[self.rows],),
            attention_mask=self.mask[self.rows],
            decoder_input_ids=self.sequences,
        )
        return torch.log_softmax(out.logits[:, -1].float(), dim=-1)

    def reorder(self, rows: torch.Tensor) -> None:
        self.rows, self.sequences = self.rows[rows], self.sequences[rows]


def assert_search_matches_generate(
    bart: BartForConditionalGeneration,
    inputs: tuple[torch.Tensor, torch.Tensor],
    num_return: int,
    **generation: Any,
) -> None:
    """Our search and ``bart.generate`` with the same ``[generation]`` keys: the same tokens, and
    in beam search the same scores."""
    ids, mask = inputs
    settings = GenerationSettings(max_length=12, **generation)
    with torch.inference_mode():
        expected = bart.generate(
            input_ids=ids,
            attention_mask=mask,
            max_length=12,
            num_return_sequences=num_return,
            do_sample=False,
            output_scores=True,
            return_dict_in_generate=True,
            **generation,
        )
        driver = BartDriver(bart, ids, mask, settings.num_beams)
        found = search(
            driver.advance,
            driver.reorder,
            len(ids),
            SearchSettings(settings, [EOS], EOS, PAD, EOS),
            num_return,
        )
    ours = [hypothesis for rows in found.as_lists() for hypothesis in rows]
    theirs = [[t for t in row if t != PAD] for row in expected.sequences.tolist()]
    assert ours == theirs
    if settings.num_beams > 1:
        torch.testing.assert_close(
            found.scores.reshape(-1), expected.sequences_scores, rtol=1e-5, atol=1e-5
        )


@pytest.mark.parametrize(
    ("num_beams", "length_penalty", "early_stopping", "min_length", "num_return"),
    [
        (1, 1.0, False, 0, 1),
        (4, 1.0, False, 0, 1),
        (4, 1.0, False, 0, 4),
        (3, 2.0, True, 5, 2),
        (2, 0.5, False, 0, 1),
    ],
)
def test_search_matches_transformers_generate(
    bart, inputs, num_beams, length_penalty, early_stopping, min_length, num_return
) -> None:  # type: ignore[no-untyped-def]
    assert_search_matches_generate(
        bart,
        inputs,
        num_return,
        num_beams=num_beams,
        length_penalty=length_penalty,
        early_stopping=early_stopping,
        min_length=min_length,
    )


@pytest.mark.parametrize(
    ("num_beams", "num_return", "controls"),
    [
        (4, 1, {"repetition_penalty": 1.3}),
        (3, 2, {"repetition_penalty": 0.7, "min_length": 5}),
        (4, 4, {"no_repeat_ngram_size": 2}),
        (2, 1, {"no_repeat_ngram_size": 1, "repetition_penalty": 2.0}),
        (1, 1, {"no_repeat_ngram_size": 2, "min_length": 8}),
        (1, 1, {"no_repeat_ngram_size": 1, "min_length": 6}),
    ],
)
def test_repetition_controls_match_transformers_generate(
    bart: BartForConditionalGeneration,
    inputs: tuple[torch.Tensor, torch.Tensor],
    num_beams: int,
    num_return: int,
    controls: dict[str, Any],
) -> None:
    """Each of these changes BART's tokens. Greedy search is left out with a repetition penalty:
    transformers' applies it to raw logits there (tests/test_rag_parity.py shows that this is the
    only difference)."""
    assert_search_matches_generate(bart, inputs, num_return, num_beams=num_beams, **controls)


VOCAB = 12
LETTERS = "<_>abcdefghi"
"""A fake detokenizer: token ``t`` reads as ``LETTERS[t]``."""


class Markov:
    """A fake model: the next token's log-probs depend on the problem and the last token only,
    so ``reorder`` only keeps track of which problem each row is. EOS and PAD are all but
    impossible."""

    def __init__(self, n: int, beams: int, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        table = torch.randn(n, VOCAB, VOCAB, generator=generator) * 2
        table[..., EOS] = table[..., PAD] = -30.0
        self.table = torch.log_softmax(table, dim=-1)
        self.problem = torch.arange(n).repeat_interleave(beams)

    def advance(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.table[self.problem, tokens[:, -1]]

    def reorder(self, rows: torch.Tensor) -> None:
        self.problem = self.problem[rows]


def fake_search(
    n: int, eos: int, stopped: Stopped | None, num_return: int = 1, **generation: Any
) -> Hypotheses:
    settings = GenerationSettings(max_length=10, **generation)
    search_settings = SearchSettings(settings, [BOS], eos, PAD, None, stopped)
    model = Markov(n, settings.num_beams)
    return search(model.advance, model.reorder, n, search_settings, num_return)


def test_greedy_search_ends_a_row_its_stop_hook_ends() -> None:
    plain = fake_search(2, EOS, None).as_lists()
    assert [len(rows[0]) for rows in plain] == [10, 10]
    text = "".join(LETTERS[t] for t in plain[0][0][1:])
    stop = text[3:5]  # the fourth and fifth tokens of problem 0's answer
    assert stop not in "".join(LETTERS[t] for t in plain[1][0][1:])
    calls: list[list[int]] = []

    def stopped(tokens: Sequence[int]) -> bool:
        calls.append(list(tokens))
        return stop in "".join(LETTERS[t] for t in tokens)

    found = fake_search(2, EOS, stopped)
    assert found.as_lists() == [[plain[0][0][: 1 + text.index(stop) + 2]], plain[1]]
    assert found.lengths.tolist() == [[1 + text.index(stop) + 2], [10]]
    generated = [rows[0][1:] for rows in plain]
    assert calls[:2] == [generated[0][:1], generated[1][:1]]  # the tokens after the prefix
    assert all(call in (row[: len(call)] for row in generated) for call in calls)


@pytest.mark.parametrize(
    ("num_beams", "num_return", "length_penalty"), [(1, 1, 1.0), (3, 3, 1.0), (3, 2, 0.5)]
)
def test_a_stop_hook_ends_hypotheses_as_eos_does(
    num_beams: int, num_return: int, length_penalty: float
) -> None:
    """Ending at token 9 by the hook, or because 9 is EOS: the same hypotheses and scores."""
    generation = {"num_beams": num_beams, "length_penalty": length_penalty}
    as_eos = fake_search(2, 9, None, num_return, **generation)
    hooked = fake_search(2, EOS, lambda tokens: tokens[-1] == 9, num_return, **generation)
    assert bool((as_eos.lengths < 10).any()), "no hypothesis ends early: the test proves nothing"
    for field in ("tokens", "lengths", "scores", "logprobs"):
        assert torch.equal(getattr(hooked, field), getattr(as_eos, field)), field
    hypotheses = [hypothesis for rows in hooked.as_lists() for hypothesis in rows]
    assert all(len(h) == 10 or h[-1] == 9 for h in hypotheses)
    if num_beams > 1:  # finished hypotheses are ranked length-normalized
        normalized = hooked.logprobs / (hooked.lengths - 1).float() ** length_penalty
        torch.testing.assert_close(hooked.scores, normalized)


class Counting(Markov):
    """:class:`Markov`, counting its calls."""

    def __init__(self, n: int, beams: int) -> None:
        super().__init__(n, beams)
        self.calls = 0

    def advance(self, tokens: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return super().advance(tokens)


def test_greedy_steps_stream_greedy_search_one_token_at_a_time() -> None:
    settings = SearchSettings(GenerationSettings(max_length=12), [BOS, 5], 9, PAD, None)
    model = Counting(3, 1)
    states: list[Hypotheses] = []
    seen: list[torch.Tensor] = []
    for state in greedy_steps(model.advance, 3, settings):
        assert model.calls == len(states) + 1  # the model runs for a step only when it is asked
        states.append(state)
        seen.append(state.tokens.clone())
    result = greedy_search(Markov(3, 1).advance, 3, settings)
    for field in ("tokens", "lengths", "scores", "logprobs"):
        assert torch.equal(getattr(states[-1], field), getattr(result, field)), field
    final = states[-1].lengths.view(-1)
    assert int(final.min()) < 12 == int(final.max()), "rows should end both early and at the limit"
    for step, state in enumerate(states):
        assert state.tokens.shape == (3, 1, 2 + step + 1)  # one token more each step
        assert torch.equal(state.tokens, seen[step])  # later steps did not write it
    for earlier, later in itertools.pairwise(states):
        assert torch.equal(later.tokens[..., :-1], earlier.tokens)
        grew = later.lengths - earlier.lengths
        finished = earlier.lengths < earlier.tokens.shape[-1]
        assert set(grew.view(-1).tolist()) <= {0, 1} and not bool(grew[finished].any())


def test_greedy_steps_yield_nothing_without_room_for_a_step() -> None:
    settings = SearchSettings(GenerationSettings(max_length=2), [BOS, 5], EOS, PAD, None)
    model = Counting(2, 1)
    assert list(greedy_steps(model.advance, 2, settings)) == [] and model.calls == 0
    assert greedy_search(model.advance, 2, settings).as_lists() == [[[BOS, 5]], [[BOS, 5]]]


def test_greedy_search_stops_computing_the_problems_that_finished() -> None:
    """With ``reorder``, once half the problems have ended the state keeps only those still
    running; every problem's tokens, lengths and scores are those of the search without it."""
    settings = SearchSettings(GenerationSettings(max_length=10), [BOS], EOS, PAD, None)

    def model() -> Markov:
        markov = Markov(4, 1, seed=2)
        markov.table[:2, :, EOS] = 5.0  # problems 0 and 1 end at their first step
        return markov

    plain = greedy_search(model().advance, 4, settings)
    compacting = model()
    rows: list[int] = []

    def advance(tokens: torch.Tensor) -> torch.Tensor:
        rows.append(len(tokens))
        return compacting.advance(tokens)

    found = greedy_search(advance, 4, settings, compacting.reorder)
    for field in ("tokens", "lengths", "scores", "logprobs"):
        assert torch.equal(getattr(found, field), getattr(plain, field)), field
    assert plain.lengths.view(-1).tolist() == [2, 2, 10, 10]
    assert rows == [4] + [2] * 8  # the two finished problems left the state after one step
