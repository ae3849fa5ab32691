"""Dense, BM25, hybrid (rrf and linear) and hybrid + ``lm-likelihood`` on the embedded corpus.

On ``data/wikipedia_qa.jsonl`` (132 questions) over ``asset:wikipedia`` (4,857 passages), through
the CLI, so the sweeps are what a user runs:

1. ``ragloom eval examples/wikipedia_fewshot.toml --retrieval-only --sweep
   retriever.type=dense,bm25``
   (the bm25 variant drops the dense retriever's ``[retriever.index]``, with a warning);
2. ``ragloom eval examples/wikipedia.toml --retrieval-only --sweep
   retriever.fusion=rrf,linear``;
3. ``ragloom eval examples/wikipedia_rerank.toml --retrieval-only --limit N --sweep
   reranker.candidates=...`` (SmolLM2 scores every candidate: seconds per question on 2 cores);
4. with ``--generate``: EM and F1 of the given configurations on the first N questions.

Then, in this process, the latency of each stage for one question at a time on the first
``--stage-questions`` questions: encoding the question (MiniLM), the dense member (HNSW), the
bm25 member, the fusion (the hybrid's call less its members'), and the reranker. Recall@k: an
answer string in the top k passages. Nothing is tuned here: every parameter is the example specs'.

    python benchmarks/retrieval.py [--limit 40] [--candidates 20] [--stage-questions 10]
        [--generate SPEC[:SWEEP] ...] [--out runs/bench-retrieval]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ragloom.commands.common import table_lines

DATA = "data/wikipedia_qa.jsonl"
KS = (1, 5, 10)


def ragloom(args: list[str]) -> None:
    command = ["ragloom", *args]
    print("$ " + shlex.join(command), flush=True)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "ragloom.cli", *args], check=True, stdout=sys.stdout, stderr=None
    )
    print(f"({time.perf_counter() - started:.0f} s)", flush=True)


def rows_of(directory: Path) -> list[dict[str, Any]]:
    with (directory / "questions.jsonl").open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


def recall(rows: list[dict[str, Any]], k: int) -> float:
    return sum(row[f"recall@{k}"] for row in rows) / len(rows)


def stage_latency(limit: int) -> list[list[str]]:
    """Milliseconds per question (median, p90) of each stage of the reranked hybrid."""
    import torch

    from ragloom import Pipeline
    from ragloom.evaluation import read_qa
    from ragloom.protocols import Questions

    pipeline = Pipeline.from_spec("examples/wikipedia_rerank.toml")
    hybrid: Any = pipeline.retriever
    questions = [item.question for item in read_qa(Path(DATA))[:limit]]
    depth = hybrid.params.depth
    candidates = pipeline.reranker.params.candidates
    times: dict[str, list[float]] = {
        "encode question (MiniLM)": [],
        f"dense member (HNSW, top {depth})": [],
        f"bm25 member (top {depth})": [],
        f"hybrid rrf: fusion (top {candidates})": [],
        f"lm-likelihood: {candidates} candidates": [],
    }
    labels = list(times)
    with torch.inference_mode():
        pipeline.retrieve(questions[:2], 10)  # warm up every stage
        for question in questions:
            started = time.perf_counter()
            vectors = pipeline.encoder.encode_queries([question])
            times[labels[0]].append(time.perf_counter() - started)
            asked = Questions([question], lambda _texts, v=vectors: v)
            member_seconds = 0.0
            for label, name in ((labels[1], "dense"), (labels[2], "bm25")):
                started = time.perf_counter()
                hybrid.members[name].retrieve(asked, depth)
                times[label].append(time.perf_counter() - started)
                member_seconds += times[label][-1]
            started = time.perf_counter()
            found = hybrid.retrieve(asked, candidates)
            times[labels[3]].append(time.perf_counter() - started - member_seconds)
            started = time.perf_counter()
            pipeline.reranker.rerank([question], found, 10)
            times[labels[4]].append(time.perf_counter() - started)
    lines = [["stage", "p50 ms", "p90 ms"]]
    for label, values in times.items():
        ordered = sorted(values)
        lines.append(
            [
                label,
                f"{statistics.median(ordered) * 1000:.1f}",
                f"{ordered[int(0.9 * (len(ordered) - 1))] * 1000:.1f}",
            ]
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--limit", type=int, default=40, help="questions for the reranker")
    parser.add_argument("--candidates", default="20", help="reranker.candidates to sweep")
    parser.add_argument("--stage-questions", type=int, default=10, help="for the stage latency")
    parser.add_argument("--out", default="runs/bench-retrieval")
    parser.add_argument(
        "--generate",
        action="append",
        default=[],
        metavar="SPEC[:SWEEP]",
        help="also EM/F1 on the first --limit questions (repeatable), e.g. "
        "examples/wikipedia.toml:retriever.fusion=rrf",
    )
    parser.add_argument("--skip-eval", action="store_true", help="reuse --out's earlier runs")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    out = Path(args.out)
    runs = [
        (
            out / "members",
            "examples/wikipedia_fewshot.toml",
            ["--sweep", "retriever.type=dense,bm25"],
        ),
        (
            out / "hybrid",
            "examples/wikipedia.toml",
            ["--sweep", "retriever.fusion=rrf,linear"],
        ),
        (
            out / "rerank",
            "examples/wikipedia_rerank.toml",
            ["--limit", str(args.limit), "--sweep", f"reranker.candidates={args.candidates}"],
        ),
    ]
    if not args.skip_eval:
        for directory, spec, extra in runs:
            ragloom(
                ["eval", spec, "--data", DATA, "--retrieval-only", "--out", str(directory), *extra]
            )
    variants = {
        "dense (MiniLM, HNSW)": out / "members" / "retriever.type=dense",
        "bm25 (lucene, k1 1.5, b 0.75)": out / "members" / "retriever.type=bm25",
        "hybrid rrf (k 60, depth 50)": out / "hybrid" / "retriever.fusion=rrf",
        "hybrid linear (min-max, weights 1)": out / "hybrid" / "retriever.fusion=linear",
        **{
            f"hybrid rrf + lm-likelihood ({c} candidates)": out
            / "rerank"
            / f"reranker.candidates={c}"
            for c in args.candidates.split(",")
        },
    }
    table = [
        [
            "retrieval",
            "questions",
            *[f"R@{k}" for k in KS],
            *[f"R@{k} (first {args.limit})" for k in KS],
            "p50 ms",
            "p90 ms",
        ]
    ]
    for name, directory in variants.items():
        rows = rows_of(directory)
        first = rows[: args.limit]
        latencies = sorted(row["latency"] for row in rows)
        table.append(
            [
                name,
                str(len(rows)),
                *[f"{recall(rows, k):.3f}" if len(rows) > args.limit else "-" for k in KS],
                *[f"{recall(first, k):.3f}" for k in KS],
                f"{statistics.median(latencies) * 1000:.1f}",
                f"{latencies[int(0.9 * (len(latencies) - 1))] * 1000:.1f}",
            ]
        )
    print("\n## Recall (latency: one question at a time, retrieval only)\n")
    print("\n".join(table_lines(table)))
    n = args.stage_questions
    print(f"\n## Latency per stage, hybrid rrf + lm-likelihood, first {n} questions\n")
    print("\n".join(table_lines(stage_latency(n))), flush=True)
    for i, target in enumerate(args.generate):
        spec, _, sweep = target.partition(":")
        extra = ["--sweep", sweep] if sweep else []
        ragloom(
            ["eval", spec, "--data", DATA, "--limit", str(args.limit), "--out",
             str(out / f"generate-{i}"), *extra]
        )  # fmt: skip


if __name__ == "__main__":
    main()
