"""``ragloom train``: the loss falls, gradients go where they should, a killed run resumes to the
same end, and the best checkpoint loads in ragloom and in transformers."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import kill_midway, ragloom_command
from ragloom import Pipeline, SpecError
from ragloom.errors import RagloomError
from ragloom.kb.build import build_knowledge_base
from ragloom.kb.documents import Document
from ragloom.spec import load_spec
from ragloom.testing.tiny_models import bert_dir, causal_lm_dir, rag_checkpoint, rag_spec
from ragloom.testing.world import World, generate_world, write_jsonl
from ragloom.training import train
from ragloom.training.state import TrainingStateError

FAST = {"learning_rate": 3e-3, "batch_size": 4, "warmup_steps": 0, "schedule": "constant"}


def train_table(**settings: Any) -> str:
    lines = [f"{key} = {json.dumps(value)}" for key, value in {**FAST, **settings}.items()]
    return "\n[train]\n" + "\n".join(lines) + "\n"


def build_kb(spec: Path, world: World, out: Path, encoder_type: str) -> None:
    documents = [
        Document(row["title"], row["text"], str(i)) for i, row in enumerate(world.documents("A"))
    ]
    encoder = Pipeline.from_spec(spec).encoder
    build_knowledge_base(documents, encoder, out, encoder_type=encoder_type, progress=False)


class Workspace:
    """A tiny DPR + BART checkpoint, a world of facts, its knowledge base and QA files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.checkpoint, _, self.context_dir = rag_checkpoint(root)
        self.world = generate_world(8, attributes=2, values_per_attribute=6)
        self.data = write_jsonl(root / "train.jsonl", self.world.questions("A"))
        self.dev = write_jsonl(root / "dev.jsonl", self.world.questions("A")[:6])
        self.kb = root / "kb"
        build_kb(self.spec(), self.world, self.kb, "dpr")

    def spec(
        self,
        marginalizer: str = "rag-token",
        n_docs: int = 2,
        n_docs_train: int | None = None,
        **settings: Any,
    ) -> Path:
        """A spec of ``n_docs`` per question; ``n_docs_train`` is ``[train] n_docs``."""
        path = self.root / f"spec-{len(list(self.root.glob('spec-*.toml')))}.toml"
        text = rag_spec(self.checkpoint, self.context_dir, self.kb, marginalizer, n_docs)
        if n_docs_train is not None:
            settings["n_docs"] = n_docs_train
        path.write_text(text + train_table(**settings))
        return path

    def train(self, out: Path, dev: bool = False, **settings: Any) -> Any:
        spec = load_spec(self.spec(**settings))
        return train(spec, self.data, out, self.dev if dev else None)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("train"))


def mean_loss(spec: Path, data: list[dict[str, Any]]) -> float:
    pipeline = Pipeline.from_spec(spec)
    with torch.no_grad():
        loss = pipeline.loss([row["question"] for row in data], [row["answers"][0] for row in data])
    return float(loss) / len(data)


@pytest.mark.parametrize("marginalizer", ["rag-token", "rag-sequence"])
def test_training_lowers_the_loss_and_the_checkpoint_loads(
    workspace: Workspace, tmp_path: Path, marginalizer: str
) -> None:
    data = workspace.world.questions("A")
    before = mean_loss(workspace.spec(marginalizer), data)
    result = workspace.train(tmp_path, marginalizer=marginalizer, max_steps=30, epochs=50)
    assert result.steps == 30
    after = mean_loss(result.best_directory / "spec.toml", data)
    assert after < 0.7 * before
    history = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in history] == list(range(1, 31))


def test_the_best_checkpoint_loads_in_transformers_with_the_trained_weights(
    workspace: Workspace, tmp_path: Path
) -> None:
    from transformers import RagTokenForGeneration

    result = workspace.train(tmp_path, dev=True, max_steps=8, eval_every=4, epochs=10)
    assert result.best_step in (4, 8)
    assert (tmp_path / "dev" / "step-000004" / "summary.json").is_file()
    reference = RagTokenForGeneration.from_pretrained(result.best_directory)
    ours = Pipeline.from_spec(result.best_directory / "spec.toml")
    for mine, theirs in [
        (ours.encoder.query_tower.model, reference.rag.question_encoder),  # type: ignore[attr-defined]
        (ours.generator.model, reference.rag.generator),  # type: ignore[attr-defined]
    ]:
        expected = theirs.state_dict()
        for key, value in mine.state_dict().items():
            assert torch.equal(value, expected[key]), key
    # the passage tower is the one that encoded the knowledge base: its fingerprint matches
    ours.retrieve(["What is the capital of anything?"])


def history(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]


def test_the_trained_model_beats_the_untrained_one_on_dev(
    workspace: Workspace, tmp_path: Path
) -> None:
    result = workspace.train(tmp_path, dev=True, max_steps=12, eval_every=6, epochs=10)
    dev = [(entry["step"], entry["dev"]["loss"]) for entry in history(tmp_path) if "dev" in entry]
    assert [step for step, _ in dev] == [0, 6, 12]  # step 0: before the first step
    assert dev[2][1] < dev[1][1] < dev[0][1]
    assert result.best is not None and result.best_step in (6, 12)


def test_dev_is_evaluated_before_training_with_the_pipelines_n_docs(
    workspace: Workspace, tmp_path: Path
) -> None:
    """[train] n_docs = 2 for training, [pipeline] n_docs = 3 for dev: the baseline (step 0)
    reads 3 passages, and its loss is Pipeline.loss (a sum) divided by the dev questions."""
    spec = workspace.spec(n_docs=3, n_docs_train=2)
    result = train(load_spec(spec), workspace.data, tmp_path, workspace.dev)
    baseline = history(tmp_path)[0]
    assert baseline["step"] == 0 and set(baseline["dev"]) >= {"recall@1", "recall@3", "loss"}
    assert result.baseline == baseline["dev"]["f1"]
    evaluated = load_spec(tmp_path / "dev" / "step-000000" / "spec.toml")
    assert evaluated.pipeline.n_docs == 3
    dev = [json.loads(line) for line in workspace.dev.read_text().splitlines()]
    assert baseline["dev"]["loss"] == pytest.approx(mean_loss(spec, dev), rel=1e-5)


def test_validate_shows_the_train_table(
    workspace: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    from ragloom.cli import main

    assert main(["validate", str(workspace.spec(n_docs=3, n_docs_train=2))]) == 0
    out = capsys.readouterr().out
    assert "[train] (ragloom train)" in out
    assert "learning_rate = 0.003" in out and "save_state = true" in out
    assert "n_docs = 2 (dev evaluation: [pipeline] 3)" in out


def parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def changed(before: dict[str, torch.Tensor], model: torch.nn.Module) -> bool:
    return any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("part", ["question_encoder", "generator"])
def test_a_frozen_part_does_not_change(workspace: Workspace, tmp_path: Path, part: str) -> None:
    start = Pipeline.from_spec(workspace.spec())
    encoder_before = parameters(start.encoder.query_tower.model)  # type: ignore[attr-defined]
    generator_before = parameters(start.generator.model)  # type: ignore[attr-defined]
    result = workspace.train(tmp_path, train=[part], max_steps=3)
    trained = Pipeline.from_spec(result.best_directory / "spec.toml")
    encoder_changed = changed(encoder_before, trained.encoder.query_tower.model)  # type: ignore[attr-defined]
    generator_changed = changed(generator_before, trained.generator.model)  # type: ignore[attr-defined]
    assert (encoder_changed, generator_changed) == (
        part == "question_encoder",
        part == "generator",
    )


@pytest.mark.parametrize("marginalizer", ["rag-token", "rag-sequence"])
def test_gradients_reach_the_question_encoder_only_through_the_doc_scores(
    workspace: Workspace, marginalizer: str
) -> None:
    """With one document the doc prior is constant (log_softmax of one score is 0): the
    encoder's gradient must vanish. With two it must not."""
    questions = [row["question"] for row in workspace.world.questions("A")[:4]]
    answers = [row["answers"][0] for row in workspace.world.questions("A")[:4]]
    norms = {}
    for n_docs in (1, 2):
        pipeline = Pipeline.from_spec(workspace.spec(marginalizer, n_docs))
        encoder = pipeline.encoder.trainable_model().model  # type: ignore[attr-defined]
        generator = pipeline.generator.trainable_model().model  # type: ignore[attr-defined]
        pipeline.loss(questions, answers).backward()
        grads = [p.grad for p in encoder.parameters()]
        norms[n_docs] = sum(float(g.norm()) for g in grads if g is not None)
        assert all(p.grad is not None for p in generator.parameters())
    assert norms[1] == 0.0
    assert norms[2] > 0.0


def test_a_frozen_generator_gets_no_gradient(workspace: Workspace) -> None:
    pipeline = Pipeline.from_spec(workspace.spec())
    generator = pipeline.generator.trainable_model().model  # type: ignore[attr-defined]
    generator.requires_grad_(False)
    rows = workspace.world.questions("A")[:4]
    pipeline.loss([r["question"] for r in rows], [r["answers"][0] for r in rows]).backward()
    assert all(p.grad is None for p in generator.parameters())
    encoder = pipeline.encoder.trainable_model().model  # type: ignore[attr-defined]
    assert any(p.grad is not None and float(p.grad.norm()) > 0 for p in encoder.parameters())


def test_gradient_checkpointing_gives_the_same_training(
    workspace: Workspace, tmp_path: Path
) -> None:
    plain = workspace.train(tmp_path / "plain", max_steps=3)
    checkpointed = workspace.train(tmp_path / "ckpt", max_steps=3, gradient_checkpointing=True)
    assert checkpointed.loss == pytest.approx(plain.loss, rel=1e-4)
    a = Pipeline.from_spec(plain.best_directory / "spec.toml").generator.model  # type: ignore[attr-defined]
    b = Pipeline.from_spec(checkpointed.best_directory / "spec.toml").generator.model  # type: ignore[attr-defined]
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5, msg=name)


def train_command(spec: Path, data: Path, out: Path) -> list[str]:
    return ragloom_command("train", spec, "--data", data, "--out", out)


def saved_step(out: Path) -> int:
    try:
        return int(json.loads((out / "state" / "progress.json").read_text())["step"])
    except (OSError, ValueError, KeyError):
        return 0


def test_a_killed_run_resumes_to_the_same_end(workspace: Workspace, tmp_path: Path) -> None:
    spec = workspace.spec(max_steps=160, save_every=4, epochs=200)
    out, fresh = tmp_path / "run", tmp_path / "fresh"
    command = train_command(spec, workspace.data, out)
    killed_at = kill_midway(command, lambda: saved_step(out), 8)
    assert killed_at < 160
    resumed = subprocess.run(command, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming at step {killed_at} of 160" in resumed.stderr
    assert "trained 160 steps" in resumed.stdout
    subprocess.run(train_command(spec, workspace.data, fresh), check=True, capture_output=True)
    steps = [json.loads(line)["step"] for line in (out / "history.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 161))
    a = Pipeline.from_spec(out / "best" / "spec.toml").generator.model  # type: ignore[attr-defined]
    b = Pipeline.from_spec(fresh / "best" / "spec.toml").generator.model  # type: ignore[attr-defined]
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y, msg=name)


def test_rerunning_a_finished_run_changes_nothing(workspace: Workspace, tmp_path: Path) -> None:
    first = workspace.train(tmp_path, dev=True, max_steps=2)
    weights = (first.best_directory / "model.safetensors").read_bytes()
    lines = history(tmp_path)
    again = workspace.train(tmp_path, dev=True, max_steps=2)
    assert again == first  # the baseline too
    assert (again.best_directory / "model.safetensors").read_bytes() == weights
    assert history(tmp_path) == lines


def directory_bytes(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())


def test_save_state_false_keeps_the_weights_only(workspace: Workspace, tmp_path: Path) -> None:
    """The sizes docs/spec.md gives: best/ holds 4 bytes per parameter of both parts, state/
    12 per trained parameter with adamw (weights and two moments); without state/, a rerun
    starts over."""
    kept = workspace.train(tmp_path / "kept", dev=True, max_steps=2)
    pipeline = Pipeline.from_spec(kept.best_directory / "spec.toml")
    models = [pipeline.encoder.query_tower.model, pipeline.generator.model]  # type: ignore[attr-defined]
    weights = 4 * sum(p.numel() for model in models for p in model.parameters())
    assert weights <= (kept.best_directory / "model.safetensors").stat().st_size < 1.1 * weights
    assert 3 * weights <= directory_bytes(tmp_path / "kept" / "state") < 3.3 * weights

    out = tmp_path / "weights-only"
    first = workspace.train(out, dev=True, max_steps=2, save_state=False)
    assert not (out / "state").exists() and (out / "best" / "model.safetensors").is_file()
    assert first == dataclasses.replace(kept, best_directory=first.best_directory)
    workspace.train(out, dev=True, max_steps=2, save_state=False)
    assert [entry["step"] for entry in history(out)] == [0, 1, 2, 2]  # trained again, once


def test_a_state_from_another_run_is_refused(workspace: Workspace, tmp_path: Path) -> None:
    workspace.train(tmp_path, max_steps=2)
    with pytest.raises(TrainingStateError, match="another spec or data file"):
        workspace.train(tmp_path, max_steps=2, learning_rate=1e-4)


def test_train_table_errors_name_the_key(workspace: Workspace) -> None:
    with pytest.raises(SpecError) as error:
        load_spec(workspace.spec(train=["decoder"], learning_rat=0.1))
    text = str(error.value)
    assert "train.train" in text and "question_encoder" in text
    assert "learning_rat" in text and "learning_rate" in text


def test_a_quantized_generator_cannot_be_trained(workspace: Workspace) -> None:
    from ragloom.plugins.bart_generator import BartGenerator

    generator = Pipeline.from_spec(workspace.spec()).generator
    quantized = BartGenerator(
        generator.model,  # type: ignore[attr-defined]
        generator.tokenizer,  # type: ignore[attr-defined]
        BartGenerator.Params.model_construct(quantization="4bit"),
    )
    with pytest.raises(RagloomError, match='quantization = "4bit"'):
        quantized.trainable_model()


def causal_spec(root: Path, world: World, marginalizer: str = "rag-token", **settings: Any) -> Path:
    """A mean-pooled BERT and a causal LM over a KB of ``world``'s facts, in ``root``."""
    encoder_dir, generator_dir = bert_dir(root / "bert"), causal_lm_dir(root / "llm")
    spec = root / "spec.toml"
    spec.write_text(
        f"""schema = 1
[pipeline]
n_docs = 2
[encoder]
type = "hf-mean-pool"
path = "{encoder_dir}"
[retriever]
type = "dense"
kb = "kb"
[retriever.index]
type = "faiss-exact"
[generator]
type = "causal-lm"
path = "{generator_dir}"
[marginalizer]
type = "{marginalizer}"
[generation]
max_length = 8
"""
        + train_table(**settings)
    )
    build_kb(spec, world, root / "kb", "hf-mean-pool")
    return spec


def test_the_loss_of_a_step_is_the_mean_per_question(tmp_path: Path) -> None:
    """Pipeline.loss sums over its questions; a step's loss in the history is that sum over
    the step's batches (here 2 of 3 questions) divided by its questions. The causal LM has no
    dropout and the frozen encoder runs in eval mode, so the step sees the loss computed here."""
    world = generate_world(6, attributes=1, values_per_attribute=5)
    rows = world.questions("A")
    assert len(rows) == 6
    spec = causal_spec(
        tmp_path, world, train=["generator"], batch_size=3, gradient_accumulation=2, max_steps=1
    )
    data = write_jsonl(tmp_path / "train.jsonl", rows)
    with torch.no_grad():
        summed = Pipeline.from_spec(spec).loss(
            [r["question"] for r in rows], [r["answers"][0] for r in rows]
        )
    result = train(load_spec(spec), data, tmp_path / "out")
    (step,) = history(tmp_path / "out")
    assert step["loss"] == result.loss == pytest.approx(float(summed) / 6, rel=1e-5)


@pytest.mark.parametrize("marginalizer", ["rag-token", "rag-sequence"])
def test_a_causal_generator_and_a_mean_pooled_encoder_train(
    tmp_path: Path, marginalizer: str
) -> None:
    """The other generator kind through the same loop; its checkpoint is a RAG directory with
    a causal LM inside, loaded back by [pipeline] checkpoint."""
    world = generate_world(6, attributes=1, values_per_attribute=5)
    settings = {"max_steps": 25, "epochs": 50, "learning_rate": 1e-2}
    spec = causal_spec(tmp_path, world, marginalizer, **settings)
    data = write_jsonl(tmp_path / "train.jsonl", world.questions("A"))
    before = mean_loss(spec, world.questions("A"))
    result = train(load_spec(spec), data, tmp_path / "out")
    trained_spec = result.best_directory / "spec.toml"
    assert "path" not in load_spec(trained_spec).to_dict()["generator"]
    assert mean_loss(trained_spec, world.questions("A")) < 0.7 * before
    (answer,) = Pipeline.from_spec(trained_spec).generate([world.questions("A")[0]["question"]])
    assert isinstance(answer.text, str)
