"""The fusion marginalizer in a pipeline: Fusion-in-Decoder against transformers' own BART,
in-context reading with a causal LM, training, and specs that cannot fuse."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from pydantic import BaseModel, ConfigDict

from ragloom import Pipeline, SpecError
from ragloom.registry import Registrar, Registry
from ragloom.testing.tiny_models import (
    causal_lm_dir,
)

QUESTIONS = ["who wrote animal farm", "paris capital of france", "what runs through paris"]
TARGETS = ["orwell", "paris", "the seine"]


@pytest.fixture(scope="module")
def root(tiny_rag: Callable[..., Path]) -> Path:
    """The directory of ``fid.toml``: fusion over four passages."""
    return tiny_rag("fid", marginalizer="fusion", n_docs=4, max_length=12).parent


def reference_fid(pipeline: Pipeline, questions: list[str], num_beams: int) -> list[list[int]]:
    """FiD by hand on transformers' BartForConditionalGeneration: each (passage, question)
    context encoded alone (the question as DPR rewrites it, as transformers' RAG reads it), a
    question's encoder outputs concatenated, then ``generate``."""
    from transformers.modeling_outputs import BaseModelOutput

    generator = pipeline.generator
    retrieved = pipeline.retrieve(questions)
    model, tokenizer = generator.model, generator.tokenizer  # type: ignore[attr-defined]
    read = pipeline.encoder.question_text(questions)  # type: ignore[attr-defined]
    contexts = generator.contexts(read, retrieved.passages)  # type: ignore[attr-defined]
    batch = tokenizer(contexts, max_length=300, truncation=True, padding=True, return_tensors="pt")
    with torch.no_grad():
        states = model.get_encoder()(**batch).last_hidden_state
    k = retrieved.ids.shape[1]
    fused = states.reshape(len(questions), k * states.shape[1], -1)
    mask = batch["attention_mask"].reshape(len(questions), -1)
    output = model.generate(
        encoder_outputs=BaseModelOutput(last_hidden_state=fused),
        attention_mask=mask,
        num_beams=num_beams,
        max_length=12,
        do_sample=False,
    )
    start = len(generator.start_token_ids)
    special = generator.special_token_ids
    return [[t for t in row[start:] if t not in special] for row in output.tolist()]


@pytest.mark.parametrize("num_beams", [1, 4])
def test_fid_gives_transformers_tokens(root: Path, num_beams: int) -> None:
    pipeline = Pipeline.from_spec(root / "fid.toml", {"generation.num_beams": num_beams})
    answers = pipeline.generate(QUESTIONS)
    assert [answer.token_ids for answer in answers] == reference_fid(pipeline, QUESTIONS, num_beams)
    assert all(len(answer.passages) == 4 for answer in answers)


def test_fid_reads_all_passages_not_one(root: Path) -> None:
    """The fused answer depends on the passages after the first: without them it differs in
    score (the decoder attends to every context)."""
    four = Pipeline.from_spec(root / "fid.toml").generate(QUESTIONS)
    one = Pipeline.from_spec(root / "fid.toml", {"pipeline.n_docs": 1}).generate(QUESTIONS)
    assert [a.score for a in four] != pytest.approx([a.score for a in one])


def test_fid_loss_is_the_fused_likelihood_and_trains_the_generator(root: Path) -> None:
    pipeline = Pipeline.from_spec(root / "fid.toml")
    with torch.enable_grad():
        loss = pipeline.loss(QUESTIONS, TARGETS, reduce=False)
        assert loss.shape == (3,) and torch.isfinite(loss).all()
        loss.sum().backward()
    grads = [p.grad for p in pipeline.generator.model.parameters()]  # type: ignore[attr-defined]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    greedy = pipeline.generate(QUESTIONS[:1])[0]
    with torch.no_grad():
        scored = -pipeline.loss(QUESTIONS[:1], [pipeline.generator.decode(greedy.token_ids)])
    assert float(scored) <= greedy.score + 1e-3, "greedy picks the argmax: no answer beats it"


def test_in_context_reading_with_a_causal_lm(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = causal_lm_dir(root / "fusion-lm", seed=2)
    table = {"type": "causal-lm", "path": str(model)}
    full = Pipeline.from_spec(root / "fid.toml", {"generator": table})
    passages = full.retrieve(QUESTIONS[:1]).passages[0]
    length = len(full.generator.fused_prompt_ids(QUESTIONS[0], passages)[0])  # type: ignore[attr-defined]
    empty = [replace(passage, text="") for passage in passages]
    bare = len(full.generator.fused_prompt_ids(QUESTIONS[0], empty)[0])  # type: ignore[attr-defined]
    limit = (length + bare) // 2  # room for about half of the passages' text
    overrides = {
        "generator": {**table, "max_fused_prompt_length": limit},
        "generation.max_length": 6,
    }
    pipeline = Pipeline.from_spec(root / "fid.toml", overrides)
    with caplog.at_level("WARNING", logger="ragloom"):
        answers = pipeline.generate(QUESTIONS)
        pipeline.generate(QUESTIONS)
    assert len(answers) == 3 and all(isinstance(a.text, str) for a in answers)
    said = [r.getMessage() for r in caplog.records if "max_fused_prompt_length" in r.getMessage()]
    assert len(said) == 1 and "of 3 fused prompts" in said[0], "said once, with counts"
    prompt, cut = pipeline.generator.fused_prompt_ids(  # type: ignore[attr-defined]
        QUESTIONS[0], answers[0].passages
    )
    assert cut and len(prompt) <= limit, "four passages do not fit: they are cut to fit"
    text = pipeline.generator.tokenizer.decode(prompt)  # type: ignore[attr-defined]
    assert text.count("Passage (") == 4 and QUESTIONS[0] in text
    assert "Answer the question from the passages" in text, "the instruction is kept"
    for passage in answers[0].passages:
        assert passage.text.split()[0] in text, "every passage keeps its beginning"


class PerPassage:
    """A third-party generator without start_fused (never built: the spec is refused first)."""

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")


def test_fusion_over_a_generator_that_cannot_fuse_is_refused(
    root: Path, registry: Registry, register: Registrar
) -> None:
    register("generator", "per-passage", PerPassage)
    with pytest.raises(SpecError, match=r"cannot \(it has no start_fused"):
        Pipeline.from_spec(root / "fid.toml", {"generator.type": "per-passage"}, registry=registry)


def test_validate_refuses_an_unknown_order(root: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ragloom.cli",
            "validate",
            str(root / "fid.toml"),
            "--set",
            "marginalizer.order=best-middle",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "[marginalizer] order" in result.stderr + result.stdout
    assert "best-first" in result.stderr + result.stdout


def test_validate_checks_a_fused_prompt_against_the_models_positions(root: Path) -> None:
    model = causal_lm_dir(root / "fusion-lm", seed=2)  # 1,024 positions
    generator = f"generator.type=causal-lm generator.path={model}".split()
    result = subprocess.run(
        [sys.executable, "-m", "ragloom.cli", "validate", str(root / "fid.toml")]
        + [arg for pair in generator for arg in ("--set", pair)]
        + ["--set", "generator.max_fused_prompt_length=1020"],
        capture_output=True,
        text=True,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output
    assert "after contexts of up to 1020 tokens" in output and "at most 4 answer tokens" in output
    per_passage = subprocess.run(
        [sys.executable, "-m", "ragloom.cli", "validate", str(root / "fid.toml")]
        + [arg for pair in generator for arg in ("--set", pair)]
        + [
            "--set",
            "generator.max_fused_prompt_length=1020",
            "--set",
            "marginalizer.type=rag-token",
        ],
        capture_output=True,
        text=True,
    )
    assert per_passage.returncode == 0, "the fused limit matters only under fusion"
