"""Parity with transformers' RAG (the oracle) on a tiny random checkpoint saved by transformers.

Same checkpoint, same knowledge base (transformers' custom-KB format, imported), same questions:
ragloom through Pipeline.from_spec, the reference through RagRetriever and RagToken/
RagSequenceForGeneration. Doc ids and scores, losses and generated tokens must agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faiss
import pytest
import torch
from transformers import (
    DPRQuestionEncoderTokenizerFast,
    RagRetriever,
    RagSequenceForGeneration,
    RagTokenForGeneration,
)

from ragloom import Pipeline
from ragloom.kb.hf import import_hf
from ragloom.testing.tiny_models import rag_checkpoint, rag_spec, recipe_knowledge_base

QUESTIONS = [
    "who wrote the novel animal farm",
    "Paris capital?",
    "when was the apollo moon landing rocket launched into space by astronauts",
]
TARGETS = ["orwell", "paris france", "moon landing"]


class Setup:
    def __init__(self, root: Path) -> None:
        self.checkpoint, question_dir, self.context_dir = rag_checkpoint(root)
        passages, index_path = recipe_knowledge_base(root, self.context_dir, faiss.IndexFlatIP(32))
        self.retriever = RagRetriever.from_pretrained(
            self.checkpoint,
            index_name="custom",
            passages_path=str(passages),
            index_path=str(index_path),
        )
        self.kb = root / "kb"
        self.root = root
        encoder = Pipeline.from_spec(self.spec("rag-token")).encoder
        import_hf(passages, self.kb, index_path, encoder, "dpr")
        self.tokenizer = DPRQuestionEncoderTokenizerFast.from_pretrained(question_dir)

    def spec(self, marginalizer: str) -> Path:
        path = self.root / f"{marginalizer}.toml"
        path.write_text(rag_spec(self.checkpoint, self.context_dir, self.kb, marginalizer))
        return path

    def reference(self, model_class: Any) -> Any:
        return model_class.from_pretrained(self.checkpoint, retriever=self.retriever).eval()

    def questions(self) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(QUESTIONS, padding=True, return_tensors="pt")
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    def labels(self) -> torch.Tensor:
        generator_tokenizer = self.retriever.generator_tokenizer
        ids: torch.Tensor = generator_tokenizer(TARGETS, padding=True, return_tensors="pt")[
            "input_ids"
        ]
        return ids


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    return Setup(tmp_path_factory.mktemp("parity"))


def test_doc_ids_and_scores(setup: Setup) -> None:
    model = setup.reference(RagTokenForGeneration)
    inputs = setup.questions()
    with torch.no_grad():
        queries = model.question_encoder(**inputs)[0]
        out = setup.retriever(
            inputs["input_ids"], queries.numpy(), prefix=None, n_docs=3, return_tensors="pt"
        )
        scores = torch.bmm(queries.unsqueeze(1), out["retrieved_doc_embeds"].transpose(1, 2))
    retrieved = Pipeline.from_spec(setup.spec("rag-token")).retrieve(QUESTIONS)
    assert retrieved.ids.tolist() == out["doc_ids"].tolist()
    torch.testing.assert_close(retrieved.scores, scores.squeeze(1), atol=1e-5, rtol=0)


@pytest.mark.parametrize("reduce", [True, False])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize(
    ("marginalizer", "model_class"),
    [("rag-token", RagTokenForGeneration), ("rag-sequence", RagSequenceForGeneration)],
)
def test_loss(
    setup: Setup, marginalizer: str, model_class: Any, reduce: bool, smoothing: float
) -> None:
    model = setup.reference(model_class)
    model.config.label_smoothing = smoothing
    with torch.no_grad():
        expected = model(**setup.questions(), labels=setup.labels(), reduce_loss=reduce).loss
        got = Pipeline.from_spec(setup.spec(marginalizer)).loss(
            QUESTIONS, TARGETS, reduce=reduce, label_smoothing=smoothing
        )
    torch.testing.assert_close(got, expected.reshape(got.shape), rtol=1e-5, atol=1e-5)


def reference_tokens(sequences: torch.Tensor, special: set[int]) -> list[list[int]]:
    return [[t for t in row if t not in special] for row in sequences.tolist()]


CONTROLS = [{}, {"repetition_penalty": 1.5}, {"no_repeat_ngram_size": 2}]
"""``[generation]`` decoding controls, passed alike to ragloom and to transformers' generate."""
CONTROL_IDS = ["plain", "repetition_penalty", "no_repeat_ngram_size"]


def assert_controls_matter(
    pipeline: Pipeline, num_beams: int, controls: dict[str, Any], answers: list[list[int]]
) -> None:
    """A control that leaves the answers as they are proves nothing."""
    if controls:
        plain = pipeline.generate(QUESTIONS, num_beams=num_beams)
        assert answers != [a.token_ids for a in plain], f"{controls} changed no answer"


@pytest.mark.parametrize("controls", CONTROLS, ids=CONTROL_IDS)
@pytest.mark.parametrize("num_beams", [1, 4])
def test_rag_token_generation(setup: Setup, num_beams: int, controls: dict[str, Any]) -> None:
    model = setup.reference(RagTokenForGeneration)
    with torch.no_grad():
        expected = model.generate(
            **setup.questions(), num_beams=num_beams, max_length=20, n_docs=3, **controls
        )
    special = set(setup.retriever.generator_tokenizer.all_special_ids)
    pipeline = Pipeline.from_spec(setup.spec("rag-token"))
    answers = [a.token_ids for a in pipeline.generate(QUESTIONS, num_beams=num_beams, **controls)]
    assert answers == reference_tokens(expected, special)
    assert any(len(tokens) > 1 for tokens in answers), "a degenerate model proves nothing"
    assert_controls_matter(pipeline, num_beams, controls, answers)


def rag_sequence_reference(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The reference, given the context attention mask it drops (hf_rag.md B2)."""
    model = setup.reference(RagSequenceForGeneration)
    generate = model.generator.generate
    pad = model.config.generator.pad_token_id

    def with_mask(input_ids: torch.Tensor, **kwargs: Any) -> Any:
        kwargs["attention_mask"] = input_ids.ne(pad).long()
        return generate(input_ids, **kwargs)

    monkeypatch.setattr(model.generator, "generate", with_mask)
    return model


def assert_rag_sequence_matches(
    setup: Setup, model: Any, num_beams: int, controls: dict[str, Any]
) -> None:
    with torch.no_grad():
        expected = model.generate(
            **setup.questions(), num_beams=num_beams, max_length=20, n_docs=3, **controls
        )
    special = set(setup.retriever.generator_tokenizer.all_special_ids)
    pipeline = Pipeline.from_spec(setup.spec("rag-sequence"))
    answers = [a.token_ids for a in pipeline.generate(QUESTIONS, num_beams=num_beams, **controls)]
    assert answers == reference_tokens(expected, special)
    assert_controls_matter(pipeline, num_beams, controls, answers)


@pytest.mark.parametrize(
    ("num_beams", "controls"),
    [(4, controls) for controls in CONTROLS] + [(1, {}), (1, {"no_repeat_ngram_size": 2})],
    ids=[f"beam-{name}" for name in CONTROL_IDS] + ["greedy-plain", "greedy-no_repeat_ngram_size"],
)
def test_rag_sequence_thorough_generation(
    setup: Setup, monkeypatch: pytest.MonkeyPatch, num_beams: int, controls: dict[str, Any]
) -> None:
    model = rag_sequence_reference(setup, monkeypatch)
    assert_rag_sequence_matches(setup, model, num_beams, controls)


def test_rag_sequence_greedy_repetition_penalty_is_applied_to_log_probs(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """transformers' greedy search penalizes the generator's raw logits, ragloom its log-probs
    (as transformers' beam search does), so the tokens may differ (docs/spec.md). They agree once
    the reference's generator returns log-probs: that is the only difference."""
    model = rag_sequence_reference(setup, monkeypatch)
    forward = model.generator.forward

    def log_probs(*args: Any, **kwargs: Any) -> Any:
        output = forward(*args, **kwargs)
        output.logits = torch.log_softmax(output.logits.float(), dim=-1)
        return output

    monkeypatch.setattr(model.generator, "forward", log_probs)
    assert_rag_sequence_matches(setup, model, 1, {"repetition_penalty": 1.5})


def test_old_pickled_checkpoints_and_the_sequence_class_load(setup: Setup, tmp_path: Path) -> None:
    """pytorch_model.bin (read with weights_only=True) and RagSequenceForGeneration saves."""
    import shutil

    from safetensors.torch import load_file

    expected = Pipeline.from_spec(setup.spec("rag-token")).loss(QUESTIONS, TARGETS)
    pickled = tmp_path / "pickled"
    shutil.copytree(setup.checkpoint, pickled)
    torch.save(load_file(pickled / "model.safetensors"), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    sequence_saved = tmp_path / "sequence"
    setup.reference(RagSequenceForGeneration).save_pretrained(sequence_saved)
    for name in ("question_encoder_tokenizer", "generator_tokenizer"):
        shutil.copytree(setup.checkpoint / name, sequence_saved / name)
    for checkpoint in (pickled, sequence_saved):
        spec = tmp_path / "spec.toml"
        text = setup.spec("rag-token").read_text()
        spec.write_text(text.replace(str(setup.checkpoint), str(checkpoint)))
        got = Pipeline.from_spec(spec).loss(QUESTIONS, TARGETS)
        torch.testing.assert_close(got, expected)


def test_a_checkpoint_that_does_not_fit_its_config_is_refused(setup: Setup, tmp_path: Path) -> None:
    import json
    import shutil

    from ragloom.rag_checkpoint import CheckpointError

    broken = tmp_path / "broken"
    shutil.copytree(setup.checkpoint, broken)
    config = json.loads((broken / "config.json").read_text())
    config["generator"]["decoder_layers"] = 3
    (broken / "config.json").write_text(json.dumps(config))
    spec = tmp_path / "spec.toml"
    spec.write_text(setup.spec("rag-token").read_text().replace(str(setup.checkpoint), str(broken)))
    with pytest.raises(CheckpointError, match="the generator weights do not fit its config"):
        Pipeline.from_spec(spec).loss(QUESTIONS, TARGETS)
