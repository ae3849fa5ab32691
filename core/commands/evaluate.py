"""``ragloom eval SPEC --data QA.jsonl``: exact match, F1, recall@k and latency, and
``--sweep key=v1,v2`` to compare variants of one spec side by side."""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path
from typing import Any

from .. import atomic, locks
from ..artifacts import absolute, check_outside, claim, json_marker
from ..spec.overrides import CliText
from .common import add_set_option, add_write_options, spec_from_args, table_lines
from .options import at_least_one, cutoffs

SHARED_TABLES = ("encoder", "generator", "marginalizer")


def variants(sweeps: list[str]) -> list[dict[str, Any]]:
    """Every combination of ``key=v1,v2,...`` sweeps (one empty variant without sweeps)."""
    axes = []
    for sweep in sweeps:
        key, _, values = sweep.partition("=")
        if not key or not values:
            from ..errors import SpecError

            raise SpecError("--sweep", [f'"{sweep}" is not a sweep: write KEY.PATH=V1,V2,...'])
        key = key.strip()
        axes.append(
            [(key, CliText(v.strip(), f"--sweep {key}={v.strip()}")) for v in values.split(",")]
        )
    return [dict(combination) for combination in itertools.product(*axes)] if axes else [{}]


def cmd_eval(args: argparse.Namespace) -> int:
    from ..evaluation import evaluate, read_qa, summary_row
    from ..pipeline import Pipeline

    at_least_one("--limit", args.limit)
    ks = cutoffs("-k", args.k)
    items = read_qa(Path(args.data))[: args.limit]
    out = absolute(Path(args.out or f"runs/eval-{time.strftime('%Y%m%d-%H%M%S')}"))
    check_outside(out, {"spec": Path(args.spec), "data file": Path(args.data)})
    base = Pipeline.from_spec(spec_from_args(args.spec, args.set))
    # every variant is validated, and has what it needs, before anything is written
    runs = [(name(variant), _variant(base, variant)) for variant in variants(args.sweep)]
    needed = ("retriever",) if args.retrieval_only else ("retriever", "generator", "marginalizer")
    for _, pipeline in runs:
        pipeline.require(*needed, needed_by="ragloom eval")
    at_least_one("--batch-size", args.batch_size)
    header = ["VARIANT", "EM", "F1", *[f"R@{k}" for k in ks], "p50 s", "p90 s", "q/s"]
    rows: list[list[Any]] = [header]
    claim(out, EVAL_RUN_KIND)
    with locks.exclusive(out):
        claim(out, EVAL_RUN_KIND)
        out.mkdir(parents=True, exist_ok=True)
        atomic.write_text(out / EVAL_RUN_MARKER, json.dumps({"format": "ragloom-eval-run"}) + "\n")
        for label, pipeline in runs:
            print(f"variant {label}: {len(items)} questions")
            directory = out / label.replace("/", "_")
            summary = evaluate(
                pipeline, items, directory, ks, not args.retrieval_only, args.batch_size
            )
            rows.append(summary_row(label, summary))
    print("\n".join(table_lines(rows)))
    print(f"results: {out}")
    return 0


EVAL_RUN_MARKER = "ragloom-eval-run.json"
EVAL_RUN_KIND = json_marker("evaluation run", EVAL_RUN_MARKER, format="ragloom-eval-run")


def name(variant: dict[str, Any]) -> str:
    """A variant's name: its assignments, or "spec" for the spec as it is."""
    return ",".join(f"{key}={value}" for key, value in variant.items()) or "spec"


def _variant(base: Any, variant: dict[str, Any]) -> Any:
    """The pipeline of one variant, sharing the base's loaded models where it leaves them
    alone."""
    from ..pipeline import Pipeline

    if not variant:
        return base
    pipeline = Pipeline.from_spec(base.spec, variant)
    for table in SHARED_TABLES:
        if table in base.spec.components and (
            pipeline.spec.components.get(table) == base.spec.components[table]
        ):
            pipeline.share(base, table)
    return pipeline


def add_to(commands: Any) -> None:
    evaluation = commands.add_parser("eval", help="EM, F1, recall@k and latency on a QA file")
    evaluation.add_argument("spec", help="path to a TOML spec")
    evaluation.add_argument("--data", required=True, help="JSONL: question, answers[, title]")
    evaluation.add_argument("--out", help="run directory (default runs/eval-<time>)")
    add_write_options(evaluation)
    evaluation.add_argument("-k", default="1,5,10", help="recall cut-offs (default 1,5,10)")
    evaluation.add_argument("--limit", type=int, help="first N questions only")
    evaluation.add_argument(
        "--batch-size",
        type=int,
        default=1,
        help="questions per retrieval and generate call (default 1; answers are the same, "
        "latency is the batch's over its questions)",
    )
    evaluation.add_argument(
        "--retrieval-only", action="store_true", help="measure recall@k and latency only"
    )
    evaluation.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="KEY.PATH=V1,V2",
        help="evaluate each value side by side (repeatable: all combinations)",
    )
    add_set_option(evaluation)
    evaluation.set_defaults(handler=cmd_eval)
