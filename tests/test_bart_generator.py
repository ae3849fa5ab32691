"""The bart generator's options: attention, dtype and quantization, checked before loading."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import faiss
import pytest
import torch

from ragloom import Pipeline, SpecError, load_spec
from ragloom.kb.hf import import_hf
from ragloom.testing.tiny_models import Size, rag_checkpoint, rag_spec, recipe_knowledge_base

QUESTIONS = ["who wrote animal farm", "paris capital of france"]
TARGETS = ["orwell", "paris"]


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bart")
    checkpoint, _, context = rag_checkpoint(root, seed=1, size=Size(generator_hidden=64))
    passages, index = recipe_knowledge_base(root, context, faiss.IndexFlatIP(32))
    path = root / "spec.toml"
    path.write_text(rag_spec(checkpoint, context, root / "kb", max_length=12))
    import_hf(passages, root / "kb", index, Pipeline.from_spec(path).encoder, "dpr")
    return path


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"attention": "flash"}, 'attention = "flash" runs only on a CUDA GPU, and device = "cpu"'),
        (
            {"attention": "flash", "device": "cuda"},
            'attention = "flash" needs dtype = "bfloat16" or "float16"',
        ),
        ({"attention": "flash_attention_2", "device": "cuda", "dtype": "bfloat16"}, "flash-attn"),
        ({"attention": "flsh"}, 'Did you mean "flash"?'),
    ],
)
def test_invalid_combinations_are_refused_before_loading(
    spec: Path, overrides: dict[str, str], message: str
) -> None:
    if "flash-attn" in message and importlib.util.find_spec("flash_attn") is not None:
        pytest.skip("flash-attn is installed here")
    with pytest.raises(SpecError) as excinfo:
        load_spec(spec, {f"generator.{key}": value for key, value in overrides.items()})
    assert message in str(excinfo.value)
    assert "[generator]" in str(excinfo.value)


def test_quantization_without_bitsandbytes_names_the_extra(
    spec: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "bitsandbytes" else find_spec(name, *args),
    )
    with pytest.raises(SpecError, match=r"needs bitsandbytes: pip install 'ragloom\[quant\]'"):
        load_spec(spec, {"generator.quantization": "4bit"})


def losses(spec: Path, **generator: str) -> torch.Tensor:
    overrides = {f"generator.{key}": value for key, value in generator.items()}
    with torch.no_grad():
        return Pipeline.from_spec(spec, overrides).loss(QUESTIONS, TARGETS, reduce=False)


@pytest.mark.parametrize(
    ("options", "tolerance"),
    [({"dtype": "bfloat16"}, 0.05), ({"quantization": "4bit"}, 0.15)],
    ids=["bfloat16", "4bit-nf4"],
)
def test_reduced_precision_stays_close_to_float32(
    spec: Path, options: dict[str, str], tolerance: float
) -> None:
    if "quantization" in options and importlib.util.find_spec("bitsandbytes") is None:
        pytest.skip("bitsandbytes is not installed")
    reference = losses(spec)
    reduced = losses(spec, **options)
    assert reduced.shape == reference.shape and torch.isfinite(reduced).all()
    torch.testing.assert_close(reduced, reference, rtol=tolerance, atol=0.0)
    answers = Pipeline.from_spec(spec, {f"generator.{k}": v for k, v in options.items()}).generate(
        QUESTIONS, num_beams=2
    )
    assert len(answers) == 2 and all(torch.isfinite(torch.tensor(a.score)) for a in answers)


def test_the_4bit_generator_quantizes_only_the_generator(spec: Path) -> None:
    if importlib.util.find_spec("bitsandbytes") is None:
        pytest.skip("bitsandbytes is not installed")
    import bitsandbytes as bnb

    pipeline = Pipeline.from_spec(spec, {"generator.quantization": "4bit"})
    generator_layers = [
        m for m in pipeline.generator.model.modules() if isinstance(m, bnb.nn.Linear4bit)
    ]
    encoder_layers = [
        m for m in pipeline.encoder.query_tower.model.modules() if isinstance(m, bnb.nn.Linear4bit)
    ]
    assert generator_layers and not encoder_layers


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("attention", ["flash", "flash_attention_2"])
def test_flash_attention_on_cuda(spec: Path, attention: str) -> None:
    if attention == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        pytest.skip("flash-attn is not installed")
    reference = losses(spec, device="cuda", dtype="bfloat16", attention="sdpa")
    flash = losses(spec, device="cuda", dtype="bfloat16", attention=attention)
    torch.testing.assert_close(flash.cpu(), reference.cpu(), rtol=0.02, atol=0.0)
