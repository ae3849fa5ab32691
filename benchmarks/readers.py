"""Readers on the embedded corpus: rag-token, rag-sequence and fusion by n_docs 1 / 5 / 10, a
closed-book baseline and the embedded default, on all of ``data/wikipedia_qa.jsonl``.

Every cell is ``examples/wikipedia.toml`` (hybrid retrieval: MiniLM + BM25 fused by rrf;
SmolLM2-135M-Instruct reading with a few-shot prompt, ``stop = ["\\n"]``), the reader in
float32, with the overrides its name says; fusion reads the spec's ``fused_prompt`` (the same
few-shot style, all passages in one prompt); the closed-book cell reads no passage (its prompt
has none). Each cell is one ``ragloom.evaluation.evaluate`` run into ``OUT/<cell>/``: answers
are written as they come (``questions.jsonl``), a finished cell has ``summary.json`` and is
skipped when the command runs again, so an interrupted grid resumes at the cell it was in. At
the end (or with ``--report``) one table: EM, F1, recall@1/5 and p50/p90 latency per question
(retrieval and generation; at ``--batch-size 1``, the default, one question at a time).

    python benchmarks/readers.py [--out runs/bench-readers] [--limit N] [--cells a,b]
        [--batch-size N] [--report]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from ragloom import Pipeline
from ragloom.commands.common import table_lines
from ragloom.evaluation import evaluate, read_qa

SPEC = "examples/wikipedia.toml"
DATA = "data/wikipedia_qa.jsonl"
CLOSED_BOOK_PROMPT = (
    "Answer each question with a short phrase.\n\n"
    "Question: Who painted the Mona Lisa?\nAnswer: Leonardo da Vinci\n\n"
    "Question: In what year did the war in Europe end?\nAnswer: 1945\n\n"
    "Question: What is the capital of Kenya?\nAnswer: Nairobi\n\n"
    "Question: What was the first antibiotic?\nAnswer: Penicillin\n\n"
    "Question: {question}"
)


FLOAT32 = {"generator.dtype": "float32"}
"""Every cell reads in float32 (the default's ``"auto"`` is bfloat16 on CPUs that have it),
so that the cells compare readers, not precisions on one machine and another."""


def cells() -> dict[str, dict[str, Any]]:
    """The grid: each cell's overrides of the embedded default."""
    grid: dict[str, dict[str, Any]] = {"default": FLOAT32}
    for reader in ("rag-token", "rag-sequence", "fusion"):
        for n_docs in (1, 5, 10):
            grid[f"{reader}-n{n_docs}"] = {
                **FLOAT32,
                "marginalizer.type": reader,
                "pipeline.n_docs": n_docs,
            }
    grid["closed-book"] = {
        **FLOAT32,
        "marginalizer.type": "rag-token",
        "pipeline.n_docs": 1,
        "generator.prompt": CLOSED_BOOK_PROMPT,
    }
    return grid


def run_cell(
    name: str, overrides: dict[str, Any], out: Path, limit: int | None, batch_size: int
) -> None:
    items = read_qa(Path(DATA))[:limit]
    pipeline = Pipeline.from_spec(SPEC, overrides)
    started = time.perf_counter()
    evaluate(pipeline, items, out / name, ks=(1, 5), batch_size=batch_size)
    print(f"{name}: {len(items)} questions in {time.perf_counter() - started:.0f} s", flush=True)


def report(out: Path, names: list[str]) -> None:
    rows = []
    for name in names:
        summary_path = out / name / "summary.json"
        if not summary_path.exists():
            rows.append([name, "not run", "", "", "", "", ""])
            continue
        summary = json.loads(summary_path.read_text())
        rows.append(
            [
                name,
                f"{summary['exact_match']:.3f}",
                f"{summary['f1']:.3f}",
                f"{summary['recall']['1']:.3f}",
                f"{summary['recall']['5']:.3f}",
                f"{summary['latency_p50']:.2f}",
                f"{summary['latency_p90']:.2f}",
            ]
        )
    header = ["cell", "EM", "F1", "R@1", "R@5", "p50 s", "p90 s"]
    print("\n".join(table_lines([header, *rows])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-readers"))
    parser.add_argument("--limit", type=int, help="first N questions only (a quick look)")
    parser.add_argument("--cells", help="comma-separated cell names (default: all)")
    parser.add_argument("--batch-size", type=int, default=1, help="questions per generate call")
    parser.add_argument("--report", action="store_true", help="print the table only")
    args = parser.parse_args()
    grid = cells()
    names = args.cells.split(",") if args.cells else list(grid)
    unknown = [name for name in names if name not in grid]
    if unknown:
        parser.error(f"unknown cells {unknown}; the cells are {', '.join(grid)}")
    if not args.report:
        for name in names:
            if (args.out / name / "summary.json").exists():
                print(f"{name}: done before, skipped (delete {args.out / name} to rerun)")
                continue
            run_cell(name, grid[name], args.out, args.limit, args.batch_size)
    report(args.out, names)


if __name__ == "__main__":
    main()
