"""``ragloom eval SPEC --data QA.jsonl``: exact match, F1, recall@k and latency, and
``--sweep key=v1,v2`` to compare variants of one spec side by side."""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path
from typing import Any

from ..artifacts import check_outside
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
    out = Path(args.out or f"runs/eval-{time.strftime('%Y%m%d-%H%M%S')}")
    check_outside(out, {"spec": Path(args.spec), "data file": Path(args.data)})
    base = Pipeline.from_spec(spec_from_args(args.spec, args.set))
    rows: list[list[Any]] = [["VARIANT", "EM", "F1", *[f"R@{k}" for k in ks], "p50 s", "p90 s"]]
    for variant in variants(args.sweep):
        name = ",".join(f"{k}={v}" for k, v in variant.items()) or "spec"
        pipeline = Pipeline.from_spec(base.spec, variant) if variant else base
        for table in SHARED_TABLES:  # keep loaded models where the variant leaves them alone
            if table in base.spec.components and (
                pipeline.spec.components.get(table) == base.spec.components[table]
            ):
                pipeline.share(base, table)
        print(f"variant {name}: {len(items)} questions")
        summary = evaluate(
            pipeline, items, out / name.replace("/", "_"), ks, not args.retrieval_only
        )
        rows.append(summary_row(name, summary))
    print("\n".join(table_lines(rows)))
    print(f"results: {out}")
    return 0


def add_to(commands: Any) -> None:
    evaluation = commands.add_parser("eval", help="EM, F1, recall@k and latency on a QA file")
    evaluation.add_argument("spec", help="path to a TOML spec")
    evaluation.add_argument("--data", required=True, help="JSONL: question, answers[, title]")
    evaluation.add_argument("--out", help="run directory (default runs/eval-<time>)")
    add_write_options(evaluation)
    evaluation.add_argument("-k", default="1,5,10", help="recall cut-offs (default 1,5,10)")
    evaluation.add_argument("--limit", type=int, help="first N questions only")
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
