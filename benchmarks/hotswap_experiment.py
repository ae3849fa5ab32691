"""The index hot-swap experiment of the RAG paper (Lewis et al. 2020, §4.5), in miniature.

The paper's model, trained with a 2016 Wikipedia index, answered "who is the leader of X" from
a 2018 index with the 2018 leaders, with no retraining. Here: a generated world of facts in two
editions (:mod:`ragloom.testing.world`), a knowledge base per edition encoded by the packaged
all-MiniLM-L6-v2 (``asset:minilm``), a BART trained from scratch with RAG-token on edition A's
questions only (the question encoder stays frozen), then asked every question with index A and
with index B. Answers that follow the index match that index's edition; answers a model
memorized match edition A whatever the index.

Questions are split by entity: ``trained`` entities were seen in training (edition A answers),
``held-out`` entities never were, so only reading the passage answers them.

A module beside its two users, not part of the ragloom package: ``benchmarks/hotswap.py`` (the
full run) imports it from its own directory, ``tests/test_hotswap.py`` (the short run) with
``benchmarks/`` put on ``sys.path`` for that test alone.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragloom.kb.build import build_knowledge_base
from ragloom.kb.documents import Document
from ragloom.metrics import exact_match, has_answer
from ragloom.pipeline import Pipeline
from ragloom.spec import load_spec
from ragloom.testing.tiny_models import Size, bart_model, bpe_tokenizer
from ragloom.testing.world import EDITIONS, World, generate_world, write_jsonl
from ragloom.training import train


@dataclass(frozen=True)
class HotswapSettings:
    """The size of the experiment: world, model, training."""

    entities: int = 1000
    attributes: int = 2
    values_per_attribute: int = 40
    held_out: float = 0.2
    evaluated: int = 200
    hidden: int = 128
    layers: int = 2
    heads: int = 4
    n_docs: int = 2
    steps: int = 3000
    batch_size: int = 32
    learning_rate: float = 3e-4
    normalize: bool = False
    seed: int = 0


@dataclass(frozen=True)
class HotswapResult:
    """``accuracy[split][index][answers]``: exact match of the answers given with knowledge base
    ``index`` (A or B) against edition ``answers``' values, over the first ``evaluated``
    entities of the ``split``; ``retrieval[split][index]``: how often the top passage holds the
    answer of the index's edition."""

    accuracy: dict[str, dict[str, dict[str, float]]]
    retrieval: dict[str, dict[str, float]]
    questions: dict[str, int]
    loss_first: float
    loss_last: float
    train_seconds: float

    def rows(self) -> list[list[str]]:
        """The table: one row per split and index."""
        rows = [["questions", "index", "top passage right", "matched", "mismatched"]]
        for split, by_index in self.accuracy.items():
            for index, by_answers in by_index.items():
                other = "B" if index == "A" else "A"
                rows.append(
                    [
                        f"{split} ({self.questions[split]})",
                        index,
                        f"{self.retrieval[split][index]:.3f}",
                        f"{by_answers[index]:.3f}",
                        f"{by_answers[other]:.3f}",
                    ]
                )
        return rows


SPEC = """schema = 1
[pipeline]
n_docs = {n_docs}
[encoder]
type = "hf-mean-pool"
path = "asset:minilm"
normalize = {normalize}
[retriever]
type = "dense"
kb = "kb-A"
[retriever.index]
type = "faiss-exact"
[generator]
type = "bart"
path = "bart"
[marginalizer]
type = "rag-token"
[generation]
max_length = 12
[train]
train = ["generator"]
learning_rate = {learning_rate}
warmup_steps = {warmup}
schedule = "constant"
max_steps = {steps}
epochs = 1000
batch_size = {batch_size}
seed = {seed}
save_every = {save_every}
"""


def _split(world: World, settings: HotswapSettings) -> dict[str, list[str]]:
    entities = list(world.entities)
    random.Random(settings.seed).shuffle(entities)
    count = max(1, round(settings.held_out * len(entities)))
    return {"trained": entities[count:], "held-out": entities[:count]}


def _generator_directory(root: Path, world: World, settings: HotswapSettings) -> Path:
    """A BART initialized at random, with a BPE tokenizer trained on the world's text.

    Decoding starts from ``<s>``, the token training labels start with (transformers' RAG feeds
    ``<s> answer </s>`` to the decoder in training, while bart-large generates from ``</s> <s>``,
    one position later, which a pretrained BART tolerates and a model trained from scratch
    does not)."""
    directory = root / "bart"
    tokenizer = bpe_tokenizer(directory, world.texts(), vocab_size=1000, add_prefix_space=True)
    size = Size(
        generator_hidden=settings.hidden,
        generator_layers=settings.layers,
        generator_heads=settings.heads,
        init_std=0.02,
    )
    model = bart_model(len(tokenizer), settings.seed, size)
    model.config.decoder_start_token_id = model.generation_config.decoder_start_token_id = 0
    model.save_pretrained(directory)
    return directory


def _answers(pipeline: Pipeline, questions: list[dict[str, Any]]) -> list[str]:
    texts = []
    for start in range(0, len(questions), 32):
        batch = [row["question"] for row in questions[start : start + 32]]
        texts += [answer.text for answer in pipeline.generate(batch)]
    return texts


def run_hotswap(root: Path, settings: HotswapSettings | None = None) -> HotswapResult:
    """Build, train and evaluate under ``root``; see the module docstring."""
    settings = settings or HotswapSettings()
    world = generate_world(
        settings.entities, settings.attributes, settings.values_per_attribute, settings.seed
    )
    splits = _split(world, settings)
    _generator_directory(root, world, settings)
    spec_path = root / "spec.toml"
    spec_path.write_text(
        SPEC.format(
            n_docs=settings.n_docs,
            normalize=str(settings.normalize).lower(),
            learning_rate=settings.learning_rate,
            warmup=settings.steps // 20,
            steps=settings.steps,
            batch_size=settings.batch_size,
            seed=settings.seed,
            save_every=max(settings.steps // 4, 1),
        )
    )
    encoder = Pipeline.from_spec(spec_path).encoder
    for edition in EDITIONS:
        documents = [
            Document(row["title"], row["text"], str(number))
            for number, row in enumerate(world.documents(edition))
        ]
        build_knowledge_base(
            documents, encoder, root / f"kb-{edition}", encoder_type="hf-mean-pool", progress=False
        )
    data = write_jsonl(root / "train.jsonl", world.questions("A", splits["trained"]))
    started = time.perf_counter()
    result = train(load_spec(spec_path), data, root / "run")
    seconds = time.perf_counter() - started
    history = [
        json.loads(line) for line in (root / "run" / "history.jsonl").read_text().splitlines()
    ]
    losses = [entry["loss"] for entry in history if "loss" in entry]
    window = max(1, len(losses) // 10)

    trained_spec = result.best_directory / "spec.toml"
    first = Pipeline.from_spec(trained_spec)
    accuracy: dict[str, dict[str, dict[str, float]]] = {}
    retrieval: dict[str, dict[str, float]] = {}
    pipelines = {
        index: Pipeline.from_spec(trained_spec, {"retriever.kb": str(root / f"kb-{index}")}).share(
            first, "encoder", "generator", "marginalizer"
        )
        for index in EDITIONS
    }
    evaluated = {split: entities[: settings.evaluated] for split, entities in splits.items()}
    for split, entities in evaluated.items():
        accuracy[split], retrieval[split] = {}, {}
        questions = {edition: world.questions(edition, entities) for edition in EDITIONS}
        for index, pipeline in pipelines.items():
            asked = [row["question"] for row in questions[index]]
            top = pipeline.retrieve(asked, k=1).passages
            retrieval[split][index] = sum(
                has_answer(passages[0].text, row["answers"])
                for passages, row in zip(top, questions[index], strict=True)
            ) / len(asked)
            predictions = _answers(pipeline, questions[index])
            accuracy[split][index] = {
                edition: sum(
                    exact_match(prediction, row["answers"])
                    for prediction, row in zip(predictions, questions[edition], strict=True)
                )
                / len(predictions)
                for edition in EDITIONS
            }
    return HotswapResult(
        accuracy,
        retrieval,
        {split: len(entities) * settings.attributes for split, entities in evaluated.items()},
        sum(losses[:window]) / window,
        sum(losses[-window:]) / window,
        seconds,
    )
