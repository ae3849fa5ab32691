"""Rerankers: cross-encoder and lm-likelihood scores against transformers' own forward passes,
the Reranker contract for both, and the [reranker] stage of a tiny pipeline end to end."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import pytest
import torch

from conftest import ragloom_command
from ragloom import Pipeline, SpecError
from ragloom.context import BuildContext
from ragloom.kb.hf import import_hf
from ragloom.pipeline import _doc_logprior
from ragloom.plugins.rerankers import CrossEncoderReranker, LMLikelihoodReranker, passage_text
from ragloom.protocols import PassageText
from ragloom.rag_checkpoint import ModelDirectoryError
from ragloom.spec import PipelineSettings
from ragloom.testing import RerankerContract
from ragloom.testing.reranker_contract import CANDIDATES, QUESTIONS, candidates
from ragloom.testing.tiny_models import (
    bert_config,
    causal_lm_dir,
    rag_checkpoint,
    rag_spec,
    recipe_knowledge_base,
    wordpiece_tokenizer,
)


def cross_encoder_dir(directory: Path, num_labels: int = 1, seed: int = 0) -> Path:
    """A random BertForSequenceClassification with its WordPiece tokenizer."""
    from transformers import BertForSequenceClassification

    tokenizer = wordpiece_tokenizer(directory)
    config = bert_config(len(tokenizer))
    config.num_labels = num_labels
    torch.manual_seed(seed)
    BertForSequenceClassification(config).save_pretrained(directory)
    return directory


def context(directory: Path) -> BuildContext:
    return BuildContext(directory, PipelineSettings())


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rerankers")
    return {
        "cross-1": cross_encoder_dir(root / "cross-1", 1),
        "cross-2": cross_encoder_dir(root / "cross-2", 2),
        "lm": causal_lm_dir(root / "lm", chat=False),
    }


@pytest.fixture(scope="module")
def cross_1(models: dict[str, Path]) -> Any:
    params = CrossEncoderReranker.Params(path=str(models["cross-1"]), batch_size=3)
    return CrossEncoderReranker.from_spec(params, context(models["cross-1"]))


@pytest.fixture(scope="module")
def cross_2(models: dict[str, Path]) -> Any:
    params = CrossEncoderReranker.Params(path=str(models["cross-2"]))
    return CrossEncoderReranker.from_spec(params, context(models["cross-2"]))


@pytest.fixture(scope="module")
def lm(models: dict[str, Path]) -> Any:
    params = LMLikelihoodReranker.Params(path=str(models["lm"]), batch_size=3)
    return LMLikelihoodReranker.from_spec(params, context(models["lm"]))


class TestCrossEncoderOneLabel(RerankerContract):
    @pytest.fixture
    def reranker(self, cross_1: Any) -> Any:
        return cross_1


class TestCrossEncoderTwoLabels(RerankerContract):
    @pytest.fixture
    def reranker(self, cross_2: Any) -> Any:
        return cross_2


class TestLMLikelihood(RerankerContract):
    @pytest.fixture
    def reranker(self, lm: Any) -> Any:
        return lm


# --- scores against transformers -------------------------------------------------------------


@pytest.mark.parametrize(("name", "label"), [("cross-1", 0), ("cross-2", 1)])
def test_cross_encoder_scores_are_the_models_relevance_logit(
    models: dict[str, Path], cross_1: Any, cross_2: Any, name: str, label: int
) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    reranker = cross_1 if name == "cross-1" else cross_2
    model = AutoModelForSequenceClassification.from_pretrained(models[name]).eval()
    tokenizer = AutoTokenizer.from_pretrained(models[name])
    passages = [p for row in CANDIDATES for p in row]
    questions = [QUESTIONS[0]] * len(passages)
    with torch.no_grad():
        got = reranker.score_pairs(questions, passages)
        expected = [
            model(**tokenizer(q, passage_text(p), return_tensors="pt")).logits[0, label]
            for q, p in zip(questions, passages, strict=True)
        ]
    torch.testing.assert_close(got, torch.stack(expected), atol=1e-5, rtol=1e-5)


def test_lm_likelihood_is_the_mean_log_probability_of_the_question(
    models: dict[str, Path], lm: Any
) -> None:
    """Two pairs of different prompt and question lengths in one padded batch, against one
    unpadded forward each."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(models["lm"]).eval()
    tokenizer = AutoTokenizer.from_pretrained(models["lm"])
    questions = ["who wrote the novel animal farm", "capital?"]
    passages = [
        PassageText(0, "Orwell", "orwell wrote the book animal farm in england after the war"),
        PassageText(1, "Paris", "paris is the capital"),
    ]
    expected = []
    for question, passage in zip(questions, passages, strict=True):
        prompt = lm.params.prompt.format(title=passage.title, passage=passage.text) + "Question:"
        before = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        asked = tokenizer(" " + question, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([before + asked])).logits[0]
        logprobs = torch.log_softmax(logits, dim=-1)
        expected.append(
            sum(float(logprobs[len(before) + t - 1, token]) for t, token in enumerate(asked))
            / len(asked)
        )
    with torch.no_grad():
        got = lm.score_pairs(questions, passages)
    torch.testing.assert_close(got, torch.tensor(expected), atol=1e-4, rtol=1e-5)


def test_the_reranker_reorders_and_keeps_k_with_its_scores_as_the_prior(cross_1: Any) -> None:
    retrieved = candidates(CANDIDATES)
    with torch.no_grad():
        scores = torch.stack(
            [
                cross_1.score_pairs([q] * len(row), row)
                for q, row in zip(QUESTIONS, CANDIDATES, strict=True)
            ]
        )
        reranked = cross_1.rerank(list(QUESTIONS), retrieved, 2)
    order = scores.argsort(dim=1, descending=True)[:, :2]
    assert reranked.ids.tolist() == torch.gather(retrieved.ids, 1, order).tolist()
    torch.testing.assert_close(reranked.scores, torch.gather(scores, 1, order))
    torch.testing.assert_close(reranked.doc_scores, reranked.scores)
    torch.testing.assert_close(_doc_logprior(reranked), torch.log_softmax(reranked.scores, dim=1))


def test_temperature_divides_the_doc_scores(models: dict[str, Path], cross_1: Any) -> None:
    params = CrossEncoderReranker.Params(path=str(models["cross-1"]), temperature=4.0)
    warm = CrossEncoderReranker(cross_1.model, cross_1.tokenizer, params, "cpu")
    with torch.no_grad():
        result = warm.rerank(list(QUESTIONS), candidates(CANDIDATES), 3)
    torch.testing.assert_close(result.doc_scores, result.scores / 4.0)


def test_lm_likelihood_refuses_prompts_it_cannot_fill(models: dict[str, Path]) -> None:
    for prompt, message in [
        ("{text}", "placeholder {text}"),
        ("{title} only", "no {passage}"),
        ("{passage", "not a format string"),
    ]:
        with pytest.raises(ValueError, match=message):
            LMLikelihoodReranker.Params(path="x", prompt=prompt)


def test_a_directory_that_is_not_a_sequence_classifier_is_refused(
    models: dict[str, Path],
) -> None:
    params = CrossEncoderReranker.Params(path=str(models["lm"]))
    with pytest.raises(ModelDirectoryError) as excinfo:
        CrossEncoderReranker.from_spec(params, context(models["lm"]))
    message = str(excinfo.value)
    assert "[LlamaForCausalLM]" in message and "not a sequence classifier" in message
    assert 'type = "lm-likelihood"' in message


# --- the [reranker] stage of a pipeline ------------------------------------------------------


@dataclass
class Tiny:
    root: Path
    spec: str
    cross: Path
    lm: Path

    def with_reranker(self, table: str, n_docs: int = 2) -> Path:
        path = self.root / f"spec-{abs(hash((table, n_docs)))}.toml"
        text = self.spec.replace("n_docs = 2", f"n_docs = {n_docs}")
        path.write_text(f"{text}[reranker]\n{table}", encoding="utf-8")
        return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, models: dict[str, Path]) -> Tiny:
    """A tiny RAG checkpoint over a knowledge base of eight passages, with n_docs = 2."""
    root = tmp_path_factory.mktemp("rerank-pipeline")
    checkpoint, _, context_dir = rag_checkpoint(root)
    passages, index = recipe_knowledge_base(root, context_dir, faiss.IndexFlatIP(32), count=8)
    spec = rag_spec(checkpoint, context_dir, root / "kb", n_docs=2, max_length=6)
    plain = root / "plain.toml"
    plain.write_text(spec, encoding="utf-8")
    import_hf(passages, root / "kb", index, Pipeline.from_spec(plain).encoder, "dpr")
    return Tiny(root, spec, models["cross-1"], models["lm"])


QUESTIONS_ASKED = ["who wrote animal farm", "what is the capital of france"]


def test_a_pipeline_reranks_the_retrievers_candidates(tiny: Tiny, cross_1: Any) -> None:
    spec = tiny.with_reranker(f'type = "cross-encoder"\npath = "{tiny.cross}"\ncandidates = 5\n')
    pipeline = Pipeline.from_spec(spec)
    retriever_only = pipeline.retriever.retrieve  # the same retriever, without the reranker
    from ragloom.protocols import Questions

    with torch.inference_mode():
        found = retriever_only(Questions(QUESTIONS_ASKED, pipeline.encoder.encode_queries), 5)
        expected = cross_1.rerank(QUESTIONS_ASKED, found, 2)
    retrieved = pipeline.retrieve(QUESTIONS_ASKED)
    assert retrieved.ids.tolist() == expected.ids.tolist()
    torch.testing.assert_close(retrieved.doc_scores, expected.scores)
    assert pipeline.retrieve(QUESTIONS_ASKED, k=7).ids.shape == (2, 7)  # max(candidates, k)
    answers = pipeline.generate(QUESTIONS_ASKED)
    assert [[p.id for p in a.passages] for a in answers] == retrieved.ids.tolist()
    again = pipeline.generate_from(QUESTIONS_ASKED, pipeline.retrieve(QUESTIONS_ASKED, k=5))
    assert [a.text for a in again] == [a.text for a in answers]
    loss = pipeline.loss(QUESTIONS_ASKED, ["orwell", "paris"])
    assert torch.isfinite(loss)


def test_lm_likelihood_reranks_in_a_pipeline(tiny: Tiny) -> None:
    table = f'type = "lm-likelihood"\npath = "{tiny.lm}"\ncandidates = 4\nbatch_size = 3\n'
    pipeline = Pipeline.from_spec(tiny.with_reranker(table))
    answers = pipeline.generate(QUESTIONS_ASKED)
    assert [len(a.passages) for a in answers] == [2, 2]
    scores = pipeline.retrieve(QUESTIONS_ASKED).scores
    assert (scores <= 0).all() and (scores[:, 0] >= scores[:, 1]).all()  # mean log-probs


def test_fewer_candidates_than_n_docs_are_refused(tiny: Tiny) -> None:
    table = f'type = "cross-encoder"\npath = "{tiny.cross}"\ncandidates = 3\n'
    spec = tiny.with_reranker(table, n_docs=4)
    with pytest.raises(SpecError, match=r"\[reranker\] candidates = 3 is below \[pipeline\] "):
        Pipeline.from_spec(spec)
    result = subprocess.run(ragloom_command("validate", spec), capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "candidates = 3 is below [pipeline] n_docs = 4" in result.stderr
    assert "Set candidates to at least 4" in result.stderr


def test_training_the_question_encoder_is_refused_under_a_reranker(tiny: Tiny) -> None:
    from ragloom.training.trainer import TrainingError, _check_gradients_reach_the_encoder

    spec = tiny.with_reranker(f'type = "cross-encoder"\npath = "{tiny.cross}"\n')
    with pytest.raises(TrainingError, match=r'\[reranker\] type = "cross-encoder" replaces'):
        _check_gradients_reach_the_encoder(Pipeline.from_spec(spec))
