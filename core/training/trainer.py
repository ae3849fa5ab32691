"""The training loop of ``ragloom train``.

Each optimizer step sums :meth:`Pipeline.loss` (itself summed over a batch) over
``gradient_accumulation`` batches of ``batch_size`` questions and divides by the questions in the
step: the loss of a step, logged and recorded, is the mean negative marginal log-likelihood per
question. It clips the gradient norm and steps the optimizer and the learning rate schedule. The
data order is a seeded permutation per epoch. Every ``save_every`` steps the state is saved
(:mod:`ragloom.training.state`) unless ``save_state`` is false. The dev file is evaluated as
``ragloom eval`` does, with ``[pipeline] n_docs`` (not ``[train] n_docs``), before the first step
(the baseline, step 0) and every ``eval_every`` steps (or at each epoch end); a better
``best_metric`` than any earlier step's replaces ``OUT/best/`` (:mod:`ragloom.training.export`).
Without a dev file ``OUT/best/`` holds the last step's weights.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w
import torch

from .. import atomic, locks
from ..artifacts import Kind, absolute, claim, json_marker
from ..digest import file_sha256
from ..errors import RagloomError
from ..evaluation import QAItem, evaluate, read_qa
from ..pipeline import Pipeline
from ..protocols import DifferentiableScores, Trainable
from ..spec import Spec, TrainSettings
from ..spec import resolve_device as resolve_device_of
from .export import export_checkpoint
from .state import Progress, load_state, save_state

log = logging.getLogger(__name__)

RUN_MARKER = "ragloom-run.json"
_MARKED_RUN = json_marker("training run", RUN_MARKER, format="ragloom-train")
RUN_KIND = Kind(
    "training run",
    RUN_MARKER,
    lambda directory: (
        _MARKED_RUN.recognizes(directory)
        or (directory / "history.jsonl").is_file()  # runs from before the marker
    ),
)

PARTS = {"question_encoder": "encoder", "generator": "generator"}
"""Trainable part → the spec table of the component that owns it."""

SCHEDULES = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}


class TrainingError(RagloomError):
    """A spec or data that cannot be trained as asked."""


@dataclass(frozen=True)
class TrainResult:
    """What a finished run did: optimizer ``steps``, the last step's ``loss`` (the mean per
    question), the best dev score (``best_metric``) and its step, the dev score before
    training (``baseline``; these three None without a dev file), where ``best`` is."""

    steps: int
    loss: float | None
    best: float | None
    best_step: int | None
    best_directory: Path
    baseline: float | None = None


def train(spec: Spec, data: Path, out: Path, dev: Path | None = None) -> TrainResult:
    """Fine-tune the pipeline of ``spec`` on the QA file ``data`` as its ``[train]`` table says,
    writing to ``out``; resumes from ``out/state/`` when a killed run left one.

    ``out`` is locked for the run (a second run of it waits) and must be new, empty or a
    training run's directory."""
    out = absolute(out)
    claim(out, RUN_KIND)  # before the lock file is made beside it
    # the data and the spec are checked before anything is written
    settings = spec.train
    items = read_qa(data)
    dev_items = read_qa(dev)[: settings.dev_limit] if dev is not None else []
    devices = _device_overrides(spec)
    n_docs = {} if settings.n_docs is None else {"pipeline.n_docs": settings.n_docs}
    pipeline = Pipeline.from_spec(spec, {**devices, **n_docs})
    pipeline.require(*PARTS.values(), "retriever", "marginalizer", needed_by="ragloom train")
    # dev evaluation reads [pipeline] n_docs, as the trained pipeline will, with the same models
    dev_pipeline = Pipeline.from_spec(spec, devices) if n_docs else pipeline
    run = _run_identity(pipeline.spec, data, dev)
    with locks.exclusive(out):
        claim(out, RUN_KIND)
        out.mkdir(parents=True, exist_ok=True)
        atomic.write_text(out / RUN_MARKER, json.dumps({"format": "ragloom-train"}) + "\n")
        return _Trainer(spec, pipeline, dev_pipeline, items, dev_items, out, run).run()


def resolve_device(device: str) -> str:
    """``[train] device`` for this machine: ``"auto"`` made concrete (CUDA when torch sees a
    GPU, else the CPU), a CUDA device the machine lacks refused."""
    return resolve_device_of(device, "[train] device")


def _device_overrides(spec: Spec) -> dict[str, Any]:
    """``[train] device``, applied to the encoder and generator of the pipeline being trained."""
    overrides: dict[str, Any] = {}
    device = resolve_device(spec.train.device)
    for table in PARTS.values():
        component = spec.components.get(table)
        if component is not None and "device" in type(component.params).model_fields:
            overrides[f"{table}.device"] = device
    return overrides


def _run_identity(spec: Spec, data: Path, dev: Path | None) -> str:
    """A hash of what the run trains: the spec (less ``[pipeline] threads``, which changes
    how fast it runs: a run may resume with another count) and the data files."""
    table = spec.to_dict()
    table["pipeline"].pop("threads", None)
    digest = hashlib.sha256(tomli_w.dumps(table).encode())
    for path in (data, dev):
        digest.update((file_sha256(path) if path is not None else "-").encode())
    return digest.hexdigest()[:16]


def _check_gradients_reach_the_encoder(pipeline: Pipeline) -> None:
    """Training the question encoder needs a retriever whose document scores are
    differentiable in the query vectors (:class:`DifferentiableScores`), and no reranker: its
    scores replace the retriever's as the document prior and carry no gradient."""
    reranker = pipeline.spec.components.get("reranker")
    if reranker is not None:
        raise TrainingError(
            f'[train] train includes "question_encoder", but the [reranker] type = '
            f'"{reranker.type}" replaces the retriever\'s document scores with its own, which '
            f"are not differentiable in the question vectors, so no gradient would reach the "
            f'encoder. Set [train] train = ["generator"], or remove the [reranker] table.'
        )
    retriever = pipeline.retriever
    if isinstance(retriever, DifferentiableScores) and retriever.doc_scores_differentiable:
        return
    kind = pipeline.spec.components["retriever"].type
    raise TrainingError(
        f'[train] train includes "question_encoder", but the [retriever] type = "{kind}" gives '
        f"document scores that are not differentiable in the question vectors, so no gradient "
        f'would reach the encoder. Set [train] train = ["generator"], or use a dense retriever.'
    )


def _trainable(pipeline: Pipeline, table: str) -> Trainable:
    component = pipeline.component(table, "ragloom train")
    if not isinstance(component, Trainable):
        kind = pipeline.spec.components[table].type
        raise TrainingError(
            f'[{table}] type = "{kind}" cannot be fine-tuned or saved as a checkpoint: it has no '
            f"trainable_model(). Use a trainable {table} type (see ragloom plugins)."
        )
    return component


def _enable_checkpointing(model: Any) -> None:
    """Recompute activations in backward (non-reentrant: frozen inputs still give gradients).
    transformers 5 renamed the method."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


class _History:
    """``history.jsonl``, one line per step and per dev evaluation, written as they come. On
    resuming from ``saved_step``, the lines after it are dropped: those steps run again; a run
    that starts over (``saved_step`` None) starts an empty history."""

    def __init__(self, path: Path, saved_step: int | None) -> None:
        self.path = path
        kept = []
        if saved_step is not None and path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a kill
                    break
                if entry["step"] > saved_step:
                    break
                kept.append(line + "\n")
        atomic.write_text(path, "".join(kept))
        self.handle: Any = None

    def __enter__(self) -> _History:
        self.handle = self.path.open("a", encoding="utf-8")
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()

    def write(self, entry: dict[str, Any]) -> None:
        self.handle.write(json.dumps(entry) + "\n")
        self.handle.flush()


class _Trainer:
    def __init__(
        self,
        spec: Spec,
        pipeline: Pipeline,
        dev_pipeline: Pipeline,
        items: Sequence[QAItem],
        dev_items: Sequence[QAItem],
        out: Path,
        run: str,
    ) -> None:
        self.spec = spec
        self.settings: TrainSettings = spec.train
        self.pipeline = pipeline
        self.dev_pipeline = dev_pipeline
        self.items = items
        self.dev_items = dev_items
        self.out = out
        self.run_identity = run
        torch.manual_seed(self.settings.seed)
        if "question_encoder" in self.settings.train:
            _check_gradients_reach_the_encoder(pipeline)
        self.components = {part: _trainable(pipeline, table) for part, table in PARTS.items()}
        self.models = {
            part: component.trainable_model().model for part, component in self.components.items()
        }
        if dev_pipeline is not pipeline:
            dev_pipeline.share(pipeline, *spec.components)
        self.trained: dict[str, torch.nn.Module] = {
            part: self.models[part] for part in self.settings.train
        }
        for part, model in self.models.items():
            model.requires_grad_(part in self.trained)
        if self.settings.gradient_checkpointing and "generator" in self.trained:
            _enable_checkpointing(self.models["generator"])
        self.optimizer = self._optimizer()
        batches_per_epoch = math.ceil(len(items) / self.settings.batch_size)
        steps_per_epoch = math.ceil(batches_per_epoch / self.settings.gradient_accumulation)
        self.total_steps = self.settings.epochs * steps_per_epoch
        if self.settings.max_steps is not None:
            self.total_steps = min(self.total_steps, self.settings.max_steps)
        from transformers import get_scheduler

        self.scheduler = get_scheduler(
            SCHEDULES[self.settings.schedule],
            self.optimizer,
            num_warmup_steps=self.settings.warmup_steps,
            num_training_steps=self.total_steps,
        )

    def _optimizer(self) -> torch.optim.Optimizer:
        """No weight decay on biases and norms (parameters of fewer than two dimensions)."""
        parameters = [p for model in self.trained.values() for p in model.parameters()]
        groups = [
            {
                "params": [p for p in parameters if p.ndim >= 2],
                "weight_decay": self.settings.weight_decay,
            },
            {"params": [p for p in parameters if p.ndim < 2], "weight_decay": 0.0},
        ]
        rate = self.settings.learning_rate
        if self.settings.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=rate)
        if self.settings.optimizer == "adam":
            return torch.optim.Adam(groups, lr=rate)
        return torch.optim.AdamW(groups, lr=rate)

    # --- the loop -----------------------------------------------------------------------------

    def run(self) -> TrainResult:
        from tqdm import tqdm

        self.out.mkdir(parents=True, exist_ok=True)
        saved = self._load_state()
        progress = saved or Progress(self.run_identity)
        if saved is not None:
            log.warning("%s: resuming at step %d of %d", self.out, progress.step, self.total_steps)
        self._history = _History(self.out / "history.jsonl", None if saved is None else saved.step)
        with (
            self._history,
            tqdm(total=self.total_steps, initial=progress.step, unit="step", desc="train") as bar,
        ):
            if progress.step == 0 and self.dev_items:
                progress.baseline = self._dev_scores(0)[self.settings.best_metric]
            self._train_mode()
            while progress.step < self.total_steps:
                batches = self._epoch_batches(progress.epoch)
                group = batches[
                    progress.batch : progress.batch + self.settings.gradient_accumulation
                ]
                progress.loss = self._optimizer_step(group)
                progress.step += 1
                progress.batch += len(group)
                rate = self.scheduler.get_last_lr()[0]
                self._history.write({"step": progress.step, "loss": progress.loss, "lr": rate})
                bar.set_postfix(loss_per_question=f"{progress.loss:.4f}")
                bar.update()
                epoch_ended = progress.batch >= len(batches)
                if epoch_ended:
                    progress.epoch, progress.batch = progress.epoch + 1, 0
                if self._evaluation_due(progress.step, epoch_ended):
                    self._evaluate(progress)
                if progress.step % self.settings.save_every == 0 or self._finished(progress):
                    self._save_state(progress)
        if not self.dev_items:
            self._export()
        return TrainResult(
            progress.step,
            progress.loss,
            progress.best,
            progress.best_step,
            self.out / "best",
            progress.baseline,
        )

    def _load_state(self) -> Progress | None:
        """The saved progress, its state restored; None when training starts over (no state,
        or ``save_state = false``: nothing is read from ``OUT/state/``)."""
        if not self.settings.save_state:
            return None
        return load_state(self.out, self.trained, self.optimizer, self.scheduler, self.run_identity)

    def _save_state(self, progress: Progress) -> None:
        if self.settings.save_state:
            save_state(self.out, self.trained, self.optimizer, self.scheduler, progress)

    def _finished(self, progress: Progress) -> bool:
        return progress.step >= self.total_steps

    @functools.lru_cache(maxsize=1)  # noqa: B019 (one trainer per run)
    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        """The epoch's seeded order of questions, cut into batches."""
        order = torch.randperm(
            len(self.items), generator=torch.Generator().manual_seed(self.settings.seed + epoch)
        ).tolist()
        size = self.settings.batch_size
        return [order[start : start + size] for start in range(0, len(order), size)]

    def _optimizer_step(self, group: Sequence[Sequence[int]]) -> float:
        """One optimizer step over the batches of ``group``; the mean loss per question."""
        questions = sum(len(batch) for batch in group)
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for batch in group:
            loss = self.pipeline.loss(
                [self.items[i].question for i in batch],
                [self.items[i].answers[0] for i in batch],
                label_smoothing=self.settings.label_smoothing,
            )
            (loss / questions).backward()  # type: ignore[no-untyped-call]
            total += float(loss.detach())
        if self.settings.max_grad_norm > 0:
            parameters = [p for model in self.trained.values() for p in model.parameters()]
            torch.nn.utils.clip_grad_norm_(parameters, self.settings.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        return total / questions

    # --- evaluation and export ----------------------------------------------------------------

    def _evaluation_due(self, step: int, epoch_ended: bool) -> bool:
        if not self.dev_items:
            return False
        every = self.settings.eval_every
        return (step % every == 0 if every else epoch_ended) or step >= self.total_steps

    def _evaluate(self, progress: Progress) -> None:
        """The dev scores after ``progress.step``; a better ``best_metric`` than any earlier
        step's replaces ``OUT/best/`` (the baseline, step 0, is not a candidate: ``OUT/best/``
        holds trained weights, and the untrained ones are where the spec points)."""
        score = self._dev_scores(progress.step)[self.settings.best_metric]
        assert score is not None
        lower_is_better = self.settings.best_metric == "loss"
        if progress.best is None or (
            score < progress.best if lower_is_better else score > progress.best
        ):
            progress.best, progress.best_step = score, progress.step
            self._export()
        self._train_mode()

    def _dev_scores(self, step: int) -> dict[str, float | None]:
        """Dev metrics as ``ragloom eval`` computes them with ``[pipeline] n_docs`` (written to
        ``OUT/dev/step-N/``), and the dev loss; recorded in the history and logged."""
        self._eval_mode()
        directory = self.out / "dev" / f"step-{step:06d}"
        n_docs = self.dev_pipeline.spec.pipeline.n_docs
        summary = evaluate(self.dev_pipeline, self.dev_items, directory, (1, n_docs))
        scores = {
            "exact_match": summary.exact_match,
            "f1": summary.f1,
            "loss": self._dev_loss(),
            **{f"recall@{k}": value for k, value in summary.recall.items()},
        }
        self._history.write({"step": step, "dev": scores})
        when = "before training" if step == 0 else f"step {step}"
        log.info("%s: dev (n_docs %d) %s", when, n_docs, json.dumps(scores))
        return scores

    def _dev_loss(self) -> float:
        """The dev questions' mean loss per question (``Pipeline.loss`` sums over a batch)."""
        total = 0.0
        size = self.settings.batch_size
        with torch.no_grad():
            for start in range(0, len(self.dev_items), size):
                batch = self.dev_items[start : start + size]
                loss = self.dev_pipeline.loss(
                    [i.question for i in batch], [i.answers[0] for i in batch]
                )
                total += float(loss)
        return total / len(self.dev_items)

    def _export(self) -> None:
        self._eval_mode()
        export_checkpoint(
            self.out / "best",
            self.spec,
            self.components["question_encoder"],
            self.components["generator"],
        )

    def _train_mode(self) -> None:
        for part, model in self.models.items():
            model.train(part in self.trained)

    def _eval_mode(self) -> None:
        for model in self.models.values():
            model.eval()
