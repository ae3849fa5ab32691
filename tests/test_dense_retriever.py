"""The dense retriever's document prior: exact stored-vector scores, scaled by temperature."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from ragloom import Pipeline, SpecError

QUESTIONS = ["who wrote animal farm", "paris capital of france"]


def test_temperature_sharpens_the_prior_and_keeps_the_ranking(
    tiny_rag: Callable[..., Path],
) -> None:
    spec = tiny_rag("dense", n_docs=5)
    plain = Pipeline.from_spec(spec).retrieve(QUESTIONS)
    sharp = Pipeline.from_spec(spec, {"retriever.temperature": 0.5}).retrieve(QUESTIONS)
    assert torch.equal(plain.ids, sharp.ids) and torch.equal(plain.scores, sharp.scores)
    torch.testing.assert_close(sharp.doc_scores, plain.doc_scores / 0.5)
    with torch.enable_grad():
        pipeline = Pipeline.from_spec(spec, {"retriever.temperature": 0.5})
        loss = pipeline.loss(QUESTIONS, ["orwell", "paris"])
        loss.backward()
    encoder = pipeline.encoder.trainable_model().model  # type: ignore[attr-defined]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())


@pytest.mark.parametrize("value", [0, -1.0, "nan"])
def test_temperature_must_be_positive(tiny_rag: Callable[..., Path], value: object) -> None:
    with pytest.raises(SpecError, match=r"\[retriever\] temperature"):
        Pipeline.from_spec(tiny_rag("dense"), {"retriever.temperature": float(value)})  # type: ignore[arg-type]
