"""Every built-in generator passes the Generator contract: ``bart`` and ``causal-lm`` (with and
without a chat template), and the kits' own exact ``TableGenerator``."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragloom.context import BuildContext
from ragloom.plugins.bart_generator import BartGenerator
from ragloom.plugins.causal_lm_generator import CausalLMGenerator
from ragloom.spec import PipelineSettings
from ragloom.testing import GeneratorContract, TableGenerator
from ragloom.testing.tiny_models import bart_model, bpe_tokenizer, causal_lm_dir


def context(directory: Path) -> BuildContext:
    return BuildContext(directory, PipelineSettings())


@pytest.fixture(scope="module")
def bart(tmp_path_factory: pytest.TempPathFactory) -> BartGenerator:
    directory = tmp_path_factory.mktemp("bart")
    tokenizer = bpe_tokenizer(directory)
    bart_model(len(tokenizer)).save_pretrained(directory)
    return BartGenerator.from_spec(BartGenerator.Params(path=str(directory)), context(directory))


def causal_lm(directory: Path) -> CausalLMGenerator:
    params = CausalLMGenerator.Params(path=str(directory))
    return CausalLMGenerator.from_spec(params, context(directory))


@pytest.fixture(scope="module")
def chat_lm(tmp_path_factory: pytest.TempPathFactory) -> CausalLMGenerator:
    return causal_lm(causal_lm_dir(tmp_path_factory.mktemp("llama-chat")))


@pytest.fixture(scope="module")
def plain_lm(tmp_path_factory: pytest.TempPathFactory) -> CausalLMGenerator:
    return causal_lm(causal_lm_dir(tmp_path_factory.mktemp("llama"), seed=3, chat=False))


class TestBart(GeneratorContract):
    @pytest.fixture
    def generator(self, bart: BartGenerator) -> BartGenerator:
        return bart


class TestCausalLMChat(GeneratorContract):
    @pytest.fixture
    def generator(self, chat_lm: CausalLMGenerator) -> CausalLMGenerator:
        return chat_lm


class TestCausalLMPlain(GeneratorContract):
    @pytest.fixture
    def generator(self, plain_lm: CausalLMGenerator) -> CausalLMGenerator:
        return plain_lm


class TestTableGenerator(GeneratorContract):
    answers = ("t3", "t4 t5 t6")

    @pytest.fixture
    def generator(self) -> TableGenerator:
        return TableGenerator()
