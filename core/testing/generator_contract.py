"""The Generator contract: what every generator plugin must do, as tests to inherit.

Subclass :class:`GeneratorContract` and provide the ``generator`` fixture (the generator under
test; return one from a module-scoped fixture to load its model once). ``answers`` are texts
that its tokenizer encodes and decodes back unchanged (override them for another vocabulary);
``questions`` and ``passages`` are the contexts the tests read. ``atol`` bounds the difference
between two computations of the same log-probabilities (cached against one pass, batched
against alone).

```python
@pytest.fixture(scope="module")
def loaded():
    return MyGenerator.from_spec(MyGenerator.Params(path=...), context)


class TestMyGenerator(GeneratorContract):
    @pytest.fixture
    def generator(self, loaded):
        return loaded
```

Optional: ``spec_table``, the ``(params, context)`` the generator was built from; with it a
:class:`ragloom.protocols.DecoderFromFiles` class must tell the built model's vocabulary from
its files alone. A :class:`ragloom.protocols.ForcesEos` generator's token must be None or in
its vocabulary.

The marginalizers drive a generator through ``start``, ``step``, ``select`` and ``score`` alone,
so these tests check each against the others: incremental steps against one pass, ``select``
against starting afresh, ``score`` against stepping token by token. A
:class:`ragloom.protocols.FusedReading` generator's fused states pass the same checks, and a
missing passage (id ``-1``) changes nothing in them.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from ..protocols import (
    DecoderFromFiles,
    ForcesEos,
    FusedReading,
    Generator,
    PassageText,
    Trainable,
)

QUESTIONS = ("who wrote animal farm", "what is the capital of france")
PASSAGES = (
    (
        PassageText(0, "Animal Farm", "animal farm is a novel by orwell"),
        PassageText(1, "Orwell", "orwell wrote the book animal farm in england"),
    ),
    (
        PassageText(2, "Paris", "paris is the capital city of france"),
        PassageText(3, "Seine", "the river seine runs through paris"),
    ),
)


class GeneratorContract:
    """Tests every :class:`ragloom.protocols.Generator` must pass (fixtures: see the module)."""

    answers: tuple[str, ...] = ("paris", "animal farm orwell")
    questions: tuple[str, ...] = QUESTIONS
    passages: tuple[tuple[PassageText, ...], ...] = PASSAGES
    atol = 1e-4

    @pytest.fixture
    def generator(self) -> Any:
        raise pytest.UsageError("a GeneratorContract subclass must define the generator fixture")

    @pytest.fixture
    def spec_table(self) -> tuple[Any, Any] | None:
        return None

    # --- helpers ------------------------------------------------------------------------------

    def start(self, generator: Any) -> Any:
        """A state of ``R = B * k`` rows over ``questions`` and ``passages``."""
        return generator.start(list(self.questions), [list(row) for row in self.passages])

    def rows(self) -> int:
        return sum(len(row) for row in self.passages)

    def contexts(self) -> list[tuple[str, PassageText]]:
        """The ``R`` (question, passage) contexts, question-major, as the rows hold them."""
        return [(q, p) for q, row in zip(self.questions, self.passages, strict=True) for p in row]

    def answer_ids(self, generator: Any, text: str) -> list[int]:
        """``encode_targets([text])`` without padding, and without the start tokens when it
        begins with them (as decoding leaves them out of an answer's ``token_ids``)."""
        row = [int(i) for i in generator.encode_targets([text])[0].tolist()]
        start = list(generator.start_token_ids)
        row = row[len(start) :] if row[: len(start)] == start else row
        while row and row[-1] == generator.pad_token_id:
            row.pop()
        return row

    def words(self, generator: Any, text: str) -> list[int]:
        """The ids of ``text`` without special tokens, start tokens or padding."""
        ids = self.answer_ids(generator, text)
        return [i for i in ids if i not in generator.special_token_ids]

    def hypotheses(self, generator: Any, count: int) -> torch.Tensor:
        """``int64 [count, T]``: the start tokens, then words of the answers, all one length."""
        words = [w for answer in self.answers for w in self.words(generator, answer)]
        assert len(words) >= 3, "the answers must give at least three word tokens"
        rows = [
            [*generator.start_token_ids, *(words[(r + i) % len(words)] for i in range(3))]
            for r in range(count)
        ]
        return torch.tensor(rows, dtype=torch.int64)

    def check_logprobs(self, logprobs: torch.Tensor, generator: Any, *shape: int) -> None:
        assert logprobs.shape == (*shape, generator.vocab_size)
        assert logprobs.dtype == torch.float32
        assert not torch.isnan(logprobs).any() and (logprobs <= 1e-5).all()
        total = torch.logsumexp(logprobs, dim=-1)
        torch.testing.assert_close(total, torch.zeros_like(total), atol=1e-4, rtol=0)

    def close(self, actual: torch.Tensor, expected: torch.Tensor) -> None:
        torch.testing.assert_close(
            actual.detach().float().cpu(), expected.detach().float().cpu(), atol=self.atol, rtol=0
        )

    # --- tests --------------------------------------------------------------------------------

    def test_satisfies_the_protocol(self, generator: Any) -> None:
        assert isinstance(generator, Generator)
        vocabulary = range(generator.vocab_size)
        for name in ("eos_token_id", "pad_token_id", "vocab_size"):
            assert isinstance(getattr(generator, name), int), name
        assert generator.eos_token_id in vocabulary and generator.pad_token_id in vocabulary
        assert isinstance(generator.special_token_ids, frozenset)
        start = generator.start_token_ids
        assert isinstance(start, list) and start, "at least one token opens every hypothesis"
        assert all(isinstance(i, int) and i in vocabulary for i in start)

    def test_first_step_gives_log_probabilities(self, generator: Any) -> None:
        state = self.start(generator)
        prefix = torch.tensor([generator.start_token_ids] * self.rows())
        logprobs, _ = generator.step(state, prefix)
        self.check_logprobs(logprobs, generator, self.rows())

    def test_the_start_tokens_can_be_fed_whole_or_one_by_one(self, generator: Any) -> None:
        prefix = torch.tensor([generator.start_token_ids] * self.rows())
        whole, _ = generator.step(self.start(generator), prefix)
        state = self.start(generator)
        for t in range(prefix.shape[1]):
            one_by_one, state = generator.step(state, prefix[:, t : t + 1])
        self.close(one_by_one, whole)

    def test_steps_reuse_the_state(self, generator: Any) -> None:
        """Feeding a hypothesis one token per call equals feeding it in one call."""
        tokens = self.hypotheses(generator, self.rows())
        prefix = len(generator.start_token_ids)
        state = self.start(generator)
        logprobs, state = generator.step(state, tokens[:, :prefix])
        for t in range(prefix, tokens.shape[1]):
            logprobs, state = generator.step(state, tokens[:, t : t + 1])
            self.check_logprobs(logprobs, generator, self.rows())
            in_one_call, _ = generator.step(self.start(generator), tokens[:, : t + 1])
            self.close(logprobs, in_one_call)

    def test_select_with_repeats_equals_recomputation(self, generator: Any) -> None:
        """Beam expansion (rows repeated) then a beam reorder, against each final row's context
        started afresh alone and fed its whole history."""
        contexts = self.contexts()
        tokens = self.hypotheses(generator, 6)
        prefix = len(generator.start_token_ids)
        first = torch.tensor([3, 0, 0, 1, 2, 0])[: len(tokens)] % len(contexts)
        second = torch.tensor([1, 1, 0, 5, 2, 3])
        state = self.start(generator)
        _, state = generator.step(state, tokens[: len(contexts), :prefix])
        state = generator.select(state, first)
        _, state = generator.step(state, tokens[:, prefix : prefix + 1])
        state = generator.select(state, second)
        history = torch.cat([tokens[second, : prefix + 1], tokens[:, prefix + 1 : prefix + 2]], 1)
        logprobs, _ = generator.step(state, history[:, -1:])
        self.check_logprobs(logprobs, generator, len(second))
        final = first[second]
        fresh = generator.start(
            [contexts[r][0] for r in final.tolist()], [[contexts[r][1]] for r in final.tolist()]
        )
        expected, _ = generator.step(fresh, history)
        self.close(logprobs, expected)

    def test_score_equals_teacher_forcing(self, generator: Any) -> None:
        """Position ``t`` of ``score`` is the step distribution after ``labels[:, : t + 1]``,
        for hypotheses (start tokens first) and for ``encode_targets`` labels (padded)."""
        hypotheses = self.hypotheses(generator, self.rows())
        labels = generator.encode_targets(list(self.answers)).cpu()
        targets = labels[torch.arange(self.rows()) % len(labels)]
        for tokens in (hypotheses, targets):
            scored = generator.score(self.start(generator), tokens)
            self.check_logprobs(scored, generator, *tokens.shape)
            state = self.start(generator)
            for t in range(tokens.shape[1]):
                feed = tokens[:, : t + 1] if t == 0 else tokens[:, t : t + 1]
                stepped, state = generator.step(state, feed)
                self.close(scored[:, t], stepped)

    def test_score_leaves_the_state_usable(self, generator: Any) -> None:
        prefix = torch.tensor([generator.start_token_ids] * self.rows())
        state = self.start(generator)
        generator.score(state, self.hypotheses(generator, self.rows()))
        after, _ = generator.step(state, prefix)
        fresh, _ = generator.step(self.start(generator), prefix)
        self.close(after, fresh)

    def test_score_is_differentiable(self, generator: Any) -> None:
        trainable = isinstance(generator, Trainable)  # a bool: generator stays Any
        if not trainable:
            pytest.skip("not Trainable")
        with torch.enable_grad():
            scored = generator.score(self.start(generator), self.hypotheses(generator, self.rows()))
        assert scored.requires_grad

    def test_encode_targets_pads_with_pad_token_id(self, generator: Any) -> None:
        answers = list(self.answers)
        labels = generator.encode_targets(answers)
        assert labels.dtype == torch.int64 and labels.dim() == 2 and len(labels) == len(answers)
        for row, answer in enumerate(answers):
            alone = generator.encode_targets([answer])[0]
            assert labels.shape[1] >= len(alone)
            assert labels[row, : len(alone)].tolist() == alone.tolist()
            assert (labels[row, len(alone) :] == generator.pad_token_id).all()
        lengths = {len(generator.encode_targets([answer])[0]) for answer in answers}
        assert labels.shape[1] == max(lengths), "padded to the longest answer, no further"
        assert len(lengths) > 1, "the answers must differ in length to test padding"

    def test_decode_drops_special_tokens(self, generator: Any) -> None:
        for answer in self.answers:
            words = self.words(generator, answer)
            text = generator.decode(words)
            assert text.strip() == answer, "answers decode back to their text"
            assert generator.decode(self.answer_ids(generator, answer)) == text
            assert generator.decode([*words, generator.eos_token_id]) == text
        assert generator.decode(sorted(generator.special_token_ids)).strip() == ""

    def test_one_row_is_the_same_alone_and_in_a_batch(self, generator: Any) -> None:
        tokens = self.hypotheses(generator, self.rows())
        together, _ = generator.step(self.start(generator), tokens)
        for r, (question, passage) in enumerate(self.contexts()):
            alone, _ = generator.step(generator.start([question], [[passage]]), tokens[r : r + 1])
            self.close(alone[0], together[r])

    def test_forced_eos_token(self, generator: Any) -> None:
        vocabulary = range(generator.vocab_size)
        if not isinstance(generator, ForcesEos):
            pytest.skip("not ForcesEos")
        forced = generator.forced_eos_token_id
        assert forced is None or (isinstance(forced, int) and forced in vocabulary)

    def test_decoder_shape_from_files(
        self, generator: Any, spec_table: tuple[Any, Any] | None
    ) -> None:
        if not isinstance(type(generator), DecoderFromFiles):
            pytest.skip("not DecoderFromFiles")
        if spec_table is None:
            pytest.skip("no spec_table fixture")
        shape = type(generator).decoder_shape_from_spec(*spec_table)
        assert shape.vocab_size == generator.vocab_size
        assert shape.layers > 0 and shape.kv_width > 0 and shape.value_bytes > 0

    # --- FusedReading -------------------------------------------------------------------------

    def fused(self, generator: Any, rows: list[int] | None = None) -> Any:
        """A fused state of the questions ``rows`` (default: all), one row each."""
        if not isinstance(generator, FusedReading):
            pytest.skip("not FusedReading")
        chosen = range(len(self.questions)) if rows is None else rows
        return generator.start_fused(
            [self.questions[r] for r in chosen], [list(self.passages[r]) for r in chosen]
        )

    def test_fused_state_has_a_row_per_question(self, generator: Any) -> None:
        state = self.fused(generator)
        prefix = torch.tensor([generator.start_token_ids] * len(self.questions))
        logprobs, _ = generator.step(state, prefix)
        self.check_logprobs(logprobs, generator, len(self.questions))

    def test_fused_score_equals_stepping_and_each_row_alone(self, generator: Any) -> None:
        tokens = self.hypotheses(generator, len(self.questions))
        scored = generator.score(self.fused(generator), tokens)
        self.check_logprobs(scored, generator, *tokens.shape)
        state = self.fused(generator)
        for t in range(tokens.shape[1]):
            stepped, state = generator.step(
                state, tokens[:, : t + 1] if t == 0 else tokens[:, t : t + 1]
            )
            self.close(scored[:, t], stepped)
        for r in range(len(self.questions)):
            alone = generator.score(self.fused(generator, [r]), tokens[r : r + 1])
            self.close(alone[0], scored[r])

    def test_fused_select_equals_recomputation(self, generator: Any) -> None:
        tokens = self.hypotheses(generator, 3)
        prefix = len(generator.start_token_ids)
        rows = torch.tensor([1, 0, 1]) % len(self.questions)
        state = self.fused(generator)
        _, state = generator.step(state, tokens[: len(self.questions), :prefix])
        state = generator.select(state, rows)
        logprobs, _ = generator.step(state, tokens[:, prefix : prefix + 1])
        fresh = self.fused(generator, rows.tolist())
        expected, _ = generator.step(fresh, tokens[:, : prefix + 1])
        self.close(logprobs, expected)

    def test_fused_reading_leaves_out_missing_passages(self, generator: Any) -> None:
        fusing = isinstance(generator, FusedReading)  # a bool: generator stays Any
        if not fusing:
            pytest.skip("not FusedReading")
        question, passages = self.questions[0], list(self.passages[0])
        gap = PassageText(-1, "", "")
        tokens = self.hypotheses(generator, 1)
        with_gap = generator.score(generator.start_fused([question], [[*passages, gap]]), tokens)
        without = generator.score(generator.start_fused([question], [passages]), tokens)
        self.close(with_gap, without)
