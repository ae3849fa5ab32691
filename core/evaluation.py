"""Evaluating a pipeline on a QA file: exact match, F1, retrieval recall@k, latency.

Results are written as they come (one JSON line per question, flushed), so a run that dies keeps
every finished question; the summary, the resolved spec and the index manifests follow at the end.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import atomic, locks
from .artifacts import absolute, claim, json_marker
from .errors import RagloomError
from .kb.documents import DocumentsError, described, json_records, string_field
from .kb.manifest import MANIFEST_FILE
from .metrics import answer_problems, exact_match, f1, has_answer
from .protocols import Answer, KnowledgeBaseRetriever, Passage

if TYPE_CHECKING:
    from .pipeline import Pipeline

logger = logging.getLogger(__name__)


EVAL_MARKER = "ragloom-eval.json"
EVAL_KIND = json_marker("evaluation", EVAL_MARKER, format="ragloom-eval")


class QADataError(RagloomError):
    """A QA file that cannot be read or has a malformed line."""


@dataclass(frozen=True)
class QAItem:
    question: str
    answers: list[str]
    title: str | None = None


def read_qa(path: Path) -> list[QAItem]:
    """Every line of a JSONL QA file, checked before anything runs: ``question`` (a non-empty
    string) and ``answers`` (a non-empty list of strings) are required, ``title`` (a string)
    optional. Lines are read as documents are (:func:`ragloom.kb.documents.json_records`)."""
    try:
        return _qa_items(path)
    except DocumentsError as error:  # a line that is not JSON text
        raise QADataError(str(error)) from None


def _qa_items(path: Path) -> list[QAItem]:
    items = []
    for number, row in json_records(path):
        where = f"{path}:{number}"
        if not isinstance(row, dict):
            raise QADataError(
                f'{where}: expected an object with "question" and "answers", found '
                f"{described(row)}."
            )
        question, answers = string_field(where, row, "question"), row.get("answers")
        if not question.strip():
            raise QADataError(f'{where}: "question" must be a non-empty string.')
        if not (isinstance(answers, list) and answers and all(isinstance(a, str) for a in answers)):
            raise QADataError(
                f'{where}: "answers" must be a non-empty list of strings, '
                f'e.g. ["George Orwell", "Orwell"].'
            )
        title = string_field(where, row, "title") or None
        items.append(QAItem(question.strip(), answers, title))
    if not items:
        raise QADataError(f"{path}: no questions.")
    return items


@dataclass(frozen=True)
class Summary:
    """Means over the questions; ``exact_match`` and ``f1`` are None when nothing was
    generated (``--retrieval-only``)."""

    questions: int
    exact_match: float | None
    f1: float | None
    recall: dict[int, float]
    latency_p50: float
    latency_p90: float
    latency_p99: float
    batch_size: int = 1
    questions_per_second: float = 0.0
    batch_latency_p50: float = 0.0
    batch_latency_p90: float = 0.0


def _percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


def evaluate(
    pipeline: Pipeline,
    items: Sequence[QAItem],
    out: Path,
    ks: Sequence[int] = (1, 5, 10),
    generate: bool = True,
    batch_size: int = 1,
) -> Summary:
    """Answer the questions ``batch_size`` at a time (one retrieval and one ``generate`` call
    per batch; answers are those of one at a time) and write ``out/``:
    ``ragloom-eval.json`` (what ``out`` is), ``questions.jsonl`` (as it goes, one
    :func:`question_record` a line), ``summary.json``, ``spec.toml`` (every path absolute),
    ``index-manifest.json``. Without ``generate``, only retrieval runs and the generator is never
    built (recall; exact match, F1 and scores are None, latency is retrieval's). A question's
    latency is its batch's seconds over the batch's questions (at batch 1, its own seconds).

    ``out`` is locked while it is written and must be new, empty or an earlier evaluation."""
    out = absolute(out)
    with locks.exclusive(out):
        claim(out, EVAL_KIND)
        out.mkdir(parents=True, exist_ok=True)
        marker = {"format": "ragloom-eval", "spec": str(pipeline.spec.source)}
        atomic.write_text(out / EVAL_MARKER, json.dumps(marker) + "\n")
        return _evaluate(pipeline, items, out, ks, generate, batch_size)


def _evaluate(
    pipeline: Pipeline,
    items: Sequence[QAItem],
    out: Path,
    ks: Sequence[int],
    generate: bool,
    batch_size: int,
) -> Summary:
    from tqdm import tqdm

    atomic.write_text(out / "spec.toml", pipeline.to_spec())
    n_docs = pipeline.spec.pipeline.n_docs
    depth = max(n_docs, *ks)  # one retrieval serves both recall@k and the answer
    scores: dict[str, list[float]] = {"em": [], "f1": [], "latency": [], "batch": []}
    hits: dict[int, list[float]] = {k: [] for k in ks}
    warn_unscorable(items, generate)
    _build_components(pipeline, generate)
    with (
        (out / "questions.jsonl").open("w", encoding="utf-8") as log,
        tqdm(total=len(items), unit="question", desc="eval") as progress,
    ):
        for start in range(0, len(items), batch_size):
            batch = items[start : start + batch_size]
            questions = [item.question for item in batch]
            started = time.perf_counter()
            retrieval = pipeline.retrieve(questions, k=depth)
            answers = pipeline.generate_from(questions, retrieval) if generate else None
            seconds = time.perf_counter() - started
            scores["batch"].append(seconds)
            for row_index, item in enumerate(batch):
                answer = answers[row_index] if answers is not None else None
                passages = retrieval.passages[row_index]
                row = question_record(item, answer, passages, ks, seconds, len(batch))
                if answer is not None:
                    scores["em"].append(row["exact_match"])
                    scores["f1"].append(row["f1"])
                scores["latency"].append(seconds / len(batch))
                for k in ks:
                    hits[k].append(row[f"recall@{k}"])
                log.write(json.dumps(row, ensure_ascii=False) + "\n")
            log.flush()
            progress.update(len(batch))
    count = len(items)
    summary = Summary(
        questions=count,
        exact_match=sum(scores["em"]) / count if generate else None,
        f1=sum(scores["f1"]) / count if generate else None,
        recall={k: sum(values) / count for k, values in hits.items()},
        latency_p50=_percentile(scores["latency"], 0.5),
        latency_p90=_percentile(scores["latency"], 0.9),
        latency_p99=_percentile(scores["latency"], 0.99),
        batch_size=batch_size,
        questions_per_second=count / sum(scores["batch"]) if sum(scores["batch"]) else 0.0,
        batch_latency_p50=_percentile(scores["batch"], 0.5),
        batch_latency_p90=_percentile(scores["batch"], 0.9),
    )
    atomic.write_text(out / "summary.json", json.dumps(asdict(summary), indent=2) + "\n")
    _copy_manifests(pipeline, out)
    return summary


def _build_components(pipeline: Pipeline, generate: bool) -> None:
    """Build what answering needs before the first question is timed, so that its latency is
    its own, not the models' loading (without ``generate``, the generator is never built)."""
    tables = ["retriever", "reranker", *(["generator", "marginalizer"] if generate else [])]
    for table in tables:
        if table in pipeline.spec.components:
            pipeline.component(table, needed_by="ragloom eval")


def question_record(
    item: QAItem,
    answer: Answer | None,
    passages: Sequence[Passage],
    ks: Sequence[int],
    batch_seconds: float,
    batch_size: int = 1,
) -> dict[str, Any]:
    """One line of ``questions.jsonl``: the question and its answers; the prediction, its score
    (the log-probability decoding ranked it by, as ``ragloom ask`` prints it), exact match and
    F1 (None without an ``answer``: ``--retrieval-only``); its latency (the seconds of its batch
    of ``batch_size`` questions, over ``batch_size``) and its batch's; recall@k for each
    cut-off; and every retrieved passage, best first (the generator read the first
    ``n_docs``)."""
    found = [has_answer(passage.text, item.answers) for passage in passages]
    return {
        "question": item.question,
        "answers": item.answers,
        "prediction": "" if answer is None else answer.text,
        "score": None if answer is None else round(answer.score, 4),
        "exact_match": None if answer is None else exact_match(answer.text, item.answers),
        "f1": None if answer is None else f1(answer.text, item.answers),
        "latency": round(batch_seconds / batch_size, 4),
        "batch_latency": round(batch_seconds, 4),
        **{f"recall@{k}": float(any(found[:k])) for k in ks},
        "passages": [passage_record(p, has) for p, has in zip(passages, found, strict=True)],
    }


def passage_record(passage: Passage, has: bool) -> dict[str, Any]:
    """A retrieved passage as a question's record lists it: its id (its row in the knowledge
    base), the score it was ranked by, whether it holds an answer (what recall counts), its
    title and its whole text."""
    return {
        "id": passage.id,
        "score": round(passage.score, 4),
        "has_answer": has,
        "title": passage.title,
        "text": passage.text,
    }


def warn_unscorable(items: Sequence[QAItem], generated: bool) -> None:
    """Warn about each answer that a metric can never score as meant, naming the question's
    number (its position in the file) and the answer."""
    for number, item in enumerate(items, 1):
        for answer in item.answers:
            for problem in answer_problems(answer, generated):
                _warn_once(number, item.question, answer, problem)


@cache
def _warn_once(number: int, question: str, answer: str, problem: str) -> None:
    """One warning per answer and problem in a process, however many evaluations (a sweep's
    variants, training's dev evaluations) read the question."""
    logger.warning(
        "question %d (%r): the answer %r %s. Fix the answer in the QA file.",
        number,
        question,
        answer,
        problem,
    )


def _copy_manifests(pipeline: Pipeline, out: Path) -> None:
    """Record what was searched: the manifests of a :class:`KnowledgeBaseRetriever`'s
    knowledge base and index beside the results."""
    retriever = pipeline.retriever
    if not isinstance(retriever, KnowledgeBaseRetriever):
        return
    shutil.copy(retriever.kb.directory / MANIFEST_FILE, out / "kb-manifest.json")
    if retriever.index_directory is not None:
        shutil.copy(retriever.index_directory / MANIFEST_FILE, out / "index-manifest.json")


def summary_row(name: str, summary: Summary) -> list[Any]:
    """One line of the comparison table."""
    recall = [f"{summary.recall[k]:.3f}" for k in sorted(summary.recall)]

    def share(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    return [
        name,
        share(summary.exact_match),
        share(summary.f1),
        *recall,
        f"{summary.latency_p50:.2f}",
        f"{summary.latency_p90:.2f}",
        f"{summary.questions_per_second:.2f}",
    ]
