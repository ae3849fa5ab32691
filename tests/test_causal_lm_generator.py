"""The causal-lm generator: both marginalizers drive it unchanged, and it matches transformers'
own generate() on a single passage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from ragloom.context import BuildContext
from ragloom.plugins.causal_lm_generator import (
    PADDING_SHARE,
    SHARED_PREFIX_MIN,
    CausalLMGenerator,
    length_groups,
    shared_prefix,
)
from ragloom.plugins.marginalizers import Fusion, RagSequence, RagToken
from ragloom.protocols import PassageText
from ragloom.spec import PipelineSettings
from ragloom.testing import MarginalizerContract
from ragloom.testing.tiny_models import causal_lm_dir


def build(directory: Path, **params: Any) -> CausalLMGenerator:
    context = BuildContext(directory, PipelineSettings())
    return CausalLMGenerator.from_spec(
        CausalLMGenerator.Params(path=str(directory), **params), context
    )


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return causal_lm_dir(tmp_path_factory.mktemp("llama-chat"))


@pytest.fixture(scope="module")
def plain_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return causal_lm_dir(tmp_path_factory.mktemp("llama"), seed=3, chat=False)


class TestRagTokenDrivesACausalLM(MarginalizerContract):
    @pytest.fixture
    def marginalizer(self) -> RagToken:
        return RagToken()

    @pytest.fixture
    def generator(self, chat_model: Path) -> CausalLMGenerator:
        return build(chat_model)


class TestRagSequenceDrivesACausalLM(MarginalizerContract):
    @pytest.fixture
    def marginalizer(self) -> RagSequence:
        return RagSequence()

    @pytest.fixture
    def generator(self, plain_model: Path) -> CausalLMGenerator:
        return build(plain_model)


class TestFusionDrivesACausalLM(MarginalizerContract):
    @pytest.fixture
    def marginalizer(self) -> Fusion:
        return Fusion()

    @pytest.fixture
    def generator(self, chat_model: Path) -> CausalLMGenerator:
        return build(chat_model)


def test_the_answer_opens_with_the_chat_templates_assistant_header(chat_model: Path) -> None:
    generator = build(chat_model)
    header = generator.tokenizer.decode(generator.start_token_ids)
    assert header == "<|im_start|>assistant\n"
    assert generator.tokenizer.convert_ids_to_tokens(generator.eos_token_id) == "<|im_end|>"


@pytest.mark.parametrize("chat", [True, False])
def test_one_passage_greedy_equals_transformers_generate(
    chat_model: Path, plain_model: Path, chat: bool
) -> None:
    generator = build(chat_model if chat else plain_model)
    passages = [
        [PassageText(0, "Paris", "paris is the capital of france")],
        [PassageText(1, "Moon", "apollo landing moon rocket space astronaut")],
    ]
    questions = ["what is the capital of france", "who went to the moon"]
    state = generator.start(questions, passages)
    answer = RagToken().decode(
        generator,
        state,
        torch.zeros(2, 1),
        _settings(max_length=len(generator.start_token_ids) + 10),
    )
    for row, (question, passage) in enumerate(zip(questions, passages, strict=True)):
        prompt = generator.prompt_ids(question, passage[0]) + generator.start_token_ids
        expected = generator.model.generate(
            torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.int64),
            do_sample=False,
            max_new_tokens=10,
            eos_token_id=generator.eos_token_id,
            pad_token_id=generator.pad_token_id,
        )[0, len(prompt) :].tolist()
        got = answer.sequences[row][len(generator.start_token_ids) :]
        assert got == expected[: len(got)] and (
            len(got) == len(expected) or expected[len(got)] == generator.pad_token_id
        )


def _settings(**values: int) -> Any:
    from ragloom.spec import GenerationSettings

    return GenerationSettings(**values)


def test_length_groups_bound_the_padding() -> None:
    lengths = [10, 100, 95, 12, 50, 11, 91]
    groups = length_groups(lengths)
    assert sorted(row for group in groups for row in group) == list(range(len(lengths)))
    assert groups == [[1, 2, 6], [4], [3, 5, 0]]
    for group in groups:
        padded = len(group) * max(lengths[row] for row in group)
        assert padded - sum(lengths[row] for row in group) <= PADDING_SHARE * padded


def test_shared_prefix_leaves_every_prompt_a_token_of_its_own() -> None:
    opening = list(range(100, 100 + SHARED_PREFIX_MIN))
    assert shared_prefix([[*opening, 1, 2], [*opening, 1, 3, 4]]) == SHARED_PREFIX_MIN + 1
    assert shared_prefix([[*opening, 1], [*opening, 1, 5]]) == SHARED_PREFIX_MIN  # not all of one
    assert shared_prefix([[*opening, 1]]) == 0  # one prompt: nothing to share
    assert shared_prefix([[*opening[1:], 7], [*opening[1:], 8]]) == 0  # too few in common


def test_prompts_of_any_lengths_step_as_if_each_were_alone(chat_model: Path) -> None:
    """Long and short prompts share the prefill of what they start with, then are prefilled in
    groups and their caches laid side by side: each row's next-token distribution is the one it
    has when started alone."""
    generator = build(chat_model)
    words = "paris is the capital of france and a city on the seine river".split()
    passages = [
        [PassageText(row, "Paris", " ".join(words[: 1 + 4 * row] * (1 + row)))] for row in range(4)
    ]
    questions = ["what is the capital of france"] * 4
    start = torch.tensor([generator.start_token_ids] * 4)
    prompts = [generator.prompt_ids(q, p[0]) for q, p in zip(questions, passages, strict=True)]
    assert shared_prefix(prompts) >= SHARED_PREFIX_MIN, "the chat template and instruction"
    together, _ = generator.step(generator.start(questions, passages), start)
    for row in range(4):
        alone, _ = generator.step(
            generator.start(questions[:1], passages[row : row + 1]), start[:1]
        )
        torch.testing.assert_close(together[row], alone[0], atol=1e-5, rtol=1e-4)
