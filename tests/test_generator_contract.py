"""Every built-in generator passes the Generator contract: ``bart`` and ``causal-lm`` (with and
without a chat template), and the kits' own exact ``TableGenerator``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ragloom.context import BuildContext
from ragloom.plugins.bart_generator import BartGenerator
from ragloom.plugins.causal_lm_generator import CausalLMGenerator
from ragloom.spec import PipelineSettings
from ragloom.testing import GeneratorContract, TableGenerator
from ragloom.testing.tiny_models import bart_model, bpe_tokenizer, causal_lm_dir


def context(directory: Path) -> BuildContext:
    return BuildContext(directory, PipelineSettings())


Built = tuple[Any, tuple[Any, BuildContext]]
"""A generator and the (params, context) it was built from."""


def built(component: Any, directory: Path) -> Built:
    spec_table = (component.Params(path=str(directory)), context(directory))
    return component.from_spec(*spec_table), spec_table


@pytest.fixture(scope="module")
def bart(tmp_path_factory: pytest.TempPathFactory) -> Built:
    directory = tmp_path_factory.mktemp("bart")
    tokenizer = bpe_tokenizer(directory)
    bart_model(len(tokenizer)).save_pretrained(directory)
    return built(BartGenerator, directory)


@pytest.fixture(scope="module")
def chat_lm(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return built(CausalLMGenerator, causal_lm_dir(tmp_path_factory.mktemp("llama-chat")))


@pytest.fixture(scope="module")
def plain_lm(tmp_path_factory: pytest.TempPathFactory) -> Built:
    directory = causal_lm_dir(tmp_path_factory.mktemp("llama"), seed=3, chat=False)
    return built(CausalLMGenerator, directory)


class HFGeneratorContract(GeneratorContract):
    """A generator of plugins/*_generator.py, from the module fixture named ``model``."""

    model = ""

    @pytest.fixture
    def loaded(self, request: pytest.FixtureRequest) -> Built:
        result: Built = request.getfixturevalue(self.model)
        return result

    @pytest.fixture
    def generator(self, loaded: Built) -> Any:
        return loaded[0]

    @pytest.fixture
    def spec_table(self, loaded: Built) -> tuple[Any, BuildContext]:
        return loaded[1]


class TestBart(HFGeneratorContract):
    model = "bart"


class TestCausalLMChat(HFGeneratorContract):
    model = "chat_lm"


class TestCausalLMPlain(HFGeneratorContract):
    model = "plain_lm"


class TestTableGenerator(GeneratorContract):
    answers = ("t3", "t4 t5 t6")

    @pytest.fixture
    def generator(self) -> TableGenerator:
        return TableGenerator()
